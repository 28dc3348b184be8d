"""The CNB image labels as typed data: the lifecycle's ``platform/files`` structs
(``LayersMetadata``, ``BuildMetadata``, ``ProjectMetadata``) and ours (runtime, cache), with
their JSON names as in the Go tags, encoded and decoded here only.

Encoding follows Go's ``encoding/json`` for platform API 0.13: fields in struct order,
``omitempty`` fields left out when empty, every other field always written. Decoding is as
strict as Go about types (a string where a list belongs is an error) and, with ``strict``,
also refuses unknown fields and missing fields that Go always writes; without it, unknown
fields are ignored and missing ones take their zero value, as Go does, so images written by
other platforms (pack, older versions of ours) are read.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from buildpacks.errors import BuildError
from buildpacks.oci.reference import DOCKER_HUB, Reference
from buildpacks.oci.source import TRANSPORTS, split_layout_spec

LIFECYCLE = "io.buildpacks.lifecycle.metadata"
BUILD = "io.buildpacks.build.metadata"
PROJECT = "io.buildpacks.project.metadata"
RUNTIME = "io.python-buildpacks.runtime"
CACHE = "io.python-buildpacks.cache"
PLATFORM_API = "0.13"
# What every built-in buildpack says its homepage is (GroupElement.homepage).
HOMEPAGE = "https://example.invalid/python-buildpacks"  # our [project.urls] Source
# Where the lifecycle's own layers go; the exporter names a layer's role by its path.
CONFIG_DIR = "/layers/config"
LAUNCHER_DIR = "/cnb/lifecycle"
ROLE_PATHS = (CONFIG_DIR, LAUNCHER_DIR)

T = TypeVar("T")


# The label classes are plain dataclasses with ``==`` (decoded labels are compared) and no
# generated repr or immutability: every build makes all of them at import, and on Python
# 3.11 each generated method costs an ``exec`` (a frozen one six). Nothing mutates a label
# once made; defaults that are themselves labels are made per instance.


def _go(name: str, omitempty: bool = False) -> dict[str, Any]:
    """A field's JSON name and whether it is ``omitempty``, as in its Go tag."""
    return {"json": name, "omitempty": omitempty}


# --- io.buildpacks.lifecycle.metadata (files.LayersMetadata) ---------------------------


@dataclass(repr=False)
class LayerMetadata:
    """``files.LayerMetadata``: one layer by its diff ID."""

    sha: str = field(default="", metadata=_go("sha"))


@dataclass(repr=False)
class BuildpackLayer:
    """``buildpack.LayerMetadata``: a buildpack's layer, its diff ID and ``<layer>.toml``."""

    sha: str = field(default="", metadata=_go("sha"))
    data: Any = field(default=None, metadata=_go("data"))
    build: bool = field(default=False, metadata=_go("build"))
    launch: bool = field(default=False, metadata=_go("launch"))
    cache: bool = field(default=False, metadata=_go("cache"))


@dataclass(repr=False)
class BuildpackLayers:
    """``buildpack.LayersMetadata``: the layers one buildpack contributed, by name."""

    key: str = field(default="", metadata=_go("key"))
    version: str = field(default="", metadata=_go("version"))
    layers: dict[str, BuildpackLayer] = field(default_factory=dict, metadata=_go("layers"))
    store: dict[str, Any] | None = field(default=None, metadata=_go("store", omitempty=True))


@dataclass(repr=False)
class RunImageForExport:
    """``files.RunImageForExport``: the run image's name and mirrors."""

    image: str = field(default="", metadata=_go("image", omitempty=True))
    mirrors: list[str] = field(default_factory=list, metadata=_go("mirrors", omitempty=True))


@dataclass(repr=False)
class RunImageForRebase:
    """``files.RunImageForRebase`` (``RunImageForExport`` embedded, so its fields inline)."""

    top_layer: str = field(default="", metadata=_go("topLayer"))
    reference: str = field(default="", metadata=_go("reference"))
    image: str = field(default="", metadata=_go("image", omitempty=True))
    mirrors: list[str] = field(default_factory=list, metadata=_go("mirrors", omitempty=True))

    def to_stack(self) -> Stack:
        return Stack(RunImageForExport(self.image, list(self.mirrors)))


@dataclass(repr=False)
class Stack:
    """``files.Stack``: where pack before 0.30 and platform APIs before 0.12 look for the run
    image's name."""

    run_image: RunImageForExport = field(
        default_factory=RunImageForExport, metadata=_go("runImage")
    )


@dataclass(repr=False)
class LayersMetadata:
    """``files.LayersMetadata``, the ``io.buildpacks.lifecycle.metadata`` label."""

    app: list[LayerMetadata] = field(default_factory=list, metadata=_go("app"))
    sbom: LayerMetadata | None = field(default=None, metadata=_go("sbom", omitempty=True))
    buildpacks: list[BuildpackLayers] = field(default_factory=list, metadata=_go("buildpacks"))
    config: LayerMetadata = field(default_factory=LayerMetadata, metadata=_go("config"))
    launcher: LayerMetadata = field(default_factory=LayerMetadata, metadata=_go("launcher"))
    process_types: LayerMetadata = field(
        default_factory=LayerMetadata, metadata=_go("process-types")
    )
    run_image: RunImageForRebase = field(
        default_factory=RunImageForRebase, metadata=_go("runImage")
    )
    stack: Stack | None = field(default=None, metadata=_go("stack", omitempty=True))


# --- io.buildpacks.build.metadata (files.BuildMetadata, platform API >= 0.9) -------------


@dataclass(repr=False)
class GroupElement:
    """``buildpack.GroupElement`` as the build metadata label shows it."""

    id: str = field(default="", metadata=_go("id"))
    version: str = field(default="", metadata=_go("version"))
    homepage: str = field(default="", metadata=_go("homepage", omitempty=True))
    optional: bool = field(default=False, metadata=_go("optional", omitempty=True))


@dataclass(repr=False)
class Process:
    """``launch.Process`` (Buildpack API >= 0.9, platform API >= 0.10): ``command`` is a
    list (a lone string is read too, as older platforms wrote it), ``args`` are the default
    arguments the user's replace. The lifecycle writes ``default`` as false and names the
    default in ``BuildMetadata.buildpack_default_process_type``."""

    type: str = field(default="", metadata=_go("type"))
    command: tuple[str, ...] = field(default=(), metadata=_go("command"))
    args: list[str] = field(default_factory=list, metadata=_go("args"))
    direct: bool = field(default=False, metadata=_go("direct"))
    default: bool = field(default=False, metadata=_go("default", omitempty=True))
    buildpack_id: str = field(default="", metadata=_go("buildpackID"))
    working_dir: str = field(default="", metadata=_go("working-dir", omitempty=True))
    exec_env: list[str] = field(default_factory=list, metadata=_go("exec-env", omitempty=True))


@dataclass(repr=False)
class GitMetadata:
    """``files.GitMetadata``: the launcher's source repository and commit."""

    repository: str = field(default="", metadata=_go("repository"))
    commit: str = field(default="", metadata=_go("commit"))


@dataclass(repr=False)
class SourceMetadata:
    """``files.SourceMetadata``: where the launcher was built from."""

    git: GitMetadata = field(default_factory=GitMetadata, metadata=_go("git"))


@dataclass(repr=False)
class LauncherMetadata:
    """``files.LauncherMetadata``: the launcher binary's version and source. Our images have
    no launcher, so this is Go's zero value; a version is never invented, because pack's
    ``inspect`` hides the run image reference for launchers older than 0.5.0."""

    version: str = field(default="", metadata=_go("version"))
    source: SourceMetadata = field(default_factory=SourceMetadata, metadata=_go("source"))


@dataclass(repr=False)
class BuildMetadata:
    """``files.BuildMetadata``, the ``io.buildpacks.build.metadata`` label; ``bom`` is left
    out from platform API 0.9 (the SBOM is a layer)."""

    bom: list[Any] = field(default_factory=list, metadata=_go("bom", omitempty=True))
    buildpacks: list[GroupElement] = field(default_factory=list, metadata=_go("buildpacks"))
    extensions: list[GroupElement] = field(
        default_factory=list, metadata=_go("extensions", omitempty=True)
    )
    launcher: LauncherMetadata = field(default_factory=LauncherMetadata, metadata=_go("launcher"))
    processes: list[Process] = field(default_factory=list, metadata=_go("processes"))
    buildpack_default_process_type: str = field(
        default="", metadata=_go("buildpack-default-process-type", omitempty=True)
    )

    def default_process(self) -> Process | None:
        """The default process: named by the metadata, or marked (older platforms)."""
        wanted = self.buildpack_default_process_type
        return next(
            (p for p in self.processes if (p.type == wanted if wanted else p.default)), None
        )


# --- io.buildpacks.project.metadata (files.ProjectMetadata) ------------------------------


@dataclass(repr=False)
class ProjectSource:
    """``files.ProjectSource``; for git, pack writes ``version`` {commit, describe} and
    ``metadata`` {refs, url}."""

    type: str = field(default="", metadata=_go("type", omitempty=True))
    version: dict[str, Any] = field(default_factory=dict, metadata=_go("version", omitempty=True))
    metadata: dict[str, Any] = field(default_factory=dict, metadata=_go("metadata", omitempty=True))


@dataclass(repr=False)
class ProjectMetadata:
    """``files.ProjectMetadata``: ``{}`` when the project is in no version control."""

    source: ProjectSource | None = field(default=None, metadata=_go("source", omitempty=True))


# --- our own labels ------------------------------------------------------------------------


@dataclass(repr=False)
class RuntimeMetadata:
    """``io.python-buildpacks.runtime``: the interpreter the image's venv runs on."""

    python: str = field(default="", metadata=_go("python"))
    version: str = field(default="", metadata=_go("version"))
    interpreter: str = field(default="", metadata=_go("interpreter"))


@dataclass(repr=False)
class CachedLayer:
    """One layer of a cache image: its cache key, diff ID and the data recorded with it."""

    key: str = field(default="", metadata=_go("key"))
    diff_id: str = field(default="", metadata=_go("diffId"))
    extra: dict[str, Any] = field(default_factory=dict, metadata=_go("extra"))


@dataclass(repr=False)
class CacheMetadata:
    """``io.python-buildpacks.cache`` of a cache image: its layers by cache key."""

    layers: list[CachedLayer] = field(default_factory=list, metadata=_go("layers"))


# --- encoding and decoding -----------------------------------------------------------------


def _empty(value: Any) -> bool:
    # Go's omitempty: false, 0, "", nil and empty collections; a struct is never empty.
    if dataclasses.is_dataclass(value):
        return False
    return value is None or value is False or value == 0 or value in ("", (), [], {})


def to_json(value: Any) -> Any:
    """Plain JSON data of a label dataclass, as Go's ``json.Marshal`` writes it."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(value):
            item = getattr(value, f.name)
            if f.metadata["omitempty"] and _empty(item):
                continue
            out[f.metadata["json"]] = to_json(item)
        return out
    if isinstance(value, dict):
        return {k: to_json(value[k]) for k in sorted(value)}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    return value


def encode(value: Any) -> str:
    """The label text of a label dataclass: compact JSON, fields in struct order."""
    return json.dumps(to_json(value), separators=(",", ":"), ensure_ascii=False)


def _type_name(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean"}.get(
        type(value), "number" if isinstance(value, (int, float)) else "null"
    )


def _decode(hint: Any, value: Any, where: str, strict: bool) -> Any:
    origin = typing.get_origin(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        inner = next(a for a in typing.get_args(hint) if a is not type(None))
        return None if value is None else _decode(inner, value, where, strict)
    if value is None:
        # Go leaves the zero value for null
        if dataclasses.is_dataclass(hint):
            return _decode(hint, {}, where, False)
        return {str: "", bool: False, int: 0}.get(hint, origin() if origin else None)
    if dataclasses.is_dataclass(hint):
        return decode_json(hint, value, where, strict)
    if origin is tuple:  # launch.RawCommand: a list, or one string
        if isinstance(value, str):
            return (value,)
        return tuple(_decode(list[str], value, where, strict))
    if origin is list:
        if not isinstance(value, list):
            raise ValueError(f"{where} must be an array, not {_type_name(value)}")
        (item,) = typing.get_args(hint)
        return [_decode(item, v, f"{where}[{i}]", strict) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{where} must be an object, not {_type_name(value)}")
        item = typing.get_args(hint)[1]
        return {k: _decode(item, v, f"{where}.{k}", strict) for k, v in value.items()}
    expected = {str: "string", bool: "boolean", int: "number"}[hint]
    if _type_name(value) != expected or (hint is int and isinstance(value, float)):
        raise ValueError(f"{where} must be a {expected}, not {_type_name(value)}")
    return value


def decode_json(cls: type[T], data: Any, where: str = "", strict: bool = False) -> T:
    """A label dataclass from plain JSON data; ``ValueError`` naming the field when the data
    does not fit (see the module's docstring for ``strict``)."""
    if not isinstance(data, dict):
        raise ValueError(f"{where or 'the label'} must be an object, not {_type_name(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.metadata["json"]: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    if strict:
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise ValueError(f"{where or 'the label'} has unknown field(s) {', '.join(unknown)}")
    values = {}
    for name, f in fields.items():
        path = f"{where}.{name}" if where else name
        if name not in data:
            if strict and not f.metadata["omitempty"]:
                raise ValueError(f"{path} is missing")
            continue
        values[f.name] = _decode(hints[f.name], data[name], path, strict)
    return cls(**values)


def decode(cls: type[T], text: str, strict: bool = False) -> T:
    """A label dataclass from its label text; ``ValueError`` when it is not JSON or does not
    fit."""
    try:
        data = json.loads(text)
    except ValueError as e:
        raise ValueError(f"not JSON ({e})") from None
    return decode_json(cls, data, "", strict)


def read_label(labels: dict[str, str], key: str, cls: type[T], image: str) -> T | None:
    """The label ``key`` of an image decoded as ``cls``; None when absent; a ``BuildError``
    naming image, label and field when it is malformed."""
    if key not in labels:
        return None
    try:
        return decode(cls, labels[key])
    except ValueError as e:
        raise BuildError(f"{image}: label {key}: {e}") from None


def image_labels(config: dict[str, Any]) -> dict[str, str]:
    """The labels of an image config."""
    return (config.get("config") or {}).get("Labels") or {}


# --- values the lifecycle derives ----------------------------------------------------------


def run_image_name(spec: str) -> str:
    """The run image's name for ``runImage.image``: the registry reference as given, or for
    a local base the name it would be loaded under (``oci-layout:DIR/debian:bookworm`` →
    ``debian:bookworm``; an archive's file name without ``.tar``), never a host path; an
    assembled base its recipe (``debian-packages:bookworm``), which names no path either."""
    if spec.startswith("debian-packages:"):
        return spec
    if spec.startswith("oci-layout:"):
        path, tag = split_layout_spec(spec.removeprefix("oci-layout:"))
        return path.name + (f":{tag}" if tag else "")
    for transport in TRANSPORTS:
        if spec.startswith(transport):
            return Path(spec.removeprefix(transport)).name.removesuffix(".tar")
    return spec


def run_image_for_rebase(spec: str, top_layer: str, digest: str) -> RunImageForRebase:
    """The ``runImage`` block for the run image ``spec`` whose manifest is ``digest``:
    ``reference`` as the lifecycle writes it for a registry image (go-containerregistry's
    ``repository@digest``, Docker Hub as ``index.docker.io``); a local base's name stands in
    for the repository."""
    name = run_image_name(spec)
    if name != spec or spec.startswith(TRANSPORTS):
        return RunImageForRebase(top_layer, f"{name.rsplit(':', 1)[0]}@{digest}", name)
    ref = Reference.parse(name)
    registry = "index.docker.io" if ref.registry == DOCKER_HUB else ref.registry
    return RunImageForRebase(top_layer, f"{registry}/{ref.repository}@{digest}", name)
