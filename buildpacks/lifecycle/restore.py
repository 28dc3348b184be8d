"""restore: offer the layers of previous images (the last archive in dist/, the published
image, the cache image) to the buildpacks, by cache key. A layer's blob is fetched only if a
buildpack asks for its key, so nothing is downloaded for layers that will be rebuilt."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

from buildpacks import cnb
from buildpacks.config import BuildConfig
from buildpacks.errors import BuildError
from buildpacks.lifecycle.analyze import registry_options
from buildpacks.oci.blobs import BlobStore
from buildpacks.oci.model import Layer
from buildpacks.oci.source import open_source
from buildpacks.progress import Transfers

Restorer = Callable[[], tuple[Layer, dict[str, Any]]]


def cached_keys(labels: dict[str, str]) -> dict[str, tuple[str, dict[str, Any]]]:
    """Cache key → (layer diff ID, recorded data), from a cache image's label or an app
    image's lifecycle label (``data.cache-key`` of each buildpack layer). Labels that do not
    decode offer nothing: the layers are then built."""
    keys: dict[str, tuple[str, dict[str, Any]]] = {}
    try:
        cache = cnb.read_label(labels, cnb.CACHE, cnb.CacheMetadata, "previous image")
        meta = cnb.read_label(labels, cnb.LIFECYCLE, cnb.LayersMetadata, "previous image")
    except BuildError:
        return keys
    for entry in cache.layers if cache else []:
        keys[entry.key] = (entry.diff_id, entry.extra)
    for bp in meta.buildpacks if meta else []:
        for layer in bp.layers.values():
            data = dict(layer.data) if isinstance(layer.data, dict) else {}
            key = data.pop("cache-key", None)
            if isinstance(key, str) and key and layer.sha:
                keys.setdefault(key, (layer.sha, data))
    return keys


def from_daemon(
    reference: str, store: BlobStore, log: Callable[[str], None], compression: str = "gzip"
) -> dict[str, Restorer]:
    """Restorers for the layers of the daemon's previous image of ``reference``, compressed
    again with ``compression`` (the daemon keeps them uncompressed)."""
    from buildpacks.oci import daemon  # only for a build that loads a daemon

    labels = daemon.image_labels(reference)
    keys = cached_keys(labels or {})
    if keys:
        log(f"Previous image {reference} in the daemon: {len(keys)} reusable layer(s)")
    return {
        key: (
            lambda d=diff_id, x=extra: (
                daemon.restore_layer(reference, d, store, x.get("gzip-level", 6), compression),
                x,
            )
        )
        for key, (diff_id, extra) in keys.items()
    }


def previous_sources(config: BuildConfig, archive: str) -> list[str]:
    """Where earlier builds of this image may be found, most local first."""
    specs = [f"oci-archive:{archive}"]
    if config.publish:
        specs.append(config.image)
    if config.cache_image:
        specs.append(config.cache_image)
    return specs


def restore(
    config: BuildConfig,
    specs: list[str],
    store: BlobStore,
    stack: ExitStack,
    log: Callable[[str], None],
) -> dict[str, Restorer]:
    """Restorers for every cache key found in the images at ``specs`` that exist; the images
    stay open (on ``stack``) until the build ends."""
    found: dict[str, Restorer] = {}
    for spec in specs:
        if spec.startswith("oci-archive:") and not spec.endswith(".tar"):
            continue
        try:
            source = stack.enter_context(
                open_source(
                    spec,
                    config.platform,
                    store,
                    options=registry_options(config),
                    transfers=Transfers(log),
                )
            )
        except (BuildError, OSError, json.JSONDecodeError) as e:
            if not spec.startswith("oci-archive:"):
                log(f"No previous image at {spec} ({e})")
            continue
        labels = cnb.image_labels(source.config)
        keys = {k: v for k, v in cached_keys(labels).items() if v[0] in source.diff_ids}
        for key, (diff_id, extra) in keys.items():
            index = source.diff_ids.index(diff_id)
            found.setdefault(key, lambda s=source, i=index, x=extra: (s.layer(i), x))
        if keys:
            log(f"Previous image {spec}: {len(keys)} reusable layer(s)")
    if config.daemon:
        for key, restorer in from_daemon(
            config.image, store, log, config.layer_compression
        ).items():
            found.setdefault(key, restorer)
    return found
