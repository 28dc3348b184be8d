"""Parsing registry image references the way Docker does (``python:3.12-slim`` means
``docker.io/library/python:3.12-slim``)."""

from __future__ import annotations

import re
from dataclasses import dataclass

DOCKER_HUB = "docker.io"
# Other names of Docker Hub: Docker's own index name and its API host.
DOCKER_HUB_ALIASES = ("index.docker.io", "registry-1.docker.io")
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPO = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST = re.compile(r"^sha256:[a-f0-9]{64}$")


@dataclass(frozen=True, eq=False, repr=False)
class Reference:
    """``registry/repository[:tag][@digest]``."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, text: str) -> Reference:
        """Parse a reference; raises ``ValueError`` with the reason when it is malformed."""
        rest, digest = text, None
        if "@" in rest:
            rest, digest = rest.split("@", 1)
            algorithm, sep, _ = digest.partition(":")
            if (
                sep
                and algorithm != "sha256"
                and re.fullmatch(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*", algorithm)
            ):
                raise ValueError(
                    f"{text!r}: {algorithm} digests are not supported; pin the image by its "
                    "sha256 digest (sha256:<64 hex digits>)"
                )
            if not _DIGEST.match(digest):
                raise ValueError(f"{text!r}: digest must look like sha256:<64 hex digits>")
        first, sep, remainder = rest.partition("/")
        if sep and ("." in first or ":" in first or first == "localhost"):
            registry, path = first, remainder
            if registry in DOCKER_HUB_ALIASES:
                registry = DOCKER_HUB
        else:
            registry, path = DOCKER_HUB, rest
        tag = None
        if ":" in path:
            path, tag = path.rsplit(":", 1)
            if not _TAG.match(tag):
                raise ValueError(f"{text!r}: {tag!r} is not a valid tag")
        if registry == DOCKER_HUB and "/" not in path:
            path = f"library/{path}"
        if not _REPO.match(path):
            raise ValueError(
                f"{text!r}: repository {path!r} must be lowercase letters, digits and separators"
            )
        if tag is None and digest is None:
            tag = "latest"
        return cls(registry, path, tag, digest)

    @property
    def identifier(self) -> str:
        """What to ask the registry for: the digest if pinned, else the tag."""
        return self.digest or self.tag or "latest"

    @property
    def api_host(self) -> str:
        return "registry-1.docker.io" if self.registry == DOCKER_HUB else self.registry

    @property
    def is_loopback(self) -> bool:
        host = (
            self.registry.rsplit(":", 1)[0] if not self.registry.startswith("[") else self.registry
        )
        return host in ("localhost", "[::1]") or host.startswith("127.")

    def __str__(self) -> str:
        out = f"{self.registry}/{self.repository}"
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out


def normalize_repository(name: str) -> str:
    """A project name made into a repository name, normalised as PyPI does (PEP 503)."""
    out = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return out or "app"


def normalize_tag(version: str) -> str:
    """A version made into a valid tag (``1.0+local`` becomes ``1.0-local``)."""
    out = re.sub(r"[^\w.-]", "-", version)
    return out.lstrip(".-")[:128] or "latest"
