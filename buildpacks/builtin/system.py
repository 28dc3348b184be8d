"""The system-packages buildpack: the Debian packages of ``system-packages`` (``libpq5``,
``libgomp1``, ``ffmpeg``...) and what they depend on, minus what the run image already has,
unpacked into one layer with no maintainer script run. The run image must be Debian-based:
its ``/etc/os-release`` names the suite the packages are resolved against, its dpkg
database what is installed."""

from __future__ import annotations

from pathlib import Path

from buildpacks.builtin import BuildContext, cache_key, code_key, layer_path, reuse_or_build
from buildpacks.config import BuildConfig
from buildpacks.errors import BuildError
from buildpacks.oci import rootfs

ID = "python-buildpacks/system-packages"
VERSION = "0.1.0"

_OS_RELEASE = ("etc/os-release", "usr/lib/os-release")


class SystemPackagesBuildpack:
    id = ID
    version = VERSION

    def detect(self, config: BuildConfig) -> bool:
        return bool(config.system_packages)

    def build(self, ctx: BuildContext) -> None:
        from buildpacks.debian import DEFAULT_MIRROR, check_architecture, is_dpkg_record
        from buildpacks.debian.archive import Fetcher
        from buildpacks.debian.assemble import (
            CODE,
            indexes,
            installed_packages,
            suite_of_os_release,
            system_packages_layer,
        )
        from buildpacks.debian.ldcache import is_library

        config = ctx.config
        image = ctx.run_image
        arch = config.platform.architecture
        check_architecture(config.platform, "system-packages")
        found = rootfs.find(
            image,
            wanted=lambda p: p in _OS_RELEASE or is_dpkg_record(p) or is_library(p, arch),
            read=lambda p: p in _OS_RELEASE or is_dpkg_record(p),
        )
        # /etc/os-release is usually a link to /usr/lib/os-release.
        os_release = next(
            (e.content for p in _OS_RELEASE if (e := found.get(p)) and e.content is not None),
            None,
        )
        if os_release is None:
            raise BuildError(
                f"system-packages: base image {image.reference} has no /etc/os-release, so it "
                "is not a Debian-based base; use debian-packages:bookworm or python:3.11-slim"
            )
        suite = suite_of_os_release(os_release, image.reference)
        installed = installed_packages(
            {p: e.content or b"" for p, e in found.items() if is_dpkg_record(p)}
        )
        mirror = config.debian_mirror or DEFAULT_MIRROR
        keyring = Path(config.debian_keyring) if config.debian_keyring else None
        fetcher = Fetcher(mirror, ctx.log, keyring)
        try:
            archive = indexes(
                suite,
                config.platform.architecture,
                mirror,
                config.cache_dir / "debian",
                fetcher,
                config.pull_policy,
            )
            key = cache_key(
                {
                    "buildpack": ID,
                    "packages": sorted(config.system_packages),
                    "indexes": archive.digests,
                    "installed": sorted(installed.items()),
                    "libraries": sorted(p for p in found if is_library(p, arch)),
                    "platform": str(config.platform),
                    "code": code_key(__name__, *CODE),
                }
            )

            def build() -> tuple:
                made = system_packages_layer(
                    config.system_packages,
                    installed,
                    [p for p in found if is_library(p, arch)],
                    archive,
                    ctx.store,
                    fetcher,
                    ctx.log,
                )
                if made is None:
                    raise _NothingToAdd
                layer, records = made
                return layer, {"debian-packages": records}

            try:
                reuse_or_build(ctx, ID, "packages", layer_path(ID, "packages"), key, build)
            except _NothingToAdd:
                ctx.log(f"System packages: the base has {', '.join(config.system_packages)}")
        finally:
            fetcher.close()


class _NothingToAdd(Exception):
    """The base already has every package asked for: no layer."""


BUILDPACK = SystemPackagesBuildpack()
