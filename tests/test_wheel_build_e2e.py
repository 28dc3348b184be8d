"""Where ``buildpacks build`` builds a project's wheel, with real parts: the command line in a
subprocess, hatchling installed in this environment, flit_core and old hatchling from PyPI
into cached build environments made by uv."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from buildpacks import wheels
from tests import testbed

pytestmark = pytest.mark.e2e

IN_PROCESS = "Building the wheel in this process with hatchling.build (hatchling "
ISOLATED = "Building the wheel with {backend} in the build environment "
UP_TO_DATE = "is up to date: nothing it is built from has changed"


def _env(hatch_env: dict[str, str], base_layout: str, cache: Path) -> dict[str, str]:
    """The suite's environment with a cache of the test's own, on the default base as a
    layout: one local directory decides the base, whatever the archive's mirror does."""
    return {**hatch_env, "BP_CACHE_DIR": testbed.seeded_cache(cache), "BP_BASE_IMAGE": base_layout}


def _build(project: Path, env: dict[str, str], *flags: str):
    result = testbed.cli("build", str(project), *flags, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def _digest(project: Path) -> str:
    return testbed.read_archive_manifest(next((project / "dist").glob("*.tar")))[0]


def _envs(cache: Path) -> dict[str, int]:
    """The build environments under ``cache`` with their directories' change times."""
    envs = cache / "build-envs"
    return {p.name: p.stat().st_mtime_ns for p in envs.iterdir()} if envs.is_dir() else {}


def _small_project(path: Path, requires: str, backend: str) -> Path:
    """A one-module package with a console script, built by ``backend``."""
    (path / "small_app").mkdir(parents=True)
    (path / "small_app/__init__.py").write_text(
        '"""A small app."""\n\n__version__ = "0.1.0"\n\n\ndef main():\n    print("hi")\n'
    )
    (path / "pyproject.toml").write_text(
        f'[build-system]\nrequires = [{requires}]\nbuild-backend = "{backend}"\n\n'
        '[project]\nname = "small-app"\nversion = "0.1.0"\ndescription = "A small app"\n'
        'requires-python = ">=3.11"\ndependencies = []\n\n'
        '[project.scripts]\nsmall-app = "small_app:main"\n'
    )
    return path


def test_example_is_built_in_process_and_a_no_op_builds_no_wheel(
    session_dir, hatch_env, base_layout
):
    project = testbed.copy_example(session_dir / "wheel-in-process")
    cache = session_dir / "wheel-in-process-cache"
    env = _env(hatch_env, base_layout, cache)
    first = _build(project, env)
    assert IN_PROCESS in first.stdout, first.stdout
    digest = _digest(project)
    server = project / "src/example_service/server.py"
    server.write_text(server.read_text().replace('return "ok"', 'return "ok, edited"'))
    edited = _build(project, env)  # the last wheel patched (tests/test_wheelpatch_e2e.py)
    assert "Building the wheel from the last one, " in edited.stdout, edited.stdout
    assert _digest(project) != digest
    assert _envs(cache) == {}  # no build environment was made for it
    no_op = _build(project, env)
    assert UP_TO_DATE in no_op.stdout, no_op.stdout
    assert "Building the wheel" not in no_op.stdout  # the check ran before any wheel
    # The same check sees a change made without a change of size or time of day: another
    # file selected by hatchling appears.
    (project / "src/example_service/extra.py").write_text("X = 1\n")
    added = _build(project, env)
    assert IN_PROCESS in added.stdout and UP_TO_DATE not in added.stdout, added.stdout
    # A flag is an input too.
    flagged = _build(project, env, "--env", "GREETING=hi")
    assert UP_TO_DATE not in flagged.stdout, flagged.stdout
    assert UP_TO_DATE in _build(project, env, "--env", "GREETING=hi").stdout


def test_build_hooks_make_the_check_key_on_the_wheel(session_dir, hatch_env, base_layout):
    """A build hook runs arbitrary code while the wheel is built: here it adds a file that
    hatchling does not select, which the early check cannot see, so the check is the one on
    the wheel's content, after the wheel is built."""
    project = _small_project(session_dir / "wheel-hook", '"hatchling"', "hatchling.build")
    (project / "data").mkdir()
    stamp = project / "data/stamp.txt"
    stamp.write_text("one\n")
    (project / "hatch_build.py").write_text(
        "from hatchling.builders.hooks.plugin.interface import BuildHookInterface\n\n\n"
        "class StampHook(BuildHookInterface):\n"
        "    def initialize(self, version, build_data):\n"
        '        build_data["force_include"][f"{self.root}/data/stamp.txt"] = '
        '"small_app/stamp.txt"\n'
    )
    with (project / "pyproject.toml").open("a") as f:
        f.write("\n[tool.hatch.build.targets.wheel.hooks.custom]\n")
    env = _env(hatch_env, base_layout, session_dir / "wheel-hook-cache")
    assert IN_PROCESS in _build(project, env).stdout
    digest = _digest(project)
    again = _build(project, env)
    assert IN_PROCESS in again.stdout and UP_TO_DATE in again.stdout, again.stdout
    stamp.write_text("two\n")
    changed = _build(project, env)
    assert UP_TO_DATE not in changed.stdout, changed.stdout
    assert _digest(project) != digest


def test_backend_not_installed_here_gets_one_cached_environment(
    session_dir, hatch_env, base_layout
):
    project = _small_project(session_dir / "wheel-flit", '"flit_core==3.9.0"', "flit_core.buildapi")
    cache = session_dir / "wheel-flit-cache"
    env = _env(hatch_env, base_layout, cache)
    first = _build(project, env)
    assert ISOLATED.format(backend="flit_core.buildapi") in first.stdout, first.stdout
    assert "(made now)" in first.stdout
    envs = _envs(cache)
    assert len(envs) == 1, envs
    (name,) = envs
    assert (cache / "build-envs" / name / "lib/python3.11/site-packages/flit_core").is_dir()
    digest = _digest(project)
    module = project / "small_app/__init__.py"
    module.write_text(module.read_text().replace('"hi"', '"hello"'))
    second = _build(project, env)
    assert f"{cache / 'build-envs' / name} (reused)" in second.stdout, second.stdout
    assert _envs(cache) == envs  # the same one, untouched
    assert _digest(project) != digest
    # Its up-to-date check keys on the wheel's content: the same wheel, the same image.
    assert UP_TO_DATE in _build(project, env).stdout


def test_project_excluding_the_installed_hatchling_is_not_built_with_it(
    session_dir, hatch_env, base_layout
):
    project = _small_project(
        session_dir / "wheel-old-hatchling", '"hatchling<1.0"', "hatchling.build"
    )
    cache = session_dir / "wheel-old-hatchling-cache"
    result = _build(project, _env(hatch_env, base_layout, cache))
    assert "in this process" not in result.stdout, result.stdout
    assert ISOLATED.format(backend="hatchling.build") in result.stdout, result.stdout
    (name,) = _envs(cache)
    site = cache / "build-envs" / name / "lib/python3.11/site-packages"
    (dist_info,) = site.glob("hatchling-*.dist-info")
    assert dist_info.name.startswith("hatchling-0."), dist_info.name


@pytest.mark.parametrize(
    ("requires", "message"),
    [
        ('"hatchling>=>1"', "error: pyproject.toml: [build-system] requires: 'hatchling>=>1'"),
        (
            '"no-such-backend-bp-test==1.0"',
            "error: making the build environment (no-such-backend-bp-test==1.0) failed",
        ),
    ],
)
def test_broken_backend_requirement_is_one_error_line(
    session_dir, hatch_env, base_layout, requires, message
):
    name = "wheel-broken-" + ("invalid" if ">=>" in requires else "missing")
    project = _small_project(session_dir / name, requires, "hatchling.build")
    cache = session_dir / f"{name}-cache"
    result = testbed.cli("build", str(project), env=_env(hatch_env, base_layout, cache))
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    assert "Traceback" not in out
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(message), out
    assert not (project / "dist").exists() or not any((project / "dist").iterdir())
    assert _envs(cache) == {}  # nothing half-made is left to be taken for an environment


def test_concurrent_builds_make_one_environment(tmp_path):
    """Two processes asking for the same environment at once: both get it whole, one of
    them made it, and nothing else is left."""
    probe = (
        "import sys\n"
        "from pathlib import Path\n"
        "from buildpacks import wheels\n"
        "env = wheels.environment(['flit_core==3.9.0'], sys.executable, Path(sys.argv[1]), print)\n"
        "print('ENV', env.path, env.created)\n"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", probe, str(tmp_path)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outs = [proc.communicate(timeout=300)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outs
    made = [line.split()[1:] for out in outs for line in out.splitlines() if line.startswith("ENV")]
    assert len(made) == 2 and made[0][0] == made[1][0], outs
    assert [created for _, created in made].count("True") >= 1, outs
    assert sorted(p.name for p in (tmp_path / "build-envs").iterdir()) == [Path(made[0][0]).name]
    again = wheels.environment(["flit_core==3.9.0"], sys.executable, tmp_path, print)
    assert again == wheels.Environment(Path(made[0][0]), created=False)


def test_route_is_in_process_only_when_the_installed_backend_is_allowed(tmp_path):
    example = testbed.copy_example(tmp_path / "example")
    pyproject = example / "pyproject.toml"
    text = pyproject.read_text()
    builder = wheels.WheelBuilder()
    assert builder.route(example, None, print).backend is not None  # hatchling is here
    # No interpreter of the image's Python on this machine: this one builds.
    assert builder.route(example, "3.2", print).backend is not None
    pyproject.write_text(text.replace('"hatchling"', '"hatchling<1"'))
    assert builder.route(example, None, print).backend is None  # asked again after the edit
    in_tree = text.replace(
        'build-backend = "hatchling.build"',
        'build-backend = "hatchling.build"\nbackend-path = ["."]',
    )
    pyproject.write_text(in_tree)
    assert builder.route(example, None, print).backend is None  # an in-tree backend


def _slow_in_process(project: Path, marker: Path) -> None:
    """hatchling, here, with a build hook that marks its start and then takes a minute."""
    (project / "hatch_build.py").write_text(
        "import pathlib, time\n"
        "from hatchling.builders.hooks.plugin.interface import BuildHookInterface\n\n\n"
        "class SlowHook(BuildHookInterface):\n"
        "    def initialize(self, version, build_data):\n"
        f"        pathlib.Path({str(marker)!r}).touch()\n"
        "        time.sleep(60)\n"
    )
    with (project / "pyproject.toml").open("a") as f:
        f.write("\n[tool.hatch.build.targets.wheel.hooks.custom]\n")


def _slow_isolated(project: Path, marker: Path) -> None:
    """An in-tree backend (so a build environment), which marks its start and then takes a
    minute."""
    (project / "_backend").mkdir()
    (project / "_backend/slow_backend.py").write_text(
        "import pathlib, time\n\n\n"
        "def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):\n"
        f"    pathlib.Path({str(marker)!r}).touch()\n"
        "    time.sleep(60)\n"
    )
    text = (project / "pyproject.toml").read_text()
    (project / "pyproject.toml").write_text(
        text.replace('requires = ["hatchling"]', "requires = []").replace(
            'build-backend = "hatchling.build"',
            'build-backend = "slow_backend"\nbackend-path = ["_backend"]',
        )
    )


@pytest.mark.parametrize("make_slow", [_slow_in_process, _slow_isolated])
def test_ctrl_c_while_the_wheel_is_built_is_one_line_and_status_130(
    session_dir, hatch_env, base_layout, make_slow
):
    name = f"wheel-ctrl-c-{make_slow.__name__.strip('_')}"
    project = _small_project(session_dir / name, '"hatchling"', "hatchling.build")
    marker = session_dir / f"{name}.started"
    make_slow(project, marker)
    cache = session_dir / f"{name}-cache"
    proc = subprocess.Popen(
        [str(testbed.BIN / "buildpacks"), "build", str(project)],
        env=_env(hatch_env, base_layout, cache),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the backend never started"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, out + err
    assert "Traceback" not in out + err
    assert [line for line in err.splitlines() if line.startswith("error:")] == [
        "error: interrupted"
    ], out + err
    assert not (project / "dist").exists() or not any((project / "dist").iterdir())
    envs = cache / "build-envs"
    left = sorted(p.name for p in envs.iterdir()) if envs.is_dir() else []
    assert not any(name.startswith("tmp-") for name in left), left


def test_a_build_environment_left_half_made_by_a_killed_build_is_removed(tmp_path):
    stale = tmp_path / "build-envs" / "tmp-killed"
    (stale / "lib").mkdir(parents=True)  # no process holds its lock: its maker has ended
    env = wheels.environment([], sys.executable, tmp_path, print)
    assert env.created and (env.path / "pyvenv.cfg").is_file()
    assert sorted(p.name for p in (tmp_path / "build-envs").iterdir()) == [env.path.name]


def test_what_the_backend_asks_for_besides_gets_an_environment_of_its_own(
    session_dir, hatch_env, base_layout
):
    """setuptools before 70.1 asks for ``wheel`` in ``get_requires_for_build_wheel``."""
    project = _small_project(
        session_dir / "wheel-extra-requires", '"setuptools==69.5.1"', "setuptools.build_meta"
    )
    cache = session_dir / "wheel-extra-requires-cache"
    first = _build(project, _env(hatch_env, base_layout, cache))
    envs = _envs(cache)
    assert len(envs) == 2, envs  # setuptools; setuptools and wheel
    used = [p for p in (cache / "build-envs").iterdir() if str(p) in first.stdout]
    assert len(used) == 1, first.stdout
    assert list((used[0] / "lib/python3.11/site-packages").glob("wheel-*.dist-info"))
    second = _build(project, _env(hatch_env, base_layout, cache))
    assert f"{used[0]} (reused)" in second.stdout, second.stdout
    assert _envs(cache) == envs


def test_a_no_op_imports_no_lifecycle(session_dir, hatch_env, base_layout):
    project = testbed.copy_example(session_dir / "wheel-no-lifecycle")
    probe = (
        "import sys\n"
        "from buildpacks import cli\n"
        f"assert cli.main(['build', {str(project)!r}]) == 0\n"
        "print('lifecycle loaded:', 'buildpacks.lifecycle' in sys.modules)\n"
    )
    env = _env(hatch_env, base_layout, session_dir / "wheel-no-lifecycle-cache")
    runs = [
        subprocess.run(
            [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
        )
        for _ in range(2)
    ]
    assert "lifecycle loaded: True" in runs[0].stdout, runs[0].stdout
    assert UP_TO_DATE in runs[1].stdout, runs[1].stdout + runs[1].stderr
    assert "lifecycle loaded: False" in runs[1].stdout, runs[1].stdout


def test_a_wheel_build_stopped_midway_leaves_no_temp_file_of_the_backend(tmp_path, monkeypatch):
    # hatchling writes the wheel to a mkstemp file, then moves it into the output directory:
    # Ctrl-C while it writes must not leave that file in the system's temp directory.
    from hatchling.builders import wheel as hatchling_wheel

    def interrupted(self, included_file):
        raise KeyboardInterrupt

    monkeypatch.setattr(hatchling_wheel.WheelArchive, "add_file", interrupted)
    system_tmp = tmp_path / "system-tmp"
    system_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(system_tmp))
    project = _small_project(tmp_path / "project", '"hatchling"', "hatchling.build")
    with pytest.raises(KeyboardInterrupt), tempfile.TemporaryDirectory(dir=tmp_path) as work:
        wheels.WheelBuilder().build(project, Path(work), print, None, tmp_path / "cache")
    assert list(system_tmp.iterdir()) == []
    assert tempfile.tempdir == str(system_tmp)  # given back as it was
