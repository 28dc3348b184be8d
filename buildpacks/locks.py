"""Lock files, read into the requirements the dependencies layer installs.

Preference when several exist: ``uv.lock``, ``pylock.toml`` (PEP 751), ``poetry.lock``,
``requirements.txt``, ``Pipfile.lock``. Markers are evaluated for the *image* (its Python, its
machine, the selected extras and dependency groups), never for the host. The result is a
requirements text with pins and hashes; uv verifies the hashes when it installs.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from packaging.markers import InvalidMarker, Marker
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from buildpacks.errors import BuildError
from buildpacks.oci.blobs import write_atomic
from buildpacks.toml import read_toml

LOCK_FILES = ("uv.lock", "pylock.toml", "poetry.lock", "requirements.txt", "Pipfile.lock")


@functools.cache
def uv_version() -> str:
    """The version of the uv distribution whose package is imported here, read from its
    ``.dist-info`` beside the package: ``importlib.metadata`` would find the same, but its
    import and its search of ``sys.path`` cost every warm build tens of milliseconds."""
    import uv

    found = list(Path(uv.__file__).parent.parent.glob("uv-*.dist-info/METADATA"))
    if len(found) == 1:
        for line in found[0].read_text(encoding="utf-8").splitlines():
            if line.startswith("Version:"):
                return line.removeprefix("Version:").strip()
    import importlib.metadata  # an unusual installation: let it search

    return importlib.metadata.version("uv")


@dataclass(eq=False, repr=False)
class Target:
    """What markers are evaluated against: the image, not the machine that builds it."""

    python_version: str  # X.Y.Z (or X.Y)
    machine: str  # x86_64, aarch64
    extras: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()

    def environment(self) -> dict[str, Any]:
        minor = ".".join(self.python_version.split(".")[:2])
        full = self.python_version if self.python_version.count(".") >= 2 else f"{minor}.0"
        return {
            "implementation_name": "cpython",
            "implementation_version": full,
            "os_name": "posix",
            "platform_machine": self.machine,
            "platform_python_implementation": "CPython",
            "platform_release": "",
            "platform_system": "Linux",
            "platform_version": "",
            "python_full_version": full,
            "python_version": minor,
            "sys_platform": "linux",
            "extra": "",
            "extras": set(self.extras),
            "dependency_groups": set(self.groups),
        }

    def applies(self, marker: str | None, where: str) -> bool:
        if not marker:
            return True
        try:
            return Marker(marker).evaluate(self.environment())
        except InvalidMarker as e:
            raise BuildError(f"{where}: invalid marker {marker!r} ({e})") from None


@dataclass(eq=False, repr=False)
class Locked:
    """Requirements from a lock file: ``complete`` means every dependency is pinned in it,
    so the installer must not resolve anything more."""

    source: str  # the lock file's name
    text: str  # requirements.txt syntax
    complete: bool
    unpinned: tuple[str, ...] = ()  # names of requirements not pinned to one version
    names: tuple[str, ...] = ()  # of the requirements listed (requirements.txt)


def pinned(requirement: Requirement) -> bool:
    """Whether ``requirement`` names exactly one version (``==X`` without ``*``, ``===X``)."""
    specs = list(requirement.specifier)
    return len(specs) == 1 and (
        specs[0].operator == "===" or (specs[0].operator == "==" and "*" not in specs[0].version)
    )


_SELF_INSTALL = re.compile(r"^\s*(?:(?:-e|--editable)\s+)?\.(?:/)?(?:\[[^\]]*\])?\s*(?:#.*)?$")


def installs_itself(path: Path) -> bool:
    """Whether a requirements file installs the project it sits in (``-e .``, ``.[all]``):
    a developer's setup file then, not a lock of what the image runs."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return False
    return any(_SELF_INSTALL.match(line) for line in lines)


def find_lock(root: Path) -> Path | None:
    """The preferred lock file of a project, if it has one. A ``requirements.txt`` that
    installs the project itself is not one: the project's metadata says what it needs."""
    return next(
        (
            root / name
            for name in LOCK_FILES
            if (root / name).is_file()
            and not (name == "requirements.txt" and installs_itself(root / name))
        ),
        None,
    )


def _line(name: str, version: str, hashes: Iterable[str]) -> str:
    parts = [f"{name}=={version}", *(f"--hash={h}" for h in sorted(set(hashes)))]
    return " \\\n    ".join(parts)


def read_uv_lock(path: Path, target: Target) -> Locked:
    """uv's own export turns the lock graph into pinned, hashed requirements."""
    from uv import find_uv_bin

    read_toml(path)  # a malformed lock is reported by us, with its line
    command = [
        find_uv_bin(),
        "export",
        "--frozen",
        "--format",
        "requirements-txt",
        "--no-emit-project",
        "--no-emit-workspace",
        "--no-header",
        "--no-default-groups",
        "--project",
        str(path.parent),
        *(f"--extra={e}" for e in sorted(target.extras)),
        *(f"--group={g}" for g in sorted(target.groups)),
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        reason = " ".join(result.stderr.strip().splitlines()[-2:])
        raise BuildError(f"{path}: uv cannot export it: {reason}")
    lines = [line for line in result.stdout.splitlines() if not line.lstrip().startswith("-e ")]
    return Locked(path.name, "\n".join(lines) + "\n", complete=True)


@dataclass(eq=False, repr=False)
class LockFiles:
    """The files ``uv.lock`` lists for one locked version, and the index they come from."""

    files: tuple[str, ...]  # wheel and sdist file names
    index: str | None  # the registry of the package's ``source``


def uv_lock_files(path: Path) -> dict[tuple[str, str], LockFiles]:
    """The wheel and sdist file names ``uv.lock`` records for each package from a registry,
    by canonical name and version (packages from a path or git have none to check)."""
    files = {}
    for package in read_toml(path).get("package", []):
        source = package.get("source") or {}
        if "registry" not in source or "name" not in package or "version" not in package:
            continue
        artifacts = [
            *package.get("wheels", []),
            *([package["sdist"]] if "sdist" in package else []),
        ]
        names = tuple(
            unquote(str(a.get("filename") or a.get("url") or a.get("path")).rsplit("/", 1)[-1])
            for a in artifacts
            if a.get("filename") or a.get("url") or a.get("path")
        )
        registry = str(source["registry"])
        index = registry if registry.startswith(("http://", "https://")) else None
        key = (canonicalize_name(package["name"]), str(package["version"]))
        files[key] = LockFiles(names, index)
    return files


def read_pylock(path: Path, target: Target) -> Locked:
    """PEP 751: every package with its marker (extras and groups included) and hashes."""
    data = read_toml(path)
    if str(data.get("lock-version", "")).split(".")[0] != "1":
        raise BuildError(
            f"{path}: lock-version {data.get('lock-version')!r} is not supported (1.x)"
        )
    lines = []
    for i, package in enumerate(data.get("packages", []), 1):
        where = f"{path}: packages[{i}]"
        if "name" not in package or "version" not in package:
            raise BuildError(f"{where}: needs a name and a version")
        if not target.applies(package.get("marker"), where):
            continue
        hashes = [
            f"{algo}:{value}"
            for artifact in [*package.get("wheels", []), package.get("sdist") or {}]
            for algo, value in (artifact.get("hashes") or {}).items()
        ]
        lines.append(_line(package["name"], str(package["version"]), hashes))
    return Locked(path.name, "\n".join(lines) + "\n", complete=True)


def read_poetry_lock(path: Path, target: Target) -> Locked:
    """poetry.lock 1.x (``category``) and 2.x (``groups`` and ``markers``)."""
    data = read_toml(path)
    extras_table = data.get("extras") or {}
    wanted_optional = {canonicalize_name(n) for e in target.extras for n in extras_table.get(e, [])}
    wanted_groups = {"main", *target.groups}
    lines = []
    for i, package in enumerate(data.get("package", []), 1):
        where = f"{path}: package[{i}]"
        if "name" not in package or "version" not in package:
            raise BuildError(f"{where}: needs a name and a version")
        groups = set(package.get("groups") or [package.get("category", "main")])
        if not groups & wanted_groups:
            continue
        if package.get("optional") and canonicalize_name(package["name"]) not in wanted_optional:
            continue
        markers = package.get("markers")
        if isinstance(markers, dict):
            if not any(target.applies(m, where) for g, m in markers.items() if g in wanted_groups):
                continue
        elif not target.applies(markers, where):
            continue
        hashes = [f["hash"] for f in package.get("files", []) if f.get("hash")]
        lines.append(_line(package["name"], package["version"], hashes))
    return Locked(path.name, "\n".join(lines) + "\n", complete=True)


def read_pipfile_lock(path: Path, target: Target) -> Locked:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise BuildError(f"{path}: line {e.lineno}: invalid JSON ({e.msg})") from None
    sections = ["default", *(["develop"] if {"dev", "develop"} & target.groups else [])]
    lines = []
    for section in sections:
        for name, entry in sorted((data.get(section) or {}).items()):
            where = f"{path}: {section}.{name}"
            version = str(entry.get("version", ""))
            if not version.startswith("=="):
                raise BuildError(
                    f"{where}: only pinned versions (==) can be installed, got {entry!r}"
                )
            if target.applies(entry.get("markers"), where):
                lines.append(_line(name, version[2:], entry.get("hashes", [])))
    return Locked(path.name, "\n".join(lines) + "\n", complete=True)


def read_requirements(path: Path, target: Target) -> Locked:
    """requirements.txt, checked line by line; hashes are kept for uv to verify."""
    lines = path.read_text(encoding="utf-8").splitlines()
    logical: list[tuple[int, str]] = []
    pending, start = "", 0
    for number, raw in enumerate(lines, 1):
        text = re.sub(r"(^|\s)#.*$", "", raw).rstrip()
        if not pending:
            start = number
        if text.endswith("\\"):
            pending += text[:-1] + " "
            continue
        logical.append((start, pending + text))
        pending = ""
    kept = []
    unpinned = []
    names = []
    for number, text in logical:
        stripped = text.strip()
        if not stripped:
            continue
        if stripped.startswith("-"):
            option = stripped.split()[0]
            if option in ("-r", "--requirement", "-c", "--constraint", "-e", "--editable"):
                raise BuildError(
                    f"{path}: line {number}: {option} is not supported in an image build"
                )
            kept.append(stripped)  # index options and the like, for uv
            continue
        requirement_text = re.split(r"\s--hash[ =]", stripped)[0]
        try:
            requirement = Requirement(requirement_text)
        except InvalidRequirement as e:
            raise BuildError(
                f"{path}: line {number}: invalid requirement {requirement_text!r} ({e})"
            ) from None
        if requirement.url:
            raise BuildError(f"{path}: line {number}: direct URL requirements are not supported")
        if target.applies(
            str(requirement.marker) if requirement.marker else None, f"{path}: line {number}"
        ):
            kept.append(stripped)
            names.append(requirement.name)
            if not pinned(requirement):
                unpinned.append(requirement.name)
    text = "\n".join(kept) + "\n"
    return Locked(path.name, text, complete=False, unpinned=tuple(unpinned), names=tuple(names))


READERS = {
    "uv.lock": read_uv_lock,
    "pylock.toml": read_pylock,
    "poetry.lock": read_poetry_lock,
    "requirements.txt": read_requirements,
    "Pipfile.lock": read_pipfile_lock,
}


def read_lock(path: Path, target: Target, cache_dir: Path | None = None) -> Locked:
    """The requirements a lock file pins for ``target``. With ``cache_dir``, the result of
    ``uv export`` (a process start, tens of milliseconds) is kept by its inputs."""
    if path.name != "uv.lock" or cache_dir is None:
        return READERS[path.name](path, target)
    from buildpacks.builtin import code_key  # the one key of the code behind cached things

    pyproject = path.parent / "pyproject.toml"
    inputs = [
        path.read_bytes(),
        pyproject.read_bytes() if pyproject.exists() else b"",
        repr((sorted(target.extras), sorted(target.groups))).encode(),
        uv_version().encode(),
        code_key(__name__).encode(),  # a change to the reader gives a new record
    ]
    key = hashlib.sha256(b"\0".join(inputs)).hexdigest()
    record = cache_dir / "uv-export" / f"{key}.txt"
    if record.is_file():
        return Locked(path.name, record.read_text(), complete=True)
    locked = read_uv_lock(path, target)
    write_atomic(record, locked.text)
    return locked
