"""Our buildpacks, one module each, and the small contract they share with the lifecycle.

A buildpack ``detect``s whether it applies to a project and ``build``s layers; the lifecycle
runs them in ``ORDER``. Data moves forward only: what the runtime buildpack learns about the
run image is handed to the later ones through ``BuildContext.runtime``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from buildpacks import __version__
from buildpacks.config import BuildConfig
from buildpacks.errors import BuildError
from buildpacks.oci.blobs import BlobStore, write_atomic
from buildpacks.oci.layer import MemoryTree, memory_digest, write_layer
from buildpacks.oci.model import Descriptor, Image, Layer
from buildpacks.sbom import Package

LAYERS_ROOT = "/layers"
WORKSPACE = "/workspace"
# The non-root user the image runs as, numeric (no passwd entry needed in the base), as CNB
# images' build user: it owns the trees the application writes to at run time.
IMAGE_USER = (1000, 1000)


def layer_path(buildpack_id: str, name: str) -> str:
    """Where a buildpack's layer lives in the image, as in the CNB spec (``/`` escaped)."""
    return f"{LAYERS_ROOT}/{buildpack_id.replace('/', '_')}/{name}"


@dataclass(eq=False, repr=False)
class Runtime:
    """The Python interpreter of the run image, as found in its layers."""

    interpreter: str  # absolute path in the image, e.g. /usr/local/bin/python3.12
    version: str  # X.Y.Z when known, else X.Y
    minor: str  # X.Y
    wheel_platform: str  # uv's --python-platform, e.g. x86_64-manylinux_2_36


@dataclass(eq=False, repr=False)
class Process:
    """A CNB process type: what ``podman run`` starts for it."""

    type: str
    command: tuple[str, ...]
    default: bool = False
    direct: bool = True  # False: a shell command, run by /bin/sh -c


@dataclass(eq=False, repr=False)
class LayerResult:
    """One layer a buildpack contributed, and whether it came from the cache."""

    buildpack: str
    name: str
    path: str
    layer: Layer
    cached: bool
    key: str = ""  # the hash of the layer's inputs, when it is cacheable
    extra: dict[str, Any] = field(default_factory=dict)  # data recorded with it (e.g. packages)


@dataclass(eq=False, repr=False)
class BuildContext:
    """What buildpacks read during ``build``; each run gets a fresh one."""

    config: BuildConfig
    wheel: Path | None  # None: an application without a wheel, its source copied as it is
    run_image: Image
    store: BlobStore
    scratch: Callable[[], Path]  # the build's scratch directory, made on first call
    log: Callable[[str], None]
    runtime: Runtime | None = None
    env: dict[str, str] = field(default_factory=dict)
    path_entries: list[str] = field(default_factory=list)
    processes: list[Process] = field(default_factory=list)
    layers: list[LayerResult] = field(default_factory=list)
    packages: list[Package] = field(default_factory=list)  # for the SBOM
    # Layers of a previous image or cache image, by cache key; fetched only if used.
    reusable: dict[str, Callable[[], tuple[Layer, dict[str, Any]]]] = field(default_factory=dict)
    # The wheel-gap check of every platform of the build at once, run by the first platform
    # whose dependencies are installed (so never on a warm build); None: this platform's.
    wheel_check: Callable[[], None] | None = None

    def need_runtime(self) -> Runtime:
        if self.runtime is None:
            raise RuntimeError("the runtime buildpack must run before this one")
        return self.runtime


class Buildpack(Protocol):
    id: str
    version: str

    def detect(self, config: BuildConfig) -> bool: ...

    def build(self, ctx: BuildContext) -> None: ...


# Modules whose code shapes every cached layer: this one (records, reuse) and the writer of
# reproducible layers. ``code_key`` adds them to the modules a key names.
_LAYER_CODE = ("buildpacks.builtin", "buildpacks.oci.layer")


@functools.cache
def code_key(*modules: str) -> str:
    """The part of a cache key that stands for the code producing a cached layer or fact:
    python-buildpacks' version and a digest of the source of ``modules`` (dotted names of
    imported modules) and of the layer-writing modules. Editing any of them, or installing
    another release, gives new keys: nothing made by other code is reused, and no version
    constant needs bumping. Computed once per process (a few small files)."""
    h = hashlib.sha256()
    for name in sorted({*modules, *_LAYER_CODE}):
        code = Path(sys.modules[name].__file__ or "").read_bytes()
        h.update(f"{name}\0{len(code)}\0".encode() + code)
    return f"{__version__}+{h.hexdigest()[:32]}"


def cache_key(parts: dict[str, Any]) -> str:
    """A stable hash of a layer's inputs; ``parts`` names its code with ``code_key``."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def cached_layer(ctx: BuildContext, key: str) -> tuple[Layer, dict[str, Any]] | None:
    """The layer cached under ``key`` and the data recorded with it, if record and blob are
    intact. A blob whose content no longer matches its digest is deleted, never trusted.
    None with ``clear-cache``: the layer is built again and its record replaced."""
    if ctx.config.clear_cache:
        return None
    record = ctx.config.cache_dir / "layers" / f"{key}.json"
    try:
        data = json.loads(record.read_text())
        descriptor = Descriptor.from_json(data["descriptor"])
        present = ctx.store.path(descriptor.digest).is_file()
        if not ctx.store.has(descriptor.digest):
            state = "corrupt" if present else "missing"
            ctx.log(f"Cached layer {descriptor.digest[:19]} is {state}: rebuilding it")
            record.unlink(missing_ok=True)
            return None
        path = ctx.store.path(descriptor.digest)
        return Layer(descriptor, data["diff_id"], path), data.get("extra", {})
    except (OSError, ValueError, KeyError, TypeError):
        return None


def reuse_or_build(
    ctx: BuildContext,
    buildpack: str,
    name: str,
    path: str,
    key: str,
    build: Callable[[], tuple[Layer, dict[str, Any]]],
) -> LayerResult:
    """The layer for ``key``: from the local cache, else from a previous image or the cache
    image (restored), else built; recorded in the local cache and added to ``ctx.layers``."""
    if ctx.config.layer_compression != "gzip":
        # The same content compressed otherwise is another blob. (gzip keeps the keys it
        # always had, so existing caches stay valid.)
        key = cache_key({"layer": key, "compression": ctx.config.layer_compression})
    hit = cached_layer(ctx, key)
    cached = hit is not None
    if hit is None and key in ctx.reusable:
        try:
            hit = ctx.reusable[key]()
        except BuildError as e:  # e.g. a damaged blob in the previous archive: not reused
            ctx.log(f"Previous image's {buildpack} {name} layer is unusable ({e}): rebuilding it")
        else:
            ctx.log(f"Restored {buildpack} {name} layer {hit[0].digest[:19]} from a previous image")
            remember_layer(ctx, key, *hit)
            cached = True
    if hit is None:
        hit = build()
        remember_layer(ctx, key, *hit)
    result = LayerResult(buildpack, name, path, hit[0], cached, key, hit[1])
    ctx.layers.append(result)
    return result


def memory_layer(ctx: BuildContext, trees: list[MemoryTree]) -> Layer:
    """The layer ``trees`` (held in memory) make with the build's date and compression,
    reused from the local cache when the same trees made one before: keyed by their
    content, so a warm build's launch layers (the same processes, the same buildpacks) are
    the last build's, and no blob is written (a temp file, a rename and a stamp each)."""
    config = ctx.config
    key = cache_key(
        {
            "code": code_key(),  # the layer writer's
            "trees": memory_digest(trees),
            "mtime": config.source_date_epoch,
            "compression": config.layer_compression,
        }
    )
    cached = cached_layer(ctx, key)
    if cached is not None:
        return cached[0]
    layer = write_layer(
        ctx.store, trees, mtime=config.source_date_epoch, compression=config.layer_compression
    )
    remember_layer(ctx, key, layer)
    return layer


def remember_layer(
    ctx: BuildContext, key: str, layer: Layer, extra: dict[str, Any] | None = None
) -> None:
    """Record a built layer under ``key``; written atomically so a crash leaves no half record."""
    record = {
        "descriptor": layer.descriptor.to_json(),
        "diff_id": layer.diff_id,
        "extra": extra or {},
    }
    write_atomic(ctx.config.cache_dir / "layers" / f"{key}.json", json.dumps(record))
