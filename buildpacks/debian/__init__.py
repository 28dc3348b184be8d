"""Run images and system packages assembled from Debian packages, as distroless and apko do:
signed archive indexes verified, dependencies resolved, ``.deb`` data unpacked into layers,
no maintainer script run. ``archive`` fetches and verifies, ``resolve`` picks the packages,
``assemble`` turns them into layers and images."""

from __future__ import annotations

import re
from dataclasses import dataclass

from buildpacks.oci.model import Platform

TRANSPORT = "debian-packages:"
# The label of an assembled base listing its packages (name, version, architecture, SHA-256).
PACKAGES_LABEL = "io.python-buildpacks.debian.packages"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
_DPKG_RECORD = re.compile(r"^var/lib/dpkg/(status|status\.d/[^/]+)$")


def is_dpkg_record(path: str) -> bool:
    """Whether an image path (relative) holds dpkg package records: the dpkg database, or
    a distroless-style ``status.d/`` record."""
    return bool(_DPKG_RECORD.match(path)) and not path.endswith(".md5sums")


@dataclass(frozen=True, eq=False, repr=False)
class Suite:
    """A Debian release this project can assemble images from."""

    codename: str
    version: str  # the release number, for /etc/os-release
    python: str  # the suite's Python X.Y


SUITES = {
    "bookworm": Suite("bookworm", "12", "3.11"),
    "trixie": Suite("trixie", "13", "3.13"),
}


def check_architecture(platform: Platform, what: str) -> None:
    """A ``BuildError`` unless Debian images can be made for ``platform`` (``what``: the
    setting that asks, e.g. ``base image debian-packages:bookworm``)."""
    from buildpacks.debian.ldcache import TRIPLETS
    from buildpacks.errors import BuildError

    if platform.architecture not in TRIPLETS:
        raise BuildError(
            f"{what}: platform {platform} is not supported; "
            f"supported architectures: {', '.join(TRIPLETS)}"
        )


def suite_of(spec: str) -> Suite:
    """The suite a ``debian-packages:SUITE`` spec names; a ``BuildError`` if none."""
    from buildpacks.errors import BuildError

    name = spec.removeprefix(TRANSPORT)
    if name not in SUITES:
        raise BuildError(
            f"base image {spec}: unknown Debian suite {name!r}; "
            f"known: {', '.join(TRANSPORT + s for s in SUITES)}"
        )
    return SUITES[name]
