"""One protocol for every output of a build or a rebase, as go-containerregistry's
``remote.Write``, ``layout.Write``, ``tarball.Write`` and ``daemon.Write`` share one shape: a
sink is told where it writes when it is made, and takes an image or an image index.

The sinks live with their backends: ``archive.ArchiveSink`` (the ``dist/*.tar``, an OCI
layout in a tar), ``registry.RegistrySink`` (push, tags), ``daemon.DaemonSink`` (the host
platform's image into a Docker Engine API). The lifecycle's export names those a build asks
for (``export.outputs``) and writes to each in turn; rebase does the same."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from buildpacks.oci.model import Artifact


class Sink(Protocol):
    """Somewhere an image or index is written."""

    def write(self, artifact: Artifact, log: Callable[[str], None]) -> str:
        """Write ``artifact``, telling ``log`` where it went; returns the digest written (an
        index's, or for a sink that takes one image of an index, that image's)."""
        ...
