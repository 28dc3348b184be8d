"""The CNB project descriptor, ``project.toml`` (schema 0.2), as pack users write it:
``[_]`` (name, version, authors, licenses, URLs, ``[_.metadata]``), ``[io.buildpacks]``
``include``/``exclude`` for source applications, and ``[[io.buildpacks.build.env]]``.

Precedence: its ``BP_*`` build variables stand where the environment's would, below the real
environment and flags; a setting given both here and in ``[tool.buildpacks]`` with different
values is refused, as is a ``[_]`` name or version that contradicts the project's own."""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from buildpacks.errors import BuildError
from buildpacks.toml import read_toml

FILE = "project.toml"
SCHEMA = "0.2"
_TOP_KEYS = {
    "schema-version", "id", "name", "version", "authors", "documentation-url", "source-url",
    "licenses", "metadata",
}  # fmt: skip
# Keys of [io.buildpacks] we read, and those a pack user may have that do not apply here.
_IO_KEYS = {"include", "exclude", "build", "builder"}
_UNSUPPORTED = {
    "group": "third-party buildpacks",
    "pre": "third-party buildpacks",
    "post": "third-party buildpacks",
}


@dataclass(frozen=True, repr=False)
class Descriptor:
    """What ``project.toml`` says; empty when there is none."""

    path: Path | None = None
    id: str | None = None
    name: str | None = None
    version: str | None = None
    authors: tuple[str, ...] = ()
    licenses: tuple[str, ...] = ()  # SPDX identifiers (``type``) or URIs
    documentation_url: str | None = None
    source_url: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    build_env: dict[str, str] = field(default_factory=dict)

    def selects(self, path: str) -> bool:
        """Whether a source file (relative, ``/``-separated) belongs in the image, by the
        ``include`` or ``exclude`` patterns (gitignore-style, as pack reads them)."""
        if self.include:
            return any(_matches(pattern, path) for pattern in self.include)
        return not any(_matches(pattern, path) for pattern in self.exclude)


def _matches(pattern: str, path: str) -> bool:
    # A pattern with a leading or inner '/' is anchored at the project root; one without
    # matches a name at any depth; a match on a directory takes everything below it.
    anchored = "/" in pattern.rstrip("/")
    pattern = pattern.strip("/")
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    if anchored:
        return any(fnmatch.fnmatchcase(p, pattern) for p in prefixes)
    return any(fnmatch.fnmatchcase(name, pattern) for name in parts)


def _fail(path: Path, message: str) -> BuildError:
    return BuildError(f"{path}: {message}")


def _string(path: Path, where: str, value: Any) -> str:
    if not isinstance(value, str):
        raise _fail(path, f"{where} must be a string, not {type(value).__name__}")
    return value


def _strings(path: Path, where: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _fail(path, f"{where} must be a list of strings")
    return tuple(value)


def read_descriptor(root: Path) -> Descriptor:
    """``root/project.toml`` checked against schema 0.2; ``Descriptor()`` when absent."""
    path = root / FILE
    if not path.is_file():
        return Descriptor()
    data = read_toml(path)
    top = data.get("_")
    if top is None:
        old = ' (schema 0.1, with [project]; move it to [_] with schema-version = "0.2")'
        raise _fail(path, f"has no [_] table{old if 'project' in data else ''}")
    if not isinstance(top, dict):
        raise _fail(path, "[_] must be a table")
    schema = top.get("schema-version")
    if schema != SCHEMA:
        raise _fail(path, f'[_] schema-version must be "{SCHEMA}", not {schema!r}')
    unknown = sorted(set(top) - _TOP_KEYS)
    if unknown:
        raise _fail(path, f"unknown key(s) in [_]: {', '.join(unknown)}")
    values: dict[str, Any] = {"path": path}
    for key in ("id", "name", "version", "documentation-url", "source-url"):
        if key in top:
            values[key.replace("-", "_")] = _string(path, f"[_] {key}", top[key])
    if "authors" in top:
        values["authors"] = _strings(path, "[_] authors", top["authors"])
    licenses = []
    for i, entry in enumerate(top.get("licenses", [])):
        if not isinstance(entry, dict) or not ({"type", "uri"} & set(entry)):
            raise _fail(path, f"[[_.licenses]] entry {i + 1} must be a table with type or uri")
        licenses.append(
            _string(path, f"[[_.licenses]] entry {i + 1}", entry.get("type") or entry["uri"])
        )
    values["licenses"] = tuple(licenses)
    metadata = top.get("metadata", {})
    if not isinstance(metadata, dict):
        raise _fail(path, "[_.metadata] must be a table")
    values["metadata"] = metadata

    io = (data.get("io") or {}).get("buildpacks") or {}
    if not isinstance(io, dict):
        raise _fail(path, "[io.buildpacks] must be a table")
    for key, what in _UNSUPPORTED.items():
        if key in io:
            raise _fail(
                path, f"[io.buildpacks] {key}: {what} are not supported by python-buildpacks"
            )
    unknown = sorted(set(io) - _IO_KEYS)
    if unknown:
        raise _fail(path, f"unknown key(s) in [io.buildpacks]: {', '.join(unknown)}")
    if "include" in io and "exclude" in io:
        raise _fail(path, "[io.buildpacks] takes include or exclude, not both")
    for key in ("include", "exclude"):
        if key in io:
            values[key] = _strings(path, f"[io.buildpacks] {key}", io[key])
    build = io.get("build", {})
    if not isinstance(build, dict) or set(build) - {"env"}:
        raise _fail(path, "[io.buildpacks.build] takes only [[io.buildpacks.build.env]]")
    env: dict[str, str] = {}
    for i, entry in enumerate(build.get("env", [])):
        where = f"[[io.buildpacks.build.env]] entry {i + 1}"
        if not isinstance(entry, dict) or set(entry) != {"name", "value"}:
            raise _fail(path, f"{where} must have exactly name and value")
        env[_string(path, f"{where} name", entry["name"])] = _string(
            path, f"{where} value", entry["value"]
        )
    values["build_env"] = env
    return Descriptor(**values)


def _same_version(a: str, b: str) -> bool:
    # Imported here: only a project.toml that gives a version needs it, and every command
    # imports this module (through the configuration).
    from packaging.version import InvalidVersion, Version

    try:
        return Version(a) == Version(b)
    except InvalidVersion:
        return a == b


def apply(descriptor: Descriptor, project: Any, has_metadata: bool) -> Any:
    """The project with the descriptor's name, version and licenses: they fill what a
    project without its own metadata (``has_metadata`` false: no ``pyproject.toml``) lacks,
    and must agree with what it has."""
    if descriptor.path is None:
        return project
    from packaging.utils import canonicalize_name  # only for a project.toml (see above)

    path = descriptor.path
    changes: dict[str, Any] = {}
    if descriptor.name:
        if not has_metadata:
            changes["name"] = descriptor.name
        elif canonicalize_name(descriptor.name) != canonicalize_name(project.name):
            raise _fail(
                path,
                f"[_] name {descriptor.name!r} contradicts the project's name {project.name!r}; "
                "remove one or make them equal",
            )
    if descriptor.version:
        if not has_metadata:
            changes["version"] = descriptor.version
        elif not _same_version(descriptor.version, project.version):
            raise _fail(
                path,
                f"[_] version {descriptor.version!r} contradicts [project] version "
                f"{project.version!r}; remove one or make them equal",
            )
    license_types = [x for x in descriptor.licenses if "://" not in x]
    if license_types:
        expression = " AND ".join(license_types)
        if not project.license:
            changes["license"] = expression
        elif project.license.strip() != expression:
            raise _fail(
                path,
                f"[[_.licenses]] {expression!r} contradicts the project's license "
                f"{project.license!r}; remove one or make them equal",
            )
    return dataclasses.replace(project, **changes) if changes else project


def environment(
    descriptor: Descriptor, tool_config: Mapping[str, Any], known: Mapping[str, str]
) -> dict[str, str]:
    """The descriptor's ``BP_*`` build variables, checked: each must name a setting
    (``known``: variable → key) and must not contradict ``[tool.buildpacks]``."""
    for name, value in descriptor.build_env.items():
        if name not in known:
            raise _fail(
                descriptor.path or Path(FILE),
                f"[[io.buildpacks.build.env]] {name} is not a python-buildpacks setting; "
                f"known: {', '.join(sorted(known))}",
            )
        key = known[name]
        if key in tool_config:
            ours = tool_config[key]
            text = (
                ",".join(ours)
                if isinstance(ours, list)
                else str(ours).lower()
                if isinstance(ours, bool)
                else str(ours)
            )
            if text != value.strip():
                raise _fail(
                    descriptor.path or Path(FILE),
                    f"[[io.buildpacks.build.env]] {name} = {value!r} contradicts "
                    f"[tool.buildpacks] {key} = {ours!r} in pyproject.toml; keep one",
                )
    return dict(descriptor.build_env)
