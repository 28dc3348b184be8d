"""Building a project's wheel with its own PEP 517 build backend, in one of two places:

- **in this process**, when the backend named by ``build-system.build-backend`` and every
  requirement of ``build-system.requires`` (and of its ``get_requires_for_build_wheel``) are
  installed here at versions the project allows, the backend is not in the project's tree
  (``backend-path``), and the image's Python is this interpreter's: the backend is imported
  and its ``build_wheel`` hook called with the project's root as working directory. No
  environment is made and the backend is imported once per process.
- otherwise in an **isolated build environment**, made with uv once for those requirements
  and that interpreter, kept under the cache directory and reused by every later build that
  needs the same (``build-envs/<key>``); the hooks run in it through ``pyproject_hooks``. An
  environment is made in a claimed temp directory and renamed into place when complete, so a
  concurrent build sees a whole environment or none, and one left by a killed build is
  removed by the next.

Either way ``SOURCE_DATE_EPOCH`` is set, so the wheel is the same twice, and a failing
backend's whole output is logged, indented, before one error line.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import os
import shutil
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from buildpacks import config as build_config
from buildpacks.errors import BuildError
from buildpacks.project import read_pyproject

HERE = f"{sys.version_info.major}.{sys.version_info.minor}"
# PEP 517: a project without [build-system].build-backend is built by setuptools' legacy
# backend; PEP 518: one without [build-system] requires setuptools.
LEGACY_BACKEND = "setuptools.build_meta:__legacy__"
LEGACY_REQUIRES = ("setuptools>=40.8.0",)
# What uv draws before its messages (a cross, a branch and an arrow).
UV_MARKS = " \u00d7\u2570\u2500\u25b6"


@dataclass(frozen=True)
class BuildSystem:
    """``[build-system]`` of a project, checked."""

    requires: tuple[str, ...]
    backend: str
    backend_path: tuple[str, ...]


def build_system(root: Path, *, check_requires: bool = True) -> BuildSystem:
    """The project's ``[build-system]`` (PEP 517 and 518 defaults when absent); a wrong
    type or a requirement that is no PEP 508 requirement is one ``BuildError`` naming it.
    ``check_requires`` false leaves the requirements unparsed, for the up-to-date check's
    first look, which a no-op build ends before it needs ``packaging``."""
    table = read_pyproject(root).get("build-system")
    if table is None:
        return BuildSystem(LEGACY_REQUIRES, LEGACY_BACKEND, ())
    if not isinstance(table, dict):
        raise BuildError("pyproject.toml: [build-system] must be a table")
    requires = table.get("requires", list(LEGACY_REQUIRES))
    backend = table.get("build-backend", LEGACY_BACKEND)
    backend_path = table.get("backend-path", [])
    for key, value in (("requires", requires), ("backend-path", backend_path)):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise BuildError(f"pyproject.toml: [build-system] {key} must be a list of strings")
    if not isinstance(backend, str) or not backend.strip():
        raise BuildError(
            "pyproject.toml: [build-system] build-backend must name a module "
            '(e.g. "hatchling.build")'
        )
    if check_requires:
        _check_requirements(requires)
    return BuildSystem(tuple(requires), backend.strip(), tuple(backend_path))


def _check_requirements(requires: Sequence[str]) -> None:
    from packaging.requirements import InvalidRequirement, Requirement

    for text in requires:
        try:
            Requirement(text)
        except InvalidRequirement as e:
            raise BuildError(
                f"pyproject.toml: [build-system] requires: {text!r} is not a requirement: {e}"
            ) from None


def satisfied(requirements: Sequence[str]) -> bool:
    """Whether every requirement (its extras' requirements too) is installed here at a
    version its specifier allows, pre-releases included as pip would take an installed one."""
    # Imported here: a no-op build's up-to-date check finds its record without asking.
    import importlib.metadata

    from packaging.markers import default_environment
    from packaging.requirements import InvalidRequirement, Requirement

    seen: set[tuple[str, str]] = set()
    environment = default_environment()

    def ok(text: str, extra: str) -> bool:
        try:
            requirement = Requirement(text)
        except InvalidRequirement:
            return False
        marker = requirement.marker
        if marker is not None and not marker.evaluate({**environment, "extra": extra}):
            return True
        try:
            version = importlib.metadata.version(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            return False
        if not requirement.specifier.contains(version, prereleases=True):
            return False
        for wanted in requirement.extras:
            if (requirement.name, wanted) in seen:
                continue
            seen.add((requirement.name, wanted))
            needs = importlib.metadata.requires(requirement.name) or []
            if not all(ok(need, wanted) for need in needs if "extra" in need):
                return False
        return True

    return all(ok(text, "") for text in requirements)


@contextlib.contextmanager
def _in_directory(path: Path) -> Iterator[None]:
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


@contextlib.contextmanager
def reproducible_env() -> Iterator[None]:
    """``SOURCE_DATE_EPOCH`` set in this process while a backend builds in it (to the
    layers' date unless the user set it), so backends that stamp files with the time give
    the same wheel twice."""
    saved = os.environ.get("SOURCE_DATE_EPOCH")
    os.environ["SOURCE_DATE_EPOCH"] = str(build_config.source_date_epoch())
    try:
        yield
    finally:
        if saved is None:
            del os.environ["SOURCE_DATE_EPOCH"]
        else:
            os.environ["SOURCE_DATE_EPOCH"] = saved


@contextlib.contextmanager
def _captured() -> Iterator[TextIO]:
    """Everything written to this process's stdout and stderr meanwhile, Python's and the
    backend's subprocesses' (a compiler's) alike, into one file."""
    sys.stdout.flush()
    sys.stderr.flush()
    with tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") as out:
        saved = os.dup(1), os.dup(2)
        os.dup2(out.fileno(), 1)
        os.dup2(out.fileno(), 2)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
                yield out
        finally:
            out.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def _output(out: TextIO) -> str:
    out.flush()
    out.seek(0)
    return out.read()


def _failed(root: Path, output: str, log: Callable[[str], None], last: str) -> BuildError:
    """The backend's output, indented, to ``log``; the one error to raise after it."""
    from buildpacks.oci.auth import redact  # for a failure only

    lines = [line for line in redact(output).rstrip().splitlines() if line.strip()]
    for line in lines:
        log(f"  | {line}")
    return BuildError(
        f"building the wheel of {root} with its build backend failed: {last or 'no output'}"
        + (" (the backend's output is above)" if lines else "")
    )


def _import_backend(system: BuildSystem) -> Any:
    module_name, _, attribute = system.backend.partition(":")
    try:
        backend = importlib.import_module(module_name)
        for part in filter(None, attribute.split(".")):
            backend = getattr(backend, part)
    except Exception as e:
        raise BuildError(
            f"pyproject.toml: [build-system] build-backend {system.backend!r} cannot be "
            f"imported although {', '.join(system.requires) or 'nothing'} is installed: "
            f"{type(e).__name__}: {e}"
        ) from None
    return backend


@contextlib.contextmanager
def temp_files_in(directory: Path) -> Iterator[None]:
    """Temp files made in this process go into ``directory`` (``tempfile.tempdir``, the
    default ``tempfile`` documents), so that a backend building a wheel here leaves none in
    the system's temp directory when it is interrupted: hatchling writes the wheel to a
    ``mkstemp`` file first and moves it into place after; Ctrl-C in between left it."""
    previous = tempfile.tempdir
    tempfile.tempdir = str(directory)
    try:
        yield
    finally:
        tempfile.tempdir = previous


def _call_in_process(
    root: Path, log: Callable[[str], None], hook: Callable[..., Any], *args: Any
) -> Any:
    """A backend's hook called here, in ``root``, its output captured; its failure (an
    exception, or ``sys.exit`` as distutils calls it) is its output and traceback, indented,
    then one error."""
    with _captured() as out:
        try:
            with _in_directory(root), reproducible_env():
                return hook(*args)
        except (Exception, SystemExit) as e:
            trace = "".join(traceback.format_exception(e))
            output = _output(out) + trace
            last = f"{type(e).__name__}: {e}" if not isinstance(e, SystemExit) else str(e.code)
    raise _failed(root, output, log, last)


def host_python(minor: str) -> str | None:
    """An interpreter of Python ``minor`` on this machine, if uv finds one (none is
    downloaded: the build must not reach for the network for it)."""
    import subprocess  # only a build outside this process starts one: a no-op imports none

    from uv import find_uv_bin

    result = subprocess.run(
        [find_uv_bin(), "python", "find", "--no-python-downloads", "--no-project", minor],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    found = result.stdout.strip()
    return found if result.returncode == 0 and found else None


def interpreter_for(python: str | None) -> str | None:
    """The interpreter to build with for an image of Python ``python`` (X.Y): None for this
    one (the same minor, or no other of that minor on this machine), else its path."""
    return None if python in (None, HERE) else host_python(python)


@dataclass(frozen=True)
class Environment:
    """An isolated build environment under the cache directory."""

    path: Path
    created: bool

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"


def environment_key(requirements: Sequence[str], interpreter: str) -> str:
    """What an environment is made of: its requirements and its interpreter (the file it
    resolves to, with its size and time, so an upgraded interpreter gets a new one)."""
    real = Path(interpreter).resolve()
    st = real.stat()
    text = json.dumps(
        {"requires": sorted(requirements), "python": [str(real), st.st_size, st.st_mtime_ns]}
    )
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _uv(args: list[str], what: str, log: Callable[[str], None]) -> None:
    import subprocess  # (see host_python)

    from uv import find_uv_bin

    from buildpacks.oci.auth import redact  # (see _failed)

    result = subprocess.run([find_uv_bin(), *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        lines = [line for line in redact(result.stderr + result.stdout).splitlines() if line]
        for line in lines:
            log(f"  | {line}")
        reason = next((line for line in reversed(lines) if line.strip()), "no output")
        raise BuildError(f"{what} failed: {reason.strip(UV_MARKS)} (uv's output is above)")


def environment(
    requirements: Sequence[str], interpreter: str, cache: Path, log: Callable[[str], None]
) -> Environment:
    """The build environment of ``requirements`` on ``interpreter``: the one made before,
    or a new one, made in a claimed temp directory (relocatable, as uv makes them) and
    renamed into place once complete."""
    from buildpacks.oci.blobs import claimed, remove_stale

    envs = cache / "build-envs"
    final = envs / environment_key(requirements, interpreter)
    if (final / "pyvenv.cfg").is_file():
        return Environment(final, created=False)
    remove_stale(envs, "tmp-*")
    fd, temp = claimed(envs, "tmp-", is_dir=True)
    try:
        what = f"making the build environment ({', '.join(requirements) or 'no requirements'})"
        _uv(
            ["venv", "--quiet", "--allow-existing", "--relocatable",
             "--python", interpreter, str(temp)],
            what, log,
        )  # fmt: skip
        if requirements:
            _uv(
                ["pip", "install", "--quiet", "--python", str(temp / "bin" / "python"),
                 *requirements],
                what, log,
            )  # fmt: skip
        try:
            os.rename(temp, final)
        except OSError:
            if not (final / "pyvenv.cfg").is_file():
                raise
            # A concurrent build made the same environment first: use it.
            return Environment(final, created=False)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
        os.close(fd)
    return Environment(final, created=True)


class _HookFailed(Exception):
    """A hook's process ended with an error; its output is kept."""

    def __init__(self, output: str) -> None:
        super().__init__("the build backend failed")
        self.output = output


def _runner(environ: Mapping[str, str], bin_dir: Path) -> Callable[..., None]:
    """A ``pyproject_hooks`` runner that captures the hook's output and runs it with the
    environment's scripts first on ``PATH`` (as ``build`` and ``uv build`` do)."""

    def run(
        cmd: Sequence[str], cwd: str | None = None, extra_environ: Mapping[str, str] | None = None
    ) -> None:
        import subprocess  # (see host_python)

        env = {**environ, **(extra_environ or {})}
        env["PATH"] = os.pathsep.join(filter(None, [str(bin_dir), env.get("PATH")]))
        env.pop("PYTHONHOME", None)
        result = subprocess.run(
            list(cmd), cwd=cwd, env=env, capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise _HookFailed(result.stdout + result.stderr)

    return run


@dataclass(frozen=True)
class Route:
    """Where a project's wheel is built: in this process with ``backend`` (the imported
    hook object), or in an isolated environment for ``system``'s requirements."""

    system: BuildSystem
    backend: Any | None
    interpreter: str | None


class WheelBuilder:
    """Builds projects' wheels (``build``), choosing where each time; the decision for a
    project is kept while its ``pyproject.toml`` and the image's Python stay the same (a
    watch loop asks again only after such a change). ``in_process`` tells where the last
    wheel was built."""

    def __init__(self) -> None:
        self._routes: dict[tuple[str, str | None], tuple[list[int] | None, Route]] = {}
        self.in_process = False

    def route(self, root: Path, python: str | None, log: Callable[[str], None]) -> Route:
        """Where the wheel of ``root`` for an image of Python ``python`` is built."""
        from buildpacks.uptodate import stat_key

        key = (str(root), python)
        stamp = stat_key(root / "pyproject.toml")
        known = self._routes.get(key)
        if known is not None and known[0] == stamp:
            return known[1]
        system = build_system(root)
        interpreter = interpreter_for(python)
        backend = None
        if interpreter is None and not system.backend_path and satisfied(system.requires):
            hook = _import_backend(system)
            extra = getattr(hook, "get_requires_for_build_wheel", None)
            needed = _call_in_process(root, log, extra, {}) if extra else []
            if satisfied(list(needed or [])):
                backend = hook
        route = Route(system, backend, interpreter)
        self._routes[key] = (stamp, route)
        return route

    def build(
        self,
        root: Path,
        out_dir: Path,
        log: Callable[[str], None],
        python: str | None,
        cache: Path,
    ) -> Path:
        """Build the wheel of ``root`` into ``out_dir`` for an image of Python ``python``
        (X.Y; None: any), with environments kept under ``cache``."""
        route = self.route(root, python, log)
        self.in_process = route.backend is not None
        if route.backend is not None:
            log(
                f"Building the wheel in this process with {route.system.backend} "
                f"({_versions(route.system.requires) or 'no requirements'})"
            )
            # out_dir is the caller's temp directory: removed with what a stopped backend left.
            with temp_files_in(out_dir):
                name = _call_in_process(root, log, route.backend.build_wheel, str(out_dir), {})
            return out_dir / name
        return _build_isolated(root, out_dir, log, route, cache)


def _versions(requirements: Sequence[str]) -> str:
    """``name version`` of each requirement installed here that applies, for the log."""
    import importlib.metadata  # (see satisfied)

    from packaging.requirements import Requirement

    applying = [Requirement(text) for text in requirements]
    names = [r.name for r in applying if r.marker is None or r.marker.evaluate()]
    return ", ".join(f"{name} {importlib.metadata.version(name)}" for name in names)


def _build_isolated(
    root: Path, out_dir: Path, log: Callable[[str], None], route: Route, cache: Path
) -> Path:
    """The wheel built by the hooks in the build environment of the project's
    requirements, and of what its backend asks for besides."""
    from pyproject_hooks import BackendUnavailable, BuildBackendHookCaller, HookMissing

    interpreter = route.interpreter or sys.executable
    system = route.system
    env = environment(system.requires, interpreter, cache, log)
    environ = {**os.environ, "SOURCE_DATE_EPOCH": str(build_config.source_date_epoch())}

    def caller(env: Environment) -> BuildBackendHookCaller:
        return BuildBackendHookCaller(
            str(root),
            system.backend,
            backend_path=list(system.backend_path) or None,
            python_executable=str(env.python),
            runner=_runner(environ, env.python.parent),
        )

    try:
        extra = [r for r in caller(env).get_requires_for_build_wheel() if r]
        if extra:
            env = environment([*system.requires, *extra], interpreter, cache, log)
        log(
            f"Building the wheel with {system.backend} in the build environment {env.path} "
            f"({'made now' if env.created else 'reused'})"
        )
        name = caller(env).build_wheel(str(out_dir))
    except _HookFailed as e:
        lines = [line for line in e.output.rstrip().splitlines() if line.strip()]
        raise _failed(root, e.output, log, lines[-1].strip() if lines else "") from None
    except BackendUnavailable as e:
        for line in e.traceback.rstrip().splitlines():
            log(f"  | {line}")
        reason = str(e).partition("\n")[0]
        raise BuildError(
            f"pyproject.toml: [build-system] build-backend {system.backend!r} cannot be "
            f"imported in its build environment ({', '.join(system.requires)}): {reason}"
        ) from None
    except HookMissing as e:
        raise BuildError(
            f"pyproject.toml: [build-system] build-backend {system.backend!r} has no "
            f"{e.hook_name} hook"
        ) from None
    return out_dir / name
