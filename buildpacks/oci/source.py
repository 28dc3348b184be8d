"""Opening an image named by a user: a registry reference, or for offline use
``oci-layout:PATH[:TAG]``, ``oci-archive:PATH`` and ``docker-archive:PATH``; or a run image
assembled from Debian packages, ``debian-packages:SUITE``."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from buildpacks.errors import BuildError
from buildpacks.oci.archive import read_docker_archive
from buildpacks.oci.blobs import BlobStore, write_atomic
from buildpacks.oci.layout import layout_index, layout_source, read_layout
from buildpacks.oci.manifest import image_from_manifest
from buildpacks.oci.model import Image, ImageSource, Platform, RegistryOptions
from buildpacks.oci.reference import Reference
from buildpacks.progress import Transfers

TRANSPORTS = ("oci-layout:", "oci-archive:", "docker-archive:", "debian-packages:")


def split_layout_spec(rest: str) -> tuple[Path, str | None]:
    """``PATH[:TAG]``: a trailing ``:TAG`` counts only when PATH alone does not exist."""
    path = Path(rest).expanduser()
    if path.exists() or ":" not in rest:
        return path, None
    head, tag = rest.rsplit(":", 1)
    return Path(head).expanduser(), tag


def _pinned(store: BlobStore, spec: str, platform: Platform) -> Path:
    """Where the manifest digest last pulled for ``spec`` on ``platform`` is recorded."""
    key = hashlib.sha256(f"{spec}|{platform}".encode()).hexdigest()
    return store.root.parent / "refs" / f"{key}.json"


def _from_cache(store: BlobStore, spec: str, platform: Platform) -> Image | None:
    """The image last pulled for ``spec``, if it and all its blobs are still in the store."""
    try:
        digest = json.loads(_pinned(store, spec, platform).read_text())["manifest"]
        if not store.has(digest):
            return None
        data = store.path(digest).read_bytes()
    except (OSError, ValueError, KeyError, BuildError):
        return None

    def present(descriptor):
        if not store.has(descriptor.digest):
            raise FileNotFoundError(descriptor.digest)

    try:
        return image_from_manifest(data, digest, present, store, spec)
    except (FileNotFoundError, ValueError, KeyError):
        return None


def _remember(store: BlobStore, spec: str, platform: Platform, image: Image) -> None:
    write_atomic(_pinned(store, spec, platform), json.dumps({"manifest": image.manifest_digest}))


def local_inputs(
    spec: str,
    platform: Platform,
    store: BlobStore,
    pull_policy: str,
    debian_mirror: str | None = None,
    debian_keyring: str | None = None,
) -> list[Path] | None:
    """The local files that decide which image ``open_image`` returns for ``spec``; None
    when a registry or mirror is asked every time."""
    if spec.startswith("debian-packages:"):
        if pull_policy == "always":
            return None
        from buildpacks.debian import DEFAULT_MIRROR, suite_of
        from buildpacks.debian.archive import archives, cached_in_release

        cache_root = store.root.parent / "debian"
        suite = suite_of(spec)
        found = [
            cached_in_release(archive, cache_root)
            for archive in archives(debian_mirror or DEFAULT_MIRROR, suite.codename)
        ]
        return [*found, *([Path(debian_keyring)] if debian_keyring else [])]
    if spec.startswith("oci-layout:"):
        path, _ = split_layout_spec(spec.removeprefix("oci-layout:"))
        return [path / "index.json"]
    for transport in ("oci-archive:", "docker-archive:"):
        if spec.startswith(transport):
            return [Path(spec.removeprefix(transport)).expanduser()]
    return None if pull_policy == "always" else [_pinned(store, spec, platform)]


def open_image(
    spec: str,
    platform: Platform,
    store: BlobStore,
    *,
    options: RegistryOptions | None = None,
    pull_policy: str = "if-not-present",
    transfers: Transfers | None = None,
    debian_mirror: str | None = None,
    debian_keyring: str | None = None,
) -> Image:
    """The image ``spec`` names, with its blobs in ``store`` and verified.

    For registry references and Debian archives, ``pull_policy`` decides whether they are
    asked: ``always``; ``if-not-present`` (only when the local cache lacks the image or
    index); ``never``. ``debian_mirror`` and ``debian_keyring``: where ``debian-packages:``
    images come from and the keys that sign it.
    """
    if spec.startswith("debian-packages:"):
        from buildpacks.debian import DEFAULT_MIRROR
        from buildpacks.debian.assemble import assemble

        log = (transfers or Transfers(print)).log
        mirror = debian_mirror or DEFAULT_MIRROR
        keyring = Path(debian_keyring) if debian_keyring else None
        image = assemble(spec, platform, store, mirror, pull_policy, log, keyring)
    elif spec.startswith("oci-layout:"):
        path, tag = split_layout_spec(spec.removeprefix("oci-layout:"))
        image = read_layout(path, tag, platform, store, spec)
    elif spec.startswith("oci-archive:"):
        image = read_layout(
            Path(spec.removeprefix("oci-archive:")).expanduser(), None, platform, store, spec
        )
    elif spec.startswith("docker-archive:"):
        image = read_docker_archive(
            Path(spec.removeprefix("docker-archive:")).expanduser(), store, spec
        )
    else:
        try:
            ref = Reference.parse(spec)
        except ValueError as e:
            raise BuildError(
                f"base image {e}; use a registry reference or one of {', '.join(TRANSPORTS)}"
            ) from None
        image = None if pull_policy == "always" else _from_cache(store, spec, platform)
        if image is None:
            if pull_policy == "never":
                raise BuildError(
                    f"base image {spec} is not in the local cache and pull-policy is never; "
                    "build once with pull-policy if-not-present"
                )
            from buildpacks.oci.registry import pull  # httpx loads only when a registry is used

            image = pull(
                ref, platform, store, options or RegistryOptions(), transfers or Transfers(print)
            )
            _remember(store, spec, platform, image)
    image.reference = spec
    if image.platform.os != platform.os or image.platform.architecture != platform.architecture:
        raise BuildError(f"base image {spec} is for {image.platform}, the build targets {platform}")
    return image


def open_index(
    spec: str, store: BlobStore, *, options: RegistryOptions | None = None
) -> tuple[dict[str, Any], str] | None:
    """The image index ``spec`` names (parsed) and its digest, or None when it names one
    image; for the commands that treat an index as a whole (inspect, sbom, rebase)."""
    if spec.startswith("oci-layout:"):
        path, tag = split_layout_spec(spec.removeprefix("oci-layout:"))
        return layout_index(path, tag, store, spec)
    if spec.startswith("oci-archive:"):
        return layout_index(Path(spec.removeprefix("oci-archive:")).expanduser(), None, store, spec)
    if spec.startswith(("docker-archive:", "debian-packages:")):
        return None  # one image, or a recipe for any platform; open_source says which
    try:
        ref = Reference.parse(spec)
    except ValueError as e:
        raise BuildError(f"image {e}") from None
    from buildpacks.oci.registry import registry_index  # httpx loads only when needed

    return registry_index(ref, options or RegistryOptions())


@contextmanager
def open_source(
    spec: str,
    platform: Platform,
    store: BlobStore,
    *,
    options: RegistryOptions | None = None,
    transfers: Transfers | None = None,
) -> Iterator[ImageSource]:
    """The image ``spec`` names, its manifest and config read and its layers fetched only
    when asked for; for inspecting and rebasing finished images."""
    if spec.startswith("oci-layout:"):
        path, tag = split_layout_spec(spec.removeprefix("oci-layout:"))
        with layout_source(path, tag, platform, store, spec) as source:
            yield source
    elif spec.startswith("oci-archive:"):
        path = Path(spec.removeprefix("oci-archive:")).expanduser()
        with layout_source(path, None, platform, store, spec) as source:
            yield source
    elif spec.startswith("docker-archive:"):
        raise BuildError(
            f"{spec}: docker-archive images can be bases only; use oci-archive: for ours"
        )
    elif spec.startswith("debian-packages:"):
        # Not a stored image: it is assembled from the day's indexes when a build or a
        # rebase uses it, downloading its packages, which inspecting must not do.
        raise BuildError(
            f"{spec}: debian-packages: images are assembled by a build (base-image) or a "
            "rebase (--run-image), not stored; inspect the image built on it instead"
        )
    else:
        try:
            ref = Reference.parse(spec)
        except ValueError as e:
            raise BuildError(f"image {e}") from None
        from buildpacks.oci.registry import registry_source  # httpx loads only when needed

        opts = options or RegistryOptions()
        with registry_source(ref, platform, store, opts, transfers or Transfers(print)) as source:
            yield source
