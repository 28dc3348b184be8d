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


def select_platform(index: dict[str, Any], platform: Platform, what: str) -> Descriptor:
    """The manifest of an index that serves ``platform``."""
    offered = []
    for entry in index.get("manifests", []):
        spec = entry.get("platform") or {}
        if platform.matches(spec):
            return Descriptor.from_json(entry)
        if spec.get("os") and spec.get("os") != "unknown":
            offered.append(
                "/".join(
                    filter(None, (spec.get("os"), spec.get("architecture"), spec.get("variant")))
                )
            )
    raise BuildError(f"{what} has no image for {platform} (it has: {', '.join(offered) or 'none'})")


def source_from_manifest(
    manifest_bytes: bytes,
    manifest_digest: str,
    fetch: Callable[[Descriptor], None],
    store: BlobStore,
    reference: str,
) -> ImageSource:
    """An ``ImageSource`` for a manifest whose blobs ``fetch`` puts into ``store``."""
    manifest = json.loads(manifest_bytes)
    config_desc = Descriptor.from_json(manifest["config"])
    fetch(config_desc)
    config = json.loads(store.path(config_desc.digest).read_bytes())

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
