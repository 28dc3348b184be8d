"""analyze: resolve the run image (the base) the app's layers will be placed on."""

from __future__ import annotations

from collections.abc import Callable

from buildpacks.config import BuildConfig
from buildpacks.errors import BuildError
from buildpacks.oci.blobs import BlobStore
from buildpacks.oci.model import Image, RegistryOptions
from buildpacks.oci.source import TRANSPORTS, open_image
from buildpacks.progress import Transfers


def registry_options(config: BuildConfig) -> RegistryOptions:
    return RegistryOptions(insecure=config.insecure_registries, ca_bundle=config.registry_ca)


def analyze(config: BuildConfig, store: BlobStore, log: Callable[[str], None]) -> Image:
    """The run image, with its blobs verified into the local store."""
    try:
        image = open_image(
            config.base_image,
            config.platform,
            store,
            options=registry_options(config),
            pull_policy=config.pull_policy,
            transfers=Transfers(log),
            debian_mirror=config.debian_mirror,
        )
    except BuildError as e:
        if config.base_image.startswith(TRANSPORTS):
            raise
        # Most often the default base on Docker Hub, out of reach: say how to choose another.
        raise BuildError(
            f"{e}; set base-image (BP_BASE_IMAGE, --base-image) to a registry you can reach, "
            "or to a local base: oci-layout:PATH[:TAG], oci-archive:PATH or docker-archive:PATH"
        ) from None
    log(
        f"Run image {config.base_image} ({image.manifest_digest or image.digest()}), "
        f"{len(image.layers)} layer(s)"
    )
    return image
