"""The inner loop: ``buildpacks watch`` rebuilds the image on every saved change and updates
the configured outputs (archive, registry, daemon).

The process stays warm between builds: modules are imported once, and a project whose build
backend (with every requirement it declares) is importable here gets its wheel built in this
process rather than in a fresh ``uv build`` environment, which is most of a rebuild's time.
A project whose backend is missing or pinned to another version is built by ``uv build``.

Changes are found by polling the tree's file stats (the up-to-date check's walk): no
dependency, the same on every platform and file system, and a walk of a small project costs
well under a millisecond.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import io
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement

from buildpacks import config as build_config
from buildpacks import frontend, uptodate
from buildpacks.errors import BuildError
from buildpacks.lifecycle import detect
from buildpacks.project import read_pyproject

POLL_SECONDS = 0.05
# Log lines worth showing on each rebuild: a failing backend's output, and where the image
# went. The phase headers and the buildpacks' chatter are the same every time.
SHOWN = ("  | ", "Archive:", "Pushed ", "Loaded into", "Cache image ")
# Directories no build reads: version control (git's state reaches the image through the
# labels only, and a commit is no save), bytecode and tool caches.
SKIPPED_DIRS = frozenset(
    {
        ".git",
        ".hg",
        ".svn",
        "__pycache__",
        ".tox",
        ".nox",
        ".mypy_cache",
        ".pytest_cache",
        ".ruff_cache",
    }
)


def _satisfied(requirements: list[str]) -> bool:
    for text in requirements:
        try:
            requirement = Requirement(text)
        except InvalidRequirement:
            return False
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        try:
            version = importlib.metadata.version(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            return False
        if not requirement.specifier.contains(version, prereleases=True):
            return False
    return True


@contextlib.contextmanager
def _in_directory(path: Path) -> Iterator[None]:
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def in_process_backend(root: Path) -> Any | None:
    """The project's PEP 517 backend module when it and every requirement of the build (its
    ``build-system.requires`` and what it asks for the wheel) are installed here; else None."""
    if not (root / "pyproject.toml").is_file():
        return None
    system = read_pyproject(root).get("build-system", {})
    name = system.get("build-backend")
    if not isinstance(name, str) or "backend-path" in system:
        return None
    if not _satisfied(list(system.get("requires", []))):
        return None
    module_name, _, attribute = name.partition(":")
    try:
        backend = importlib.import_module(module_name)
        for part in filter(None, attribute.split(".")):
            backend = getattr(backend, part)
        extra = getattr(backend, "get_requires_for_build_wheel", lambda: [])
        with _in_directory(root), contextlib.redirect_stdout(io.StringIO()):
            needed = list(extra())
    except Exception:  # any failure here only means: build it the usual way
        return None
    return backend if _satisfied(needed) else None


def wheel_builder() -> frontend.WheelBuilder:
    """A wheel builder that builds in this process when the project's backend allows (see
    ``in_process_backend``, asked again when ``pyproject.toml`` changes) and the image's
    Python is this interpreter's minor, else with uv."""
    cache: dict[str, Any] = {}
    here = f"{sys.version_info.major}.{sys.version_info.minor}"

    def build(
        project_root: Path, out_dir: Path, log: Callable[[str], None], python: str | None
    ) -> Path:
        key = repr(uptodate.stat_key(project_root / "pyproject.toml"))
        if key not in cache:
            cache.clear()
            cache[key] = in_process_backend(project_root)
        backend = cache[key]
        if backend is None or python not in (None, here):
            return frontend.build_wheel(project_root, out_dir, log, python)
        output = io.StringIO()
        try:
            with (
                _in_directory(project_root),
                frontend.reproducible_wheel_env(),
                contextlib.redirect_stdout(output),
                contextlib.redirect_stderr(output),
            ):
                name = backend.build_wheel(str(out_dir))
        except Exception as e:  # the backend's own failure: its output, then one line
            for line in frontend.backend_output(output.getvalue()):
                log(f"  | {line}")
            raise BuildError(
                f"building the wheel of {project_root} with its build backend failed: "
                f"{type(e).__name__}: {e}"
            ) from None
        return out_dir / name

    return build


def snapshot(root: Path, output_dir: Path) -> dict[str, list[int] | None]:
    """The stats of every file under ``root`` a build may read. Left out: the output
    directory and what building a wheel leaves in the tree (``build/``, ``*.egg-info``), so a
    build never triggers the next one; version control, caches and virtual environments,
    which no build reads. Directories are left out too: creating ``dist/`` changes the
    root's, and an added or removed file shows as an entry of its own."""
    root = root.resolve()
    skipped = {str(output_dir.resolve()), str(root / "build")}
    found: dict[str, list[int] | None] = {}

    def walk(directory: str) -> None:
        with os.scandir(directory) as entries:
            for entry in entries:
                if not entry.is_dir():
                    found[entry.path] = uptodate.stat_key(Path(entry.path))
                elif not (
                    entry.name in SKIPPED_DIRS
                    or entry.name.endswith(".egg-info")
                    or entry.path in skipped
                    or os.path.exists(os.path.join(entry.path, "pyvenv.cfg"))
                ):
                    walk(entry.path)

    walk(str(root))
    return found


def check_project(root: Path, output_dir: Path, overrides: Mapping[str, Any]) -> None:
    """Refuse, before watching, a path that is no project: not a directory, an unreadable
    ``pyproject.toml``, or a configuration no build could start from."""
    if not root.is_dir():
        raise BuildError(f"{root}: not a directory")
    project = frontend.known_project(root)
    if project is not None:
        detect.detect(
            build_config.resolve(project, output_dir, overrides=overrides), lambda _: None
        )


def watch(
    root: Path,
    output_dir: Path,
    overrides: Mapping[str, Any],
    log: Callable[[str], None],
    error: Callable[[str], None],
    *,
    poll: float = POLL_SECONDS,
) -> None:
    """Build ``root`` now and after every change, until interrupted (KeyboardInterrupt).
    Progress goes to ``log``; a failed build is one ``error:`` line to ``error``, and the
    loop goes on."""
    root = root.resolve()
    check_project(root, output_dir, overrides)
    build_wheel = wheel_builder()
    log(f"Watching {root} (Ctrl-C to stop)")
    built: dict[str, list[int] | None] | None = None

    def shown(line: str) -> None:
        if line.startswith(SHOWN):
            log(line)

    while True:
        try:
            current = snapshot(root, output_dir)
        except OSError:  # a directory removed while walked: look again
            time.sleep(poll)
            continue
        if current == built:
            time.sleep(poll)
            continue
        # The snapshot is taken before the build: a save during the build starts another.
        built = current
        started = time.perf_counter()
        try:
            result = frontend.build_project(
                root, output_dir, overrides, shown, wheel_builder=build_wheel
            )
        except BuildError as e:
            error(f"error: {e}")
            log("Watching for the next change")
            continue
        log(f"Built {result.reference} {result.digest} in {time.perf_counter() - started:.2f} s")
