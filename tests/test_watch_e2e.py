"""``buildpacks watch`` with real parts: the command line in a subprocess, the example
project edited as a developer edits it, a ``docker-registry`` on loopback receiving each
build."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

from buildpacks import watch
from tests import testbed

BUILT = re.compile(r"^Built (\S+) (sha256:[0-9a-f]{64}) in [0-9.]+ s$")


class Watcher:
    """A running ``buildpacks watch``, its stdout and stderr read line by line."""

    def __init__(self, project: Path, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [str(testbed.BIN / "buildpacks"), "watch", str(project)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines = {"out": queue.Queue[str](), "err": queue.Queue[str]()}
        self.stderr: list[str] = []
        for name, stream in (("out", self.proc.stdout), ("err", self.proc.stderr)):
            threading.Thread(target=self._read, args=(name, stream), daemon=True).start()

    def _read(self, name: str, stream) -> None:
        for line in stream:
            if name == "err":
                self.stderr.append(line.rstrip("\n"))
            self.lines[name].put(line.rstrip("\n"))

    def next_line(self, pattern: str, stream: str = "out", timeout: float = 120) -> str:
        """The next line of ``stream`` matching ``pattern`` (lines before it are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines[stream].get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no line matching {pattern!r} in {timeout} s") from None
            if re.search(pattern, line):
                return line

    def built(self) -> str:
        match = BUILT.match(self.next_line(BUILT.pattern))
        assert match
        return match.group(2)


def save(path: Path, text: str) -> None:
    """Save as most editors do: the new text in full under another name, then renamed."""
    temp = path.with_name(f".{path.name}.swp")
    temp.write_text(text)
    os.replace(temp, path)


def test_watch_rebuilds_pushes_survives_bad_saves_and_stops_on_ctrl_c(
    session_dir, hatch_env, registry
):
    project = testbed.copy_example(session_dir / "watch")
    image = f"{registry.host}/team/watch:0.1.0"
    env = {**hatch_env, "BP_PUBLISH": "true", "BP_IMAGE": image}
    archive = project / "dist/watch-0.1.0.tar"
    watcher = Watcher(project, env)
    try:
        first = watcher.built()
        assert testbed.registry_digest(image) == first
        assert testbed.read_archive_manifest(archive)[0] == first

        server = project / "src/example_service/server.py"
        save(server, server.read_text().replace('return "ok"', 'return "ok, watched"'))
        second = watcher.built()
        assert second != first
        assert testbed.registry_digest(image) == second
        assert testbed.read_archive_manifest(archive)[0] == second

        pyproject = project / "pyproject.toml"
        good = pyproject.read_text()
        save(pyproject, good + "\n[broken\n")
        error = watcher.next_line("^error: ", stream="err")
        assert "pyproject.toml: invalid TOML" in error
        watcher.next_line("^Watching for the next change$")
        assert watcher.proc.poll() is None  # still watching
        assert testbed.registry_digest(image) == second

        save(pyproject, good)
        assert watcher.built() == second  # the same inputs again: the same image
        save(server, server.read_text().replace("ok, watched", "ok, watched again"))
        third = watcher.built()
        assert third not in (first, second)
        assert testbed.registry_digest(image) == third

        # Without the lock, dependencies are resolved from pyproject.toml: a missing one fails.
        (project / "uv.lock").unlink()
        watcher.built()
        missing = '"werkzeug==3.1.9", "no-such-package-bp-watch==1.0",'
        save(pyproject, good.replace('"werkzeug==3.1.9",', missing))
        error = watcher.next_line("^error: ", stream="err")
        assert "no-such-package-bp-watch" in error
        watcher.next_line("^Watching for the next change$")
        save(pyproject, good)
        watcher.built()
    finally:
        watcher.proc.send_signal(signal.SIGINT)
        watcher.proc.wait(timeout=30)
    time.sleep(0.2)  # the reader threads drain the pipes
    assert watcher.proc.returncode == 130
    assert watcher.stderr[-1] == f"Stopped watching {project.resolve()}"
    assert not any("Traceback" in line for line in watcher.stderr)
    errors = [line.split(":")[1] for line in watcher.stderr if line.startswith("error:")]
    assert errors == [f" {pyproject}", " installing dependencies from pyproject.toml failed"]


def test_watch_refuses_what_is_no_project(session_dir, hatch_env):
    empty = session_dir / "watch-empty"
    empty.mkdir()
    for path, expected in (
        (empty, "error: no entry point"),
        (session_dir / "watch-missing", "not a directory"),
    ):
        result = subprocess.run(
            [str(testbed.BIN / "buildpacks"), "watch", str(path)],
            env=hatch_env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 1
        assert result.stderr.startswith("error: ") and expected in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert result.stdout == ""


def test_snapshot_leaves_out_the_output_build_by_products_vcs_and_venvs(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src/app.py").write_text("x = 1\n")
    before = watch.snapshot(tmp_path, tmp_path / "dist")
    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv/pyvenv.cfg").write_text("home = /usr/bin\n")
    by_products = ("dist/app.tar", "build/lib/app.py", "src/app.egg-info/PKG-INFO")
    for by_product in (*by_products, ".git/index", "src/__pycache__/app.pyc", ".venv/lib/x.py"):
        (tmp_path / by_product).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / by_product).write_text("made by a build\n")
    assert watch.snapshot(tmp_path, tmp_path / "dist") == before
    (tmp_path / "src/app.py").write_text("x = 2\n")
    assert watch.snapshot(tmp_path, tmp_path / "dist") != before
