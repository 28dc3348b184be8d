"""The build server as a user meets it, with the real ``buildpacks`` program: a command run
by a warm server's worker does what the same command run in its own process does (the same
image, output, exit status, working directory and environment), Ctrl-C and a kill reach the
build, and a server whose modules changed on disk gives way to a new one.

Each test has a server of its own: ``XDG_RUNTIME_DIR`` names where servers' sockets are."""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from buildpacks import client, server
from tests import testbed
from tests.test_blobs import build_env, built_digest, plain_app

pytestmark = pytest.mark.e2e


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Path]:
    directory = tmp_path / "run"
    directory.mkdir(mode=0o700)
    yield directory
    testbed.stop_build_servers(directory / "python-buildpacks")


def served(env: dict[str, str]) -> str:
    """What ``buildpacks server status`` says of the server for ``env``."""
    return testbed.cli("server", "status", env=env).stdout


def start(env: dict[str, str]) -> str:
    """A server for ``env``, up: the first command starts it; its pid."""
    testbed.cli("--version", env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = re.search(r"pid (\d+)", served(env))
        if found:
            return found[1]
        time.sleep(0.1)
    raise AssertionError(f"no server started: {served(env)}")


def commands(env: dict[str, str]) -> int:
    return int(re.search(r"(\d+) command", served(env))[1])  # type: ignore[index]


def test_a_build_in_the_server_is_the_build_run_on_its_own(base_image, tmp_path, runtime):
    env = build_env(tmp_path / "cache", base_image, XDG_RUNTIME_DIR=str(runtime))
    alone = plain_app(tmp_path / "alone" / "plain-app")
    result = _build(alone, {**env, client.SWITCH: "0"})
    expected = built_digest(result)
    assert "no build server" in served(env)  # BP_SERVER=0 started none
    start(env)
    project = plain_app(tmp_path / "served" / "plain-app")
    result = _build(project, env)
    assert built_digest(result) == expected
    assert commands(env) == 1
    archives = [p / "dist/plain-app-latest.tar" for p in (alone, project)]
    assert archives[0].read_bytes() == archives[1].read_bytes()
    # The worker wrote with the client's umask.
    assert [stat.S_IMODE(a.stat().st_mode) for a in archives] == [0o640, 0o640]
    # A no-op's lines, and an edit's rebuild, through the server as on its own.
    again = testbed.cli("build", str(project), env=env)
    assert "is up to date" in again.stdout and commands(env) == 2, again.stdout


def _build(project: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(testbed.BIN / "buildpacks"), "build", str(project)],
        env=env, capture_output=True, text=True, umask=0o027,
    )  # fmt: skip


def test_a_worker_has_the_import_path_of_its_client(hatch_env, tmp_path, runtime):
    """The up-to-date check keys on the code that builds, the import path among it: an edit
    built in the server after a build on its own patches the last wheel, as on its own."""
    env = {**hatch_env, "XDG_RUNTIME_DIR": str(runtime)}
    project = testbed.copy_example(tmp_path / "example")
    first = testbed.cli("build", str(project), env={**env, client.SWITCH: "0"})
    assert first.returncode == 0, first.stdout + first.stderr
    start(env)
    source = project / "src/example_service/server.py"
    source.write_text(source.read_text() + "# edited\n")
    edited = testbed.cli("build", str(project), env=env)
    assert "Building the wheel from the last one" in edited.stdout, edited.stdout
    assert commands(env) == 1


def test_each_command_gets_its_own_directory_environment_and_status(base_image, tmp_path, runtime):
    env = build_env(tmp_path / "cache", base_image, XDG_RUNTIME_DIR=str(runtime))
    start(env)
    project = plain_app(tmp_path / "plain-app")

    def config(**extra: str) -> str:
        result = subprocess.run(
            [str(testbed.BIN / "buildpacks"), "config"],  # PATH defaults to ".": the cwd
            cwd=project, env={**env, **extra}, capture_output=True, text=True, check=True,
        )  # fmt: skip
        return result.stdout

    assert re.search(r"tags\s.*registry.example/one:1", config(BP_TAGS="registry.example/one:1"))
    second = config()  # the first command's BP_TAGS is not this one's
    assert "registry.example/one" not in second and "plain-app" in second, second
    # The same exit status and one error line as on its own, for a usage mistake and a
    # bad project; --version's output.
    for argv in (["build", "--no-such-flag"], ["build", str(tmp_path / "missing")]):
        there = testbed.cli(*argv, env=env)
        here = testbed.cli(*argv, env={**env, client.SWITCH: "0"})
        assert (there.returncode, there.stdout, there.stderr) == (
            here.returncode, here.stdout, here.stderr,
        )  # fmt: skip
        assert there.returncode != 0 and there.stderr.startswith("error:"), there.stderr
    assert testbed.cli("--version", env=env).stdout.startswith("buildpacks ")
    assert commands(env) == 5  # two configs, two failures, --version


def _big_app(tmp_path: Path) -> Path:
    project = plain_app(tmp_path / "plain-app")
    data = project / "data"
    data.mkdir()
    for i in range(8):
        (data / f"blob{i}.bin").write_bytes(os.urandom(4 << 20))
    return project


def _start_build(project: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(testbed.BIN / "buildpacks"), "build", str(project)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,  # its own process group, as a terminal's Ctrl-C hits
    )  # fmt: skip


def _wait_for(proc: subprocess.Popen[str], marker: str) -> list[str]:
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if marker in line:
            return seen
    raise AssertionError(f"{marker!r} never printed: {''.join(seen)}")


def _processes_in(directory: Path) -> list[int]:
    """The processes whose working directory is ``directory``."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and Path(os.readlink(entry / "cwd")) == directory:
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def test_ctrl_c_and_a_kill_reach_the_build_in_the_server(base_image, tmp_path, runtime):
    project = _big_app(tmp_path / "a")
    env = build_env(tmp_path / "cache-a", base_image, XDG_RUNTIME_DIR=str(runtime))
    start(env)
    proc = _start_build(project, env)
    seen = _wait_for(proc, "===> BUILDING")
    os.killpg(proc.pid, signal.SIGINT)
    rest, _ = proc.communicate(timeout=60)
    out = "".join(seen) + rest
    assert proc.returncode == 130, out
    assert [line for line in out.splitlines() if line.startswith("error:")] == [
        "error: interrupted"
    ], out
    assert "Traceback" not in out
    assert commands(env) == 1
    # SIGTERM ends the worker, and the client dies of it, as a build run on its own would.
    terminated = _big_app(tmp_path / "c")
    env = build_env(tmp_path / "cache-c", base_image, XDG_RUNTIME_DIR=str(runtime))
    proc = _start_build(terminated, env)
    _wait_for(proc, "===> BUILDING")
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGTERM
    assert _processes_in(terminated) == []
    # A kill of the client kills its worker, as it would have killed the build itself.
    killed = _big_app(tmp_path / "b")
    env = build_env(tmp_path / "cache-b", base_image, XDG_RUNTIME_DIR=str(runtime))
    proc = _start_build(killed, {**env, "PWD": str(killed)})
    workers = []
    for line in proc.stdout:  # type: ignore[union-attr]
        workers = [pid for pid in _processes_in(Path("/")) if _cmdline_has(pid, str(killed))]
        if "===> BUILDING" in line:
            break
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(pid) for pid in workers):
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in workers)


def _cmdline_has(pid: int, text: str) -> bool:
    try:
        return text in Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
    except OSError:
        return False


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_package_installed_on_the_import_path_replaces_the_server(tmp_path, runtime):
    extra = tmp_path / "site"
    extra.mkdir()
    env = testbed.clean_env(XDG_RUNTIME_DIR=str(runtime), PYTHONPATH=str(extra))
    first = start(env)
    (extra / "newly_installed.py").write_text("")
    # The stale server says so and stops; the command runs on its own, and starts another.
    result = testbed.cli("--version", env=env)
    assert result.returncode == 0 and result.stdout.startswith("buildpacks "), result
    assert start(env) != first


def test_hatch_builds_run_in_the_build_server_of_hatch_s_environment(hatch_env, tmp_path, runtime):
    env = {**hatch_env, "XDG_RUNTIME_DIR": str(runtime)}
    sockets = runtime / "python-buildpacks"
    served, alone = (testbed.copy_example(tmp_path / name) for name in ("served", "alone"))
    first = testbed.hatch_build(served, env)  # starts the server of Hatch's build environment
    assert first.returncode == 0, first.stdout + first.stderr
    deadline = time.monotonic() + 60
    while not testbed.ask_build_servers(sockets, b"status") and time.monotonic() < deadline:
        time.sleep(0.1)
    for project in (served, alone):
        source = project / "src/example_service/server.py"
        source.write_text(source.read_text() + "# edited\n")
    there = testbed.hatch_build(served, env)
    here = testbed.hatch_build(alone, {**env, client.SWITCH: "0"})
    assert there.returncode == here.returncode == 0, there.stdout + there.stderr
    [status] = testbed.ask_build_servers(sockets, b"status")
    assert "1 command(s)" in status  # the edit's build, not the one made alone
    archive = "dist/example-service-0.1.0.tar"
    assert (served / archive).read_bytes() == (alone / archive).read_bytes()
    assert there.stdout.splitlines()[-2:] == here.stdout.splitlines()[-2:], there.stdout
    # A failure: the same one error line and exit status, whichever process built.
    for project in (served, alone):
        pyproject = project / "pyproject.toml"
        text = pyproject.read_text().replace("[tool.buildpacks]", "[tool.buildpacks]\nx = 1", 1)
        pyproject.write_text(text)
    there = testbed.hatch_build(served, env)
    here = testbed.hatch_build(alone, {**env, client.SWITCH: "0"})
    assert there.returncode == here.returncode != 0
    errors = [
        [line for line in (r.stdout + r.stderr).splitlines() if line.startswith("error:")]
        for r in (there, here)
    ]
    assert errors[0] == errors[1] and len(errors[0]) == 1, there.stdout + there.stderr
    assert "2 command(s)" in testbed.ask_build_servers(sockets, b"status")[0]


def test_a_request_reads_back_as_it_was_sent():
    argv = ["build", "--env", "A=B=C", "ünïcode", ""]
    env = {"PLAIN": "x", "WITH_EQUALS": "a=b", "RAW": "\udcff\udcfe"}
    saved = os.environ.copy()
    os.environ.clear()
    os.environ.update(env)
    try:
        message = client.request("hatch", "the key", argv)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    request = server.Request.parse(message)
    assert (request.kind, request.key, request.argv, request.env) == ("hatch", "the key", argv, env)
    assert request.path0 == sys.path[0]
    umask = os.umask(0)
    os.umask(umask)
    assert request.umask == umask


def test_a_snapshot_differs_when_a_file_changes_or_goes(tmp_path):
    module = tmp_path / "mod.py"
    module.write_text("x = 1\n")
    paths = [str(module), str(tmp_path), str(tmp_path / "never-there")]
    before = server.snapshot(paths)
    assert server.snapshot(paths) == before
    module.write_text("x = 22\n")
    assert server.snapshot(paths) != before
    changed = server.snapshot(paths)
    module.unlink()
    assert server.snapshot(paths) != changed
