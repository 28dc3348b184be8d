"""The up-to-date check: a build whose every input is unchanged since the last build of the
same project into the same directory is skipped, as make and Gradle skip an up-to-date task.

The inputs are fingerprinted from what the file system says of them (size, modification
time, inode of every file; modification time of every directory, which changes when an entry
is added, removed or renamed), never from a guess of which files matter:

- the project tree, all of it but the output directory, version-control internals, virtual
  environments and tool caches; plus paths outside it that the wheel takes in;
- the git state the image's labels come from (HEAD, the branch's ref, packed refs, config);
- the environment variables a build reads (``BP_*``, ``UV_*``, ``PIP_*``, ``PATH``, ...);
- the code doing the build (this package, its adapters, uv, the interpreter);
- the local files that decided the base image, as the finished build reports them;
- the archive itself, so a removed or replaced archive is rebuilt.

Only a build whose whole output is local is recorded: one that pushes, loads a daemon or
pulls its base on every build (``pull-policy = "always"``) runs in full every time. The
record keeps digests and file stats only, never the environment's values (credentials).

This module imports nothing heavier than the standard library and the blob store's file
helpers: it runs before anything else.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from buildpacks.oci.blobs import file_digest, write_atomic

FORMAT = 1
ENV_PREFIXES = ("BP_", "UV_", "PIP_", "DOCKER_", "SSL_CERT_", "HATCH_BUILD_", "GIT_", "CNB_")
ENV_NAMES = frozenset(
    {
        "SOURCE_DATE_EPOCH",
        "PATH",
        "HOME",
        "XDG_CACHE_HOME",
        "XDG_CONFIG_HOME",
        "XDG_RUNTIME_DIR",
        "REGISTRY_AUTH_FILE",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "no_proxy",
    }
)
CREDENTIALS = frozenset({"BP_REGISTRY_USERNAME", "BP_REGISTRY_PASSWORD"})
# Directories that never feed an image: version control (git is read separately), caches,
# bytecode, and other tools' environments. (node_modules is walked: a wheel may include
# built assets from it.)
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
CODE = Path(__file__).resolve().parent
# Files changed this close before a fingerprint is taken are also compared by content: the
# coarsest modification times in use (FAT, some network file systems) tick every 2 s.
RACY_NS = 2_000_000_000


@dataclass(frozen=True)
class Fingerprint:
    """The digest of a build's inputs, and the content digests of the files among them that
    changed just before it was taken: a file changed again within the same tick of the
    file system's clock keeps its modification time, so its stats alone prove nothing (git's
    "racily clean" entries)."""

    digest: str
    recent: dict[str, str]


@dataclass(frozen=True)
class Record:
    """What the last full build saw and made."""

    fingerprint: str
    recent: dict[str, str]
    watched: dict[str, list[int] | None]
    image: str
    digest: str
    archive: str


def record_file(cache_dir: Path, root: Path, directory: Path) -> Path:
    """Where the record of builds of ``root`` into ``directory`` is kept."""
    key = hashlib.sha256(f"{root.resolve()}\0{directory.resolve()}".encode()).hexdigest()
    return cache_dir / "uptodate" / f"{key[:32]}.json"


def _key(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ino, st.st_mode]


def stat_key(path: Path) -> list[int] | None:
    """Size, modification time, inode and mode; None for a missing path."""
    try:
        return _key(os.stat(path))
    except OSError:
        return None


def tree(
    paths: Iterable[Path], skip: Iterable[Path], *, directories: bool = True
) -> dict[str, list[int] | None]:
    """Stats of every file under ``paths`` and, with ``directories``, of every directory
    (symbolic links followed, each directory once), skipped directories left out."""
    skipped = {str(p.resolve()) for p in skip}
    found: dict[str, list[int] | None] = {}
    seen: set[tuple[int, int]] = set()

    def walk(top: str) -> None:
        try:
            st = os.stat(top)
        except OSError:
            found[top] = None
            return
        is_dir = stat.S_ISDIR(st.st_mode)
        if directories or not is_dir:
            found[top] = _key(st)
        if not is_dir or (st.st_dev, st.st_ino) in seen:
            return
        seen.add((st.st_dev, st.st_ino))
        with os.scandir(top) as entries:
            for entry in entries:
                if entry.is_dir():
                    if (
                        entry.name in SKIPPED_DIRS
                        or entry.path in skipped
                        or os.path.exists(os.path.join(entry.path, "pyvenv.cfg"))
                    ):
                        continue
                    walk(entry.path)
                else:
                    found[entry.path] = stat_key(Path(entry.path))

    for path in paths:
        walk(str(path.resolve()))
    return found


def git_files(root: Path) -> list[Path]:
    """The files git keeps the commit, branch and remote in, for the repository holding
    ``root`` (none outside a repository)."""
    for directory in (root.resolve(), *root.resolve().parents):
        dotgit = directory / ".git"
        if dotgit.is_dir():
            git_dir = common = dotgit
            break
        if dotgit.is_file():  # a worktree or submodule: "gitdir: PATH"
            text = dotgit.read_text(errors="replace").strip()
            git_dir = (directory / text.removeprefix("gitdir:").strip()).resolve()
            common_file = git_dir / "commondir"
            common = (
                (git_dir / common_file.read_text().strip()).resolve()
                if common_file.is_file()
                else git_dir
            )
            break
    else:
        return []
    files = [dotgit, git_dir / "HEAD", common / "packed-refs", common / "config"]
    try:
        head = (git_dir / "HEAD").read_text(errors="replace").strip()
    except OSError:
        return files
    if head.startswith("ref:"):
        ref = head.removeprefix("ref:").strip()
        files += [git_dir / ref, common / ref]
    return files


def environment(env: Mapping[str, str]) -> dict[str, str]:
    """The variables a build reads (registry credentials are not among them: they reach no
    image, and a build that uses them to push is never recorded), each value hashed."""
    return {
        name: hashlib.sha256(value.encode()).hexdigest()
        for name, value in sorted(env.items())
        if (name.startswith(ENV_PREFIXES) or name in ENV_NAMES) and name not in CREDENTIALS
    }


def fingerprint(
    root: Path,
    directory: Path,
    env: Mapping[str, str],
    *,
    extra_paths: Iterable[Path] = (),
    code: Iterable[Path] = (),
) -> Fingerprint:
    """The fingerprint of every input of a build of ``root`` into ``directory``:
    ``extra_paths`` outside the project that the build reads, ``code`` beside this package
    that runs it. Raises OSError for a tree it cannot read."""
    taken = time.time_ns()
    root = root.resolve()
    files = {
        # Files only: Python adds __pycache__ directories beside the code as it first runs.
        "code": tree([CODE, *code], (), directories=False),
        "project": tree([root, *extra_paths], [directory]),
        "git": {str(p): stat_key(p) for p in git_files(root)},
    }
    inputs = {
        "format": FORMAT,
        "python": [sys.executable, sys.version],
        "env": environment(env),
        # Installing, upgrading or removing any package (uv, hatchling, ...) renames a
        # .dist-info entry, which changes its directory's modification time.
        "installed": {p: stat_key(Path(p)) for p in sys.path if p},
        **files,
    }
    recent = {
        path: file_digest(Path(path))
        for group in files.values()
        for path, key in group.items()
        if key and stat.S_ISREG(key[3]) and key[1] >= taken - RACY_NS
    }
    digest = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()
    return Fingerprint(digest, recent)


def up_to_date(path: Path, current: Fingerprint) -> Record | None:
    """The record at ``path`` when its fingerprint is ``current``, the files changed just
    before it was taken have the same content, and every file it watches (base image,
    archive) is as it was; None otherwise."""
    try:
        record = Record(**json.loads(path.read_text()))
        if record.fingerprint != current.digest:
            return None
        if any(stat_key(Path(p)) != key for p, key in record.watched.items()):
            return None
        if any(file_digest(Path(p)) != digest for p, digest in record.recent.items()):
            return None
    except (OSError, ValueError, TypeError, AttributeError):
        return None
    return record


def save(
    path: Path,
    current: Fingerprint,
    watched: Iterable[Path],
    image: str,
    digest: str,
    archive: Path,
) -> None:
    """Record a finished build (``current``: its fingerprint, taken before it started, so an
    edit made during the build is seen by the next one)."""
    watched_stats = {str(p): stat_key(p) for p in [*watched, archive]}
    record = Record(current.digest, current.recent, watched_stats, image, digest, str(archive))
    write_atomic(path, json.dumps(asdict(record)))


def forget(path: Path) -> None:
    """Drop the record, so the next build runs in full."""
    path.unlink(missing_ok=True)
