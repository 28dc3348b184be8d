"""The daemon backend: loading an image archive into a Docker Engine API (Docker, or
podman's compatible service) named by ``DOCKER_HOST``, with the ``docker`` SDK."""

from __future__ import annotations

import os
from pathlib import Path

from buildpacks.errors import BuildError


def load(archive: Path) -> list[str]:
    """Load the archive; returns the tags the daemon reports."""
    import docker  # imported here: only builds that ask for a daemon need it

    where = os.environ.get("DOCKER_HOST", "the default socket")
    try:
        client = docker.from_env()
        with open(archive, "rb") as f:
            answers = list(client.api.load_image(f))
        client.close()
    except docker.errors.DockerException as e:
        raise BuildError(f"cannot load the image into the Docker daemon at {where}: {e}") from None
    tags = []
    for answer in answers:
        if "error" in answer:
            raise BuildError(f"the Docker daemon at {where} refused the image: {answer['error']}")
        stream = answer.get("stream", "")
        if "Loaded image" in stream:
            tags.append(stream.split(":", 1)[1].strip())
    return tags
