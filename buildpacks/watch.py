"""The inner loop: ``buildpacks watch`` rebuilds the image on every saved change and updates
the configured outputs (archive, registry, daemon).

The process stays warm between builds: modules are imported once, and the wheel builder
(``buildpacks.wheels``) is kept, so a project whose build backend is installed here builds
in this process with the backend imported once, and any other reuses its cached build
environment.

Changes are found by polling the tree's file stats (the up-to-date check's walk): no
dependency, the same on every platform and file system, and a walk of a small project costs
well under a millisecond.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from buildpacks import config as build_config
from buildpacks import frontend, uptodate, wheels
from buildpacks.errors import BuildError
from buildpacks.lifecycle import detect

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
    builder = wheels.WheelBuilder()
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
                root, output_dir, overrides, shown, wheel_builder=builder
            )
        except BuildError as e:
            error(f"error: {e}")
            log("Watching for the next change")
            continue
        log(f"Built {result.reference} {result.digest} in {time.perf_counter() - started:.2f} s")
