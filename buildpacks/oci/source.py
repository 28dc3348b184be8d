"""Opening an image named by a user: a registry reference, or for offline use
``oci-layout:PATH[:TAG]``, ``oci-archive:PATH`` and ``docker-archive:PATH``."""

from __future__ import annotations

from pathlib import Path

from buildpacks.errors import BuildError
from buildpacks.oci.archive import read_docker_archive
from buildpacks.oci.blobs import BlobStore
from buildpacks.oci.layout import read_layout
from buildpacks.oci.model import Image, Platform
from buildpacks.oci.reference import Reference
from buildpacks.oci.registry import pull

TRANSPORTS = ("oci-layout:", "oci-archive:", "docker-archive:")


def split_layout_spec(rest: str) -> tuple[Path, str | None]:
    """``PATH[:TAG]``: a trailing ``:TAG`` counts only when PATH alone does not exist."""
    path = Path(rest).expanduser()
    if path.exists() or ":" not in rest:
        return path, None
    head, tag = rest.rsplit(":", 1)
    return Path(head).expanduser(), tag


def open_image(spec: str, platform: Platform, store: BlobStore) -> Image:
    """The image ``spec`` names, with its blobs in ``store`` and verified."""
    if spec.startswith("oci-layout:"):
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
        image = pull(ref, platform, store)
    image.reference = spec
    if image.platform.os != platform.os or image.platform.architecture != platform.architecture:
        raise BuildError(f"base image {spec} is for {image.platform}, the build targets {platform}")
    return image
