"""The up-to-date check: a build is skipped only when a full build would give the same image,
as make and Gradle skip an up-to-date task.

Its inputs are what the build reads, as the builder itself sees them, never a guess of which
files matter:

- what the route's builder resolved (``Inputs``): the Hatch route, and the command line for a
  hatchling project it builds in its own process, list the files hatchling's wheel builder
  selects (its ``.gitignore`` as it locates it, forced and shared files, license files) and
  the core metadata it would write, version included (the command line adds its flags); the
  other routes, whose backend is unknown, key on the content of the wheel it built, or on
  every file a source application's image copies, with the resolved build configuration;
- the files of the project's root, which the core reads (``pyproject.toml``, lock files,
  ``.python-version``, ``Procfile``, ...);
- the git state the image's labels come from (HEAD, the branch's ref, packed refs, config);
- the environment variables a build reads (``BP_*``, ``UV_*``, ``PIP_*``, ``PATH``, ...);
- the code doing the build (this package, its adapters, the packages installed, the
  interpreter);
- the local files that decided the base image, as the finished build reports them;
- the archive itself, so a removed or replaced archive is rebuilt.

A file is compared by size, modification and change times, inode and mode. The change time
(``ctime``) is set by the kernel on every write and every ``utime``, so a file rewritten in
place with its old size and modification time (``tar`` extraction, ``rsync --inplace -t``,
``touch -r``) is caught. A file whose times fall within the file system clock's coarsest tick
before the check is also compared by content: a second change within the same tick keeps all
its times (git's "racily clean" entries).

A fingerprint also has a *shape*: the digest of the same inputs but the content (stats) of
the files the builder copies into its output byte for byte (``Inputs.verbatim``: hatchling's
selected files). A build of the same shape as the last one patches its wheel
(``buildpacks.wheelpatch``) instead of building it.

Only a build whose whole output is local is recorded: one that pushes, loads a daemon or
pulls its base on every build (``pull-policy = "always"``) runs in full every time. The
record keeps digests and file stats only, never the environment's values (credentials).

This module imports nothing heavier than the standard library and the blob store's file
helpers: the Hatch route runs it before anything else.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from buildpacks.oci.blobs import file_digest, write_atomic

if TYPE_CHECKING:
    from buildpacks.config import BuildConfig

FORMAT = 2
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
# Where the build runs (the build server or its own process) and how a failure is told
# change nothing it makes.
NOT_INPUTS = CREDENTIALS | {"BP_SERVER", "BP_DEBUG"}
CODE = Path(__file__).resolve().parent
# Files changed this close before a fingerprint is taken are also compared by content: the
# coarsest modification times in use (FAT, some network file systems) tick every 2 s.
RACY_NS = 2_000_000_000


# Plain data, with no ``==``, repr or immutability generated: the Hatch route imports this
# module on every build, and on Python 3.11 each generated method costs an ``exec``.


@dataclass(eq=False, repr=False)
class Inputs:
    """What a build reads beyond the project's root, the git state, the environment and the
    code, as the route's builder sees it: ``files`` whose content it reads and ``values`` it
    resolved (core metadata, where each file goes, the build configuration), JSON data."""

    files: tuple[Path, ...] = ()
    values: Mapping[str, Any] = field(default_factory=dict)
    # The files among ``files`` the builder copies into its output byte for byte, each
    # with its name there: a change of their content alone can be patched into the last
    # output (``buildpacks.wheelpatch``).
    verbatim: Mapping[str, str] = field(default_factory=dict)


@dataclass(eq=False, repr=False)
class Fingerprint:
    """The digest of a build's inputs, and the content digests of the files among them that
    changed just before it was taken: a file changed again within the same tick of the
    file system's clock keeps its times, so its stats alone prove nothing."""

    digest: str
    recent: dict[str, str]
    # The digest of every input but the content of the verbatim files, and their stats
    # (with the name each gets in the output): the same shape and other contents make
    # the output the last one with those files' entries replaced.
    shape: str = ""
    contents: dict[str, list[int] | None] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)


@dataclass(eq=False, repr=False)
class Record:
    """What the last full build saw and made."""

    fingerprint: str
    recent: dict[str, str]
    watched: dict[str, list[int] | None]
    image: str
    digest: str
    archive: str


def record_file(cache_dir: Path, root: Path, directory: Path, route: str) -> Path:
    """Where the record of builds of ``root`` into ``directory`` by ``route`` (``cli``,
    ``hatch``, ``setuptools``) is kept. One per route: the routes' fingerprints differ (each
    names its route and builder), so a developer who alternates ``hatch build`` and
    ``buildpacks build`` would otherwise have each replace the other's record, and the last
    wheel kept beside it, on every build."""
    text = f"{root.resolve()}\0{directory.resolve()}\0{route}"
    return cache_dir / "uptodate" / f"{hashlib.sha256(text.encode()).hexdigest()[:32]}.json"


def _key(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_mode]


def stat_key(path: Path) -> list[int] | None:
    """Size, modification and change times, inode and mode; None for a missing path. A
    symbolic link adds its own inode and change time to its target's (zeros when dangling):
    hatchling reads through it, a source application's image keeps the link itself."""
    try:
        link = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISLNK(link.st_mode):
        return _key(link)
    try:
        target = _key(os.stat(path))
    except OSError:
        target = [0, 0, 0, 0, 0]
    return [*target, link.st_ino, link.st_ctime_ns]


def code_files(paths: Iterable[Path]) -> dict[str, list[int] | None]:
    """Stats of every file under ``paths`` (symbolic links followed, each directory once),
    bytecode caches left out: Python writes them beside the code as it first runs it, and
    checks them against their source."""
    found: dict[str, list[int] | None] = {}
    seen: set[tuple[int, int]] = set()

    def walk(top: str) -> None:
        st = os.stat(top)
        if not stat.S_ISDIR(st.st_mode):
            found[top] = _key(st)
            return
        if (st.st_dev, st.st_ino) in seen:
            return
        seen.add((st.st_dev, st.st_ino))
        with os.scandir(top) as entries:
            for entry in entries:
                if entry.name != "__pycache__":
                    walk(entry.path)

    for path in paths:
        walk(str(path.resolve()))
    return found


def root_files(root: Path) -> dict[str, list[int] | None]:
    """Stats of the files directly in the project's root: the core reads its configuration,
    lock files, ``.python-version`` and ``Procfile`` there, and nothing below it."""
    with os.scandir(root) as entries:
        return {entry.path: stat_key(Path(entry.path)) for entry in entries if entry.is_file()}


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
        if (name.startswith(ENV_PREFIXES) or name in ENV_NAMES) and name not in NOT_INPUTS
    }


def fingerprint(
    root: Path,
    env: Mapping[str, str],
    inputs: Inputs,
    *,
    code: Iterable[Path] = (),
) -> Fingerprint:
    """The fingerprint of every input of a build of ``root``: ``inputs`` as the route's
    builder sees them, ``code`` beside this package that runs it. Raises OSError for a file
    it cannot read."""
    taken = time.time_ns()
    root = root.resolve()
    files = {
        "code": code_files([CODE, *code]),
        "project": root_files(root),
        "inputs": {str(p): stat_key(p) for p in inputs.files},
        "git": {str(p): stat_key(p) for p in git_files(root)},
    }
    everything = {
        "format": FORMAT,
        "python": [sys.executable, sys.version],
        "env": environment(env),
        # Installing, upgrading or removing any package (uv, hatchling, ...) renames a
        # .dist-info entry, which changes its directory's modification time. (The project's
        # root, where a build backend runs, is on the path too: its files are watched above,
        # and an output directory made in it is no input.)
        "installed": {p: stat_key(Path(p)) for p in sys.path if p and Path(p).resolve() != root},
        "values": inputs.values,
        **files,
    }
    recent = {
        path: file_digest(Path(path))
        for group in files.values()
        for path, key in group.items()
        if key and stat.S_ISREG(key[4]) and max(key[1], key[2]) >= taken - RACY_NS
    }
    text = json.dumps(everything, sort_keys=True, default=str)
    names = {str(path): name for path, name in inputs.verbatim.items()}
    inputs_stats = files["inputs"]
    shaped = {
        **everything,
        "inputs": {p: key for p, key in inputs_stats.items() if p not in names},
        "verbatim": names,
    }
    shape = json.dumps(shaped, sort_keys=True, default=str)
    return Fingerprint(
        hashlib.sha256(text.encode()).hexdigest(),
        recent,
        hashlib.sha256(shape.encode()).hexdigest(),
        {path: inputs_stats.get(path) for path in names},
        names,
    )


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


def report(record: Record) -> list[str]:
    """What a skipped build tells its user."""
    return [
        f"Image {record.image} is up to date: nothing it is built from has changed",
        f"Digest: {record.digest}",
        f"Archive: {record.archive}",
    ]


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


def remember(
    path: Path, current: Fingerprint | None, config: BuildConfig, digest: str, archive: Path
) -> None:
    """Record a finished build when its whole output is local and its base image is decided
    by local files; otherwise drop the record, so the next build runs in full."""
    from buildpacks.oci.blobs import BlobStore
    from buildpacks.oci.source import local_inputs

    store = BlobStore(config.cache_dir / "blobs")
    # Every platform's base: a new base manifest for any of them is a new image.
    bases = [
        local_inputs(
            config.base_image,
            platform,
            store,
            config.pull_policy,
            config.debian_mirror,
            config.debian_keyring,
        )
        for platform in config.platforms
    ]
    remote = config.publish or config.daemon or config.cache_image
    if current is None or any(base is None for base in bases) or remote:
        forget(path)
    else:
        watched = list(dict.fromkeys(p for base in bases for p in base or []))
        save(path, current, watched, config.image, digest, archive)


def check(path: Path, take: Callable[[], Fingerprint]) -> tuple[Fingerprint | None, Record | None]:
    """The fingerprint ``take`` gives (None when it fails: a file it cannot read, a
    configuration the builder rejects, which the full build then reports) and the record at
    ``path`` when the build it describes is up to date."""
    try:
        current = take()
    except Exception:  # any failure means a full build, which reports it
        return None, None
    return current, up_to_date(path, current)
