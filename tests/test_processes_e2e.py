"""How the built image runs, in podman: processes the CNB way (entry point, PATH, the config
layer's metadata.toml, arguments, PID 1, SIGTERM), as the non-root user writing where apps
write (Flask's own tutorial app), on a base without a shell, and bad process input.

Shell processes (``$PORT``, ``&&``) and the programs the tests look around with (``echo``,
``cat``, ``ls``, ``id``) need a shell and coreutils in the run image: those images are built on
the debootstrap base. The default base, assembled from Debian packages, has no shell."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from buildpacks.toml import tomllib
from tests import testbed

pytestmark = pytest.mark.e2e

ARCHIVE = "dist/example-service-0.1.0.tar"
# Flask's sdist ships its tutorial app (examples/tutorial: flaskr, a flit project).
FLASK_SDIST = "flask-3.1.3.tar.gz"
FLASK_SHA256 = "0ef0e52b8a9cd932855379197dd8f94047b359ca0a78695144304cb45f87c9eb"
APP_VAR = "/layers/python-buildpacks_application/app/var"  # Flask's <prefix>/var
CACHE = Path.home() / ".cache" / "python-buildpacks-testbed"
PROCFILE = """\
web: flask --app example_service.server run --host 127.0.0.1 --port $PORT
echo: echo hello
pid: cat /proc/self/stat
both: echo first && echo second "$@" && sleep 100
"""


def launch_layer_files(archive: Path, role: str) -> dict[str, tarfile.TarInfo | bytes]:
    """The entries of the image's ``config`` or ``process-types`` layer, as the lifecycle
    label names them."""
    _, manifest, config = testbed.read_archive_manifest(archive)
    meta = json.loads(config["config"]["Labels"]["io.buildpacks.lifecycle.metadata"])
    index = config["rootfs"]["diff_ids"].index(meta[role]["sha"])
    digest = manifest["layers"][index]["digest"]
    files: dict[str, tarfile.TarInfo | bytes] = {}
    with tarfile.open(archive) as outer:
        blob = outer.extractfile("blobs/" + digest.replace(":", "/"))
        with tarfile.open(fileobj=blob, mode="r:gz") as layer:
            for info in layer:
                files[info.name] = layer.extractfile(info).read() if info.isfile() else info
    return files


def stop_seconds(podman, name: str) -> float:
    start = time.monotonic()
    podman("stop", name)
    return time.monotonic() - start


@pytest.fixture(scope="module")
def shell_env(hatch_env, debootstrap_base) -> dict[str, str]:
    """Builds on the debootstrap base, which has a shell and coreutils."""
    return {**hatch_env, "BP_BASE_IMAGE": debootstrap_base}


@pytest.fixture(scope="module")
def procfile_image(session_dir, shell_env, podman):
    project = testbed.copy_example(session_dir / "processes")
    (project / "Procfile").write_text(PROCFILE)
    result = testbed.hatch_build(project, shell_env)
    assert result.returncode == 0, result.stdout + result.stderr
    podman("load", "-i", str(project / ARCHIVE))
    return project / ARCHIVE


def test_image_config_and_metadata_are_the_cnb_ones(procfile_image):
    _, _, config = testbed.read_archive_manifest(procfile_image)
    container = config["config"]
    assert container["Entrypoint"] == ["/cnb/process/web"]
    assert container["User"] == "1000:1000" and container["WorkingDir"] == "/workspace"
    env = dict(e.split("=", 1) for e in container["Env"])
    assert env["PATH"].split(":")[0] == "/cnb/process"
    assert (env["CNB_LAYERS_DIR"], env["CNB_APP_DIR"], env["CNB_PLATFORM_API"]) == (
        "/layers",
        "/workspace",
        "0.13",
    )
    assert env["HOME"] == "/home/cnb"
    build = json.loads(container["Labels"]["io.buildpacks.build.metadata"])
    assert build["buildpack-default-process-type"] == "web"
    processes = {p["type"]: p for p in build["processes"]}
    assert sorted(processes) == ["both", "echo", "example-service", "pid", "web"]
    assert all(p["direct"] and p["args"] == [] for p in processes.values())
    assert not any(p.get("default") for p in processes.values())  # named, not marked
    assert processes["echo"]["command"] == ["echo", "hello"]  # no shell syntax: no shell
    assert processes["web"]["command"] == [
        "/bin/sh",
        "-c",
        'exec flask --app example_service.server run --host 127.0.0.1 --port $PORT "$@"',
        "web",
    ]
    files = launch_layer_files(procfile_image, "config")
    metadata = tomllib.loads(files["layers/config/metadata.toml"].decode())
    assert metadata["buildpack-default-process-type"] == "web"
    without_api = [{k: v for k, v in b.items() if k != "api"} for b in metadata["buildpacks"]]
    assert without_api == build["buildpacks"]
    assert all(b["api"] == "0.10" for b in metadata["buildpacks"])
    assert [
        {**{k.replace("buildpack-id", "buildpackID"): v for k, v in p.items()}}
        for p in metadata["processes"]
    ] == build["processes"]
    home = files["home/cnb"]
    assert isinstance(home, tarfile.TarInfo) and (home.uid, home.gid) == (1000, 1000)
    entries = launch_layer_files(procfile_image, "process-types")
    assert {name for name in entries if name.startswith("cnb/process/")} == {
        f"cnb/process/{t}" for t in processes
    }


def test_processes_get_the_arguments_and_run_as_pid_1(procfile_image, podman):
    image = "example-service:0.1.0"
    # `echo` runs the program echo, not /cnb/process/echo again: PATH has no /cnb/process.
    assert podman.run(image, "a", "b c", entrypoint="echo") == "hello a b c\n"
    assert podman.run(image, entrypoint="pid").split()[0] == "1"  # cat was exec'd
    # reaches `flask run` through sh
    help_text = podman.attempt(image, "--help", env={"PORT": "8000"}).stdout
    assert "Usage: flask run [OPTIONS]" in help_text


def test_web_and_command_lists_stop_on_sigterm_at_once(procfile_image, podman):
    image = "example-service:0.1.0"
    port = testbed.free_port()
    podman("rm", "-f", "web-stop", "both-stop", check=False)
    podman.serve(image, port, "web-stop")
    try:
        status, body = testbed.wait_for_http(f"http://127.0.0.1:{port}/")
        assert status == 200 and json.loads(body)["name"] == "example-service"
        top = podman("exec", "web-stop", "cat", "/proc/1/cmdline").stdout.split("\0")
        assert "flask" in top[1]  # the app is PID 1: no shell, no launcher left
        web_seconds = stop_seconds(podman, "web-stop")
        # The venv's Python took SIGTERM's default action: 128 + 15, not podman's SIGKILL.
        exit_code = podman("inspect", "--format", "{{.State.ExitCode}}", "web-stop").stdout
        assert exit_code.strip() == "143"
        flags = ("--name", "both-stop", *testbed.RUN_FLAGS, "--entrypoint", "both")
        podman("run", "-d", *flags, image)
        deadline = time.monotonic() + 20
        while "second" not in podman("logs", "both-stop").stdout:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        both_seconds = stop_seconds(podman, "both-stop")
    finally:
        podman("rm", "-f", "-t", "0", "web-stop", "both-stop", check=False)
    print(f"podman stop: web {web_seconds:.2f} s, command list {both_seconds:.2f} s")
    # podman's kill timeout is 10 s; well under it means SIGTERM ended the process.
    assert web_seconds < 3 and both_seconds < 3


def flaskr_project(directory: Path) -> Path:
    """Flask's tutorial app from Flask's own sdist (downloaded once, checked by sha256)."""
    sdist = CACHE / FLASK_SDIST
    if not sdist.exists() or hashlib.sha256(sdist.read_bytes()).hexdigest() != FLASK_SHA256:
        download = directory / "download"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--no-deps",
                "--no-binary",
                ":all:",
                "flask==3.1.3",
                "-d",
                str(download),
            ],
            check=True,
        )
        assert hashlib.sha256((download / FLASK_SDIST).read_bytes()).hexdigest() == FLASK_SHA256
        CACHE.mkdir(parents=True, exist_ok=True)
        shutil.move(download / FLASK_SDIST, sdist)
    with tarfile.open(sdist) as tar:
        tar.extractall(directory / "sdist", filter="data")
    project = directory / "sdist" / "flask-3.1.3" / "examples" / "tutorial"
    (project / "Procfile").write_text("web: flask --app flaskr run --host 127.0.0.1 --port $PORT\n")
    return project


def test_flask_tutorial_app_runs_as_uid_1000(session_dir, shell_env, podman):
    project = flaskr_project(session_dir / "flaskr")
    built = testbed.cli("build", str(project), env={**shell_env, "BP_PYTHON_VERSION": "3.11"})
    assert built.returncode == 0, built.stdout + built.stderr
    podman("load", "-i", str(project / "dist" / "flaskr-1.0.0.tar"))
    port = testbed.free_port()
    podman("rm", "-f", "flaskr", check=False)
    podman.serve("flaskr:1.0.0", port, "flaskr")
    try:
        assert testbed.wait_for_http(f"http://127.0.0.1:{port}/hello") == (200, b"Hello, World!")
        assert podman("exec", "flaskr", "id", "-u").stdout.strip() == "1000"
        init = podman("exec", "flaskr", "flask", "--app", "flaskr", "init-db")
        assert init.stdout.strip() == "Initialized the database."
        status, body = testbed.wait_for_http(f"http://127.0.0.1:{port}/")
        assert status == 200 and b"Posts" in body  # the blog index reads the new database
        instance = podman("exec", "flaskr", "ls", "-n", f"{APP_VAR}/flaskr-instance")
        assert re.search(r" 1000 +1000 .* flaskr\.sqlite$", instance.stdout, re.M), instance.stdout
        home = podman("exec", "flaskr", "sh", "-c", "touch $HOME/x /workspace/y && echo ok")
        assert home.stdout == "ok\n"
    finally:
        podman("rm", "-f", "-t", "0", "flaskr", check=False)


def test_images_on_a_base_without_a_shell_start(session_dir, hatch_env, podman):
    # The default base, assembled from Debian packages, has no shell, like distroless.
    base = testbed.DEBIAN_BASE
    project = testbed.copy_example(session_dir / "noshell-app")
    port = testbed.free_port()
    (project / "Procfile").write_text(
        f"web: waitress-serve --listen=127.0.0.1:{port} example_service.server:app\n"
        "greet: echo $GREETING\n"
    )
    result = testbed.hatch_build(project, hatch_env, {"BP_BASE_IMAGE": base})
    assert result.returncode == 0, result.stdout + result.stderr
    podman("load", "-i", str(project / ARCHIVE))
    image = "example-service:0.1.0"
    no_shell = podman.attempt(image, "-c", "true", entrypoint="/bin/sh")
    assert no_shell.returncode != 0
    podman("rm", "-f", "noshell", check=False)
    podman("run", "-d", "--name", "noshell", *testbed.RUN_FLAGS, image)
    try:
        status, body = testbed.wait_for_http(f"http://127.0.0.1:{port}/")
        assert status == 200 and json.loads(body)["name"] == "example-service"
        assert stop_seconds(podman, "noshell") < 3
    finally:
        podman("rm", "-f", "-t", "0", "noshell", check=False)
    script = podman.attempt(image, entrypoint="example-service", env={"PORT": "x"})
    assert "invalid literal for int()" in script.stderr  # the console script ran
    shell = podman.attempt(image, entrypoint="greet")
    assert shell.returncode == 1
    assert shell.stderr.strip() == (
        "error: process greet: cannot run /bin/sh: No such file or directory"
    )


BAD = {
    "process type that is a path": (
        "pyproject.toml",
        '[tool.buildpacks]\nprocesses = { "../../../tmp/x" = "echo" }\n',
        r"process type '../../../tmp/x' is not valid",
    ),
    "empty process command": (
        "pyproject.toml",
        '[tool.buildpacks]\nprocesses = { web = "" }\n',
        r"process 'web' has an empty command",
    ),
    "default process naming no process": (
        "pyproject.toml",
        '[tool.buildpacks]\ndefault-process = "worker"\n',
        r"default-process 'worker' is not a process type; the project has: example-service",
    ),
    "Procfile line with an empty command": (
        "Procfile",
        "web:   \n",
        r"Procfile: line 1: process 'web' has an empty command",
    ),
    "Procfile not UTF-8": ("Procfile", b"web: caf\xe9\n", r"Procfile: not UTF-8 text"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_processes_give_one_error_line_and_no_archive(case, session_dir, hatch_env):
    name, content, pattern = BAD[case]
    project = testbed.copy_example(session_dir / ("bad-process-" + re.sub(r"\W+", "-", case)))
    path = project / name
    if name == "pyproject.toml":
        text = path.read_text()
        assert "[tool.buildpacks]\n" in text
        path.write_text(text.replace("[tool.buildpacks]\n", content))
    else:
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    result = testbed.cli("build", str(project), env=hatch_env)
    out = result.stdout + result.stderr
    assert result.returncode != 0 and "Traceback" not in out, out
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and re.search(pattern, errors[0]), out
    assert not (project / "dist").exists() or not any((project / "dist").iterdir())
