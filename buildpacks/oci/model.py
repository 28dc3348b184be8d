"""Plain data for OCI images: descriptors, platforms, layers, images and image indexes."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from platform import machine as host_machine
from typing import Any

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"

INDEX_TYPES = (OCI_INDEX, DOCKER_MANIFEST_LIST)


def sha256_digest(data: bytes) -> str:
    """The OCI digest string of some bytes."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical_json(obj: Any) -> bytes:
    """JSON with sorted keys and no spaces, so equal content gives equal digests."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True, repr=False)
class Platform:
    """An OCI platform such as ``linux/amd64`` or ``linux/arm64/v8``."""

    os: str = "linux"
    architecture: str = "amd64"
    variant: str | None = None

    @classmethod
    def parse(cls, text: str) -> Platform:
        parts = text.strip().split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise ValueError(f"not a platform: {text!r} (expected os/arch, e.g. linux/amd64)")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else None)

    @classmethod
    def host(cls) -> Platform:
        """The platform of this machine, as ``docker build`` names it (``linux/arm64/v8`` on
        an ARM machine): the image of an index that ``docker load`` and a daemon get."""
        machine = host_machine().lower()
        architecture = _ARCHITECTURES.get(machine, machine)
        return cls("linux", architecture, "v8" if architecture == "arm64" else None)

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    def to_json(self) -> dict[str, str]:
        """The ``platform`` object of an index entry."""
        out = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            out["variant"] = self.variant
        return out

    def matches(self, spec: dict[str, Any]) -> bool:
        """Whether an index entry's ``platform`` object describes this platform."""
        if spec.get("os") != self.os or spec.get("architecture") != self.architecture:
            return False
        variant = spec.get("variant")
        if self.variant and variant:
            return variant == self.variant
        return True

    @property
    def machine(self) -> str:
        """The machine name used by wheel tags (``x86_64``, ``aarch64``)."""
        return {"amd64": "x86_64", "arm64": "aarch64", "386": "i686"}.get(
            self.architecture, self.architecture
        )


# Machine names (``uname -m``) of the hosts images are built on, by their OCI architecture.
_ARCHITECTURES = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "armv8l": "arm64",
    "armv7l": "arm",
    "armv6l": "arm",
    "i386": "386",
    "i686": "386",
}


@dataclass(frozen=True)
class Descriptor:
    """A pointer to a blob: media type, digest and size."""

    media_type: str
    digest: str
    size: int
    annotations: dict[str, str] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
        }
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Descriptor:
        return cls(obj["mediaType"], obj["digest"], int(obj["size"]), obj.get("annotations"))


@dataclass(frozen=True)
class Layer:
    """A layer blob on local disk with its compressed digest and uncompressed diff ID."""

    descriptor: Descriptor
    diff_id: str
    path: Path

    @property
    def digest(self) -> str:
        return self.descriptor.digest


@dataclass(eq=False, repr=False)
class ImageSource:
    """An image whose manifest and config are read, and whose blobs ``fetch`` brings into
    a local store (verified) only when asked for: inspecting needs no layer at all."""

    reference: str
    manifest: dict[str, Any]
    manifest_digest: str
    config: dict[str, Any]
    fetch: Callable[[Descriptor], Path]
    name: str | None = None  # the image's own name (a layout's ref.name annotation), if any

    @property
    def layer_descriptors(self) -> list[Descriptor]:
        return [Descriptor.from_json(d) for d in self.manifest.get("layers", [])]

    @property
    def diff_ids(self) -> list[str]:
        return list(self.config.get("rootfs", {}).get("diff_ids", []))

    @property
    def platform(self) -> Platform:
        return _config_platform(self.config)

    def layer(self, index: int) -> Layer:
        descriptor = self.layer_descriptors[index]
        return Layer(descriptor, self.diff_ids[index], self.fetch(descriptor))

    def image(self) -> Image:
        """The whole image, every layer fetched."""
        if len(self.diff_ids) != len(self.layer_descriptors):
            raise ValueError(f"{self.reference}: config and manifest disagree on the layer count")
        layers = [self.layer(i) for i in range(len(self.diff_ids))]
        return Image(self.config, layers, self.reference, self.manifest_digest)


@dataclass(eq=False, repr=False)
class Image:
    """An image whose config is parsed and whose layer blobs are on local disk."""

    config: dict[str, Any]
    layers: list[Layer]
    reference: str = ""
    manifest_digest: str | None = None
    annotations: dict[str, str] = field(default_factory=dict)

    def config_bytes(self) -> bytes:
        return canonical_json(self.config)

    def config_descriptor(self) -> Descriptor:
        data = self.config_bytes()
        return Descriptor(OCI_CONFIG, sha256_digest(data), len(data))

    def manifest(self) -> dict[str, Any]:
        manifest: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": self.config_descriptor().to_json(),
            "layers": [layer.descriptor.to_json() for layer in self.layers],
        }
        if self.annotations:
            manifest["annotations"] = dict(self.annotations)
        return manifest

    def manifest_bytes(self) -> bytes:
        return canonical_json(self.manifest())

    def digest(self) -> str:
        """The image's digest: that of its manifest."""
        return sha256_digest(self.manifest_bytes())

    @property
    def platform(self) -> Platform:
        return _config_platform(self.config)


def _config_platform(config: dict[str, Any]) -> Platform:
    """The platform an image config names."""
    return Platform(
        config.get("os", "linux"), config.get("architecture", "amd64"), config.get("variant")
    )


@dataclass(eq=False, repr=False)
class Index:
    """An OCI image index: one image per platform, in the order given (which is the order of
    the index's entries, so the same images give the same digest)."""

    images: tuple[Image, ...]
    reference: str = ""
    annotations: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.images:
            raise ValueError("an image index needs at least one image")
        platforms = [str(image.platform) for image in self.images]
        twice = sorted({p for p in platforms if platforms.count(p) > 1})
        if twice:
            raise ValueError(f"an image index holds one image per platform; twice: {twice}")

    @property
    def platforms(self) -> tuple[Platform, ...]:
        return tuple(image.platform for image in self.images)

    def descriptors(self) -> list[Descriptor]:
        """The index's entries, without their platforms: one per image."""
        return [
            Descriptor(OCI_MANIFEST, image.digest(), len(image.manifest_bytes()))
            for image in self.images
        ]

    def manifest(self) -> dict[str, Any]:
        manifests = [
            {**descriptor.to_json(), "platform": image.platform.to_json()}
            for descriptor, image in zip(self.descriptors(), self.images, strict=True)
        ]
        index: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": manifests,
        }
        if self.annotations:
            index["annotations"] = dict(self.annotations)
        return index

    def manifest_bytes(self) -> bytes:
        return canonical_json(self.manifest())

    def digest(self) -> str:
        """The index's digest: that of its JSON."""
        return sha256_digest(self.manifest_bytes())

    def image_for(self, platform: Platform) -> Image | None:
        """The image serving ``platform`` (a missing variant on either side matches)."""
        return next((i for i in self.images if platform.matches(i.platform.to_json())), None)

    def host_image(self) -> Image:
        """The image for this machine's platform, else the first: what ``docker load`` (which
        cannot load an index) and a daemon get."""
        return self.image_for(Platform.host()) or self.images[0]


Artifact = Image | Index


def images_of(artifact: Artifact) -> tuple[Image, ...]:
    """The images of an index, or the image itself."""
    return artifact.images if isinstance(artifact, Index) else (artifact,)


def combine(images: Sequence[Image], reference: str = "") -> Artifact:
    """What a build for these platforms gives: one image for one platform (so a single
    platform's digest is the image's, as before indexes), else an index of them."""
    if len(images) == 1:
        return images[0]
    return Index(tuple(images), reference)


@dataclass(frozen=True, eq=False, repr=False)
class RegistryOptions:
    """How to reach registries: which may skip TLS checks, which CA verifies the others."""

    insecure: tuple[str, ...] = ()
    ca_bundle: str | None = None
    attempts: int = 5
    backoff: float = 0.2
