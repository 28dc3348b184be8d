"""Reading manifests, whatever backend the blobs come from: the platform an index serves,
and an ``ImageSource`` over a manifest whose blobs a backend fetches into the store."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from buildpacks.errors import BuildError
from buildpacks.oci.blobs import BlobStore
from buildpacks.oci.model import Descriptor, Image, ImageSource, Platform


class MissingPlatform(BuildError):
    """An image index with no image for the platform asked for: the index was read, so the
    error is about the platform, not about reaching the image."""


# The variant an architecture means when none is named (containerd's normalisation).
DEFAULT_VARIANTS = {"arm64": "v8", "arm": "v7"}


def index_platforms(index: dict[str, Any]) -> list[tuple[Platform, Descriptor]]:
    """The platforms an index serves, in its order, with their manifests; entries that are
    no platform's image (``unknown/unknown``: build attestations) are left out."""
    out = []
    for entry in index.get("manifests", []):
        spec = entry.get("platform") or {}
        if spec.get("os") and spec.get("os") != "unknown" and spec.get("architecture"):
            platform = Platform(spec["os"], spec["architecture"], spec.get("variant"))
            out.append((platform, Descriptor.from_json(entry)))
    return out


def select_platform(index: dict[str, Any], platform: Platform, what: str) -> Descriptor:
    """The manifest of an index that serves ``platform``; with no variant asked for, the
    architecture's default variant (``v8`` for arm64) before any other."""
    matching = [e for e in index.get("manifests", []) if platform.matches(e.get("platform") or {})]
    if matching:
        wanted = platform.variant or DEFAULT_VARIANTS.get(platform.architecture)
        exact = [e for e in matching if (e.get("platform") or {}).get("variant") == wanted]
        return Descriptor.from_json((exact or matching)[0])
    offered = ", ".join(str(p) for p, _ in index_platforms(index)) or "none"
    raise MissingPlatform(f"{what} has no image for {platform} (it has: {offered})")


def source_from_manifest(
    manifest_bytes: bytes,
    manifest_digest: str,
    fetch: Callable[[Descriptor], None],
    store: BlobStore,
    reference: str,
    read: Callable[[Descriptor], bytes] | None = None,
) -> ImageSource:
    """An ``ImageSource`` for a manifest whose blobs ``fetch`` puts into ``store``; its
    config is read with ``read`` (checked against its digest) when given, else fetched."""
    manifest = json.loads(manifest_bytes)
    config_desc = Descriptor.from_json(manifest["config"])
    if read is None:
        fetch(config_desc)
        config = json.loads(store.path(config_desc.digest).read_bytes())
    else:
        config = json.loads(read(config_desc))

    def fetch_path(descriptor: Descriptor) -> Path:
        fetch(descriptor)
        return store.path(descriptor.digest)

    source = ImageSource(reference, manifest, manifest_digest, config, fetch_path)
    if len(source.diff_ids) != len(source.layer_descriptors):
        raise BuildError(
            f"{reference}: config lists {len(source.diff_ids)} layers, "
            f"manifest {len(source.layer_descriptors)}"
        )
    return source


def image_from_manifest(
    manifest_bytes: bytes,
    manifest_digest: str,
    fetch: Callable[[Descriptor], None],
    store: BlobStore,
    reference: str,
) -> Image:
    """An ``Image`` from a manifest, every blob fetched into ``store``."""
    return source_from_manifest(manifest_bytes, manifest_digest, fetch, store, reference).image()
