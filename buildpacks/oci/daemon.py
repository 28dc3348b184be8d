"""The daemon backend: loading an image archive into a Docker Engine API (Docker, or
podman's compatible service) named by ``DOCKER_HOST``, with the ``docker`` SDK; and reading a
previous image back from it (labels, and single layers when a build reuses them). A daemon
holds one image per name, so of an index it gets the image of this machine's platform."""

from __future__ import annotations

import json
import os
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from buildpacks.errors import BuildError
from buildpacks.oci.archive import archive_digest, write_archive
from buildpacks.oci.blobs import BlobStore
from buildpacks.oci.layer import compress
from buildpacks.oci.model import Artifact, Index, Layer


def _where() -> str:
    return os.environ.get("DOCKER_HOST", "the default socket")


def _client() -> Any:
    import docker  # imported here: only builds that use a daemon need it

    try:
        return docker.from_env()
    except docker.errors.DockerException as e:
        raise BuildError(f"cannot reach the Docker daemon at {_where()}: {e}") from None


def load(archive: Path) -> list[str]:
    """Load the archive; returns the tags the daemon reports."""
    import docker

    try:
        client = _client()
        with open(archive, "rb") as f:
            answers = list(client.api.load_image(f))
        client.close()
    except docker.errors.DockerException as e:
        raise BuildError(
            f"cannot load the image into the Docker daemon at {_where()}: {e}"
        ) from None
    tags = []
    for answer in answers:
        if "error" in answer:
            raise BuildError(
                f"the Docker daemon at {_where()} refused the image: {answer['error']}"
            )
        stream = answer.get("stream", "")
        if "Loaded image" in stream:
            tags.append(stream.split(":", 1)[1].strip())
    return tags


class DaemonSink:
    """Loads the image (of an index, the host platform's) into the daemon under
    ``reference``. ``archive``: an archive already written that may hold the artifact (the
    build's ``dist/*.tar``, whose ``manifest.json`` names the host image), loaded as it is;
    otherwise a temporary archive of the image is written and loaded."""

    def __init__(self, reference: str, mtime: int, archive: Path | None = None) -> None:
        self.reference = reference
        self.mtime = mtime
        self.archive = archive

    def write(self, artifact: Artifact, log: Callable[[str], None]) -> str:
        image = artifact.host_image() if isinstance(artifact, Index) else artifact
        if self.archive is not None and archive_digest(self.archive) == artifact.digest():
            tags = load(self.archive)
        else:
            with tempfile.TemporaryDirectory(prefix="buildpacks-daemon-") as tmp:
                archive = Path(tmp) / "image.tar"
                write_archive(image, archive, self.reference, self.mtime)
                tags = load(archive)
        for tag in tags:
            log(f"Loaded into the daemon: {tag} ({image.platform})")
        return image.digest()


def image_labels(reference: str) -> dict[str, str] | None:
    """The labels of the daemon's image ``reference``; None if it has no such image or the
    daemon cannot be reached (a previous image is optional)."""
    import docker

    try:
        client = _client()
        labels = client.images.get(reference).attrs.get("Config", {}).get("Labels") or {}
        client.close()
        return labels
    except (docker.errors.DockerException, BuildError):
        return None


def restore_layer(
    reference: str, diff_id: str, store: BlobStore, gzip_level: int = 6, compression: str = "gzip"
) -> Layer:
    """One layer of the daemon's image, compressed as we write layers, so the blob — and the
    image digest — come out as they were built. Checked against ``diff_id``."""
    import docker

    with tempfile.TemporaryDirectory(prefix="buildpacks-daemon-") as tmp:
        saved = Path(tmp) / "image.tar"
        try:
            client = _client()
            with open(saved, "wb") as f:
                for chunk in client.images.get(reference).save(named=False):
                    f.write(chunk)
            client.close()
        except docker.errors.DockerException as e:
            raise BuildError(
                f"cannot read {reference} from the Docker daemon at {_where()}: {e}"
            ) from None
        with tarfile.open(saved) as tar:
            entry = json.load(tar.extractfile("manifest.json"))[0]  # type: ignore[arg-type]
            config = json.load(tar.extractfile(entry["Config"]))  # type: ignore[arg-type]
            index = config["rootfs"]["diff_ids"].index(diff_id)
            stream = tar.extractfile(entry["Layers"][index])
            layer = compress(store, stream, gzip_level, compression)  # type: ignore[arg-type]
    if layer.diff_id != diff_id:
        raise BuildError(
            f"layer {diff_id} of {reference} in the daemon has content {layer.diff_id}"
        )
    return layer
