"""``debian-packages:SUITE`` run images, and the layer of ``system-packages``: indexes
loaded and verified, packages resolved, fetched, verified and unpacked into layers.

The assembled image is a stable set of layers (C library and core files; other libraries;
Python; data such as CA certificates and time zones; the files scripts would have written),
so a security update of one package changes few of them. The same verified indexes give
the same image, cached under a key made of the index digests, the packages asked for and
this module's code."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from buildpacks.builtin import code_key
from buildpacks.config import source_date_epoch
from buildpacks.debian import PACKAGES_LABEL, SUITES, Suite, check_architecture, suite_of
from buildpacks.debian.archive import Deb, Fetcher, archives, fetch_debs, load_index
from buildpacks.debian.ldcache import ld_so_cache
from buildpacks.debian.resolve import Universe, resolve
from buildpacks.debian.unpack import (
    LayerWriter,
    Unpacked,
    ca_bundle,
    passwd,
    write_alternatives,
)
from buildpacks.errors import BuildError
from buildpacks.oci.blobs import BlobStore, write_atomic
from buildpacks.oci.model import Descriptor, Image, Layer, Platform

IMAGE_UID = IMAGE_GID = 1000  # the user export runs the image as
# The run image's packages besides the suite's Python.
# libc-bin brings ldconfig, which ctypes.util.find_library runs to find C libraries.
BASE_PACKAGES = ("base-files", "ca-certificates", "tzdata", "netbase", "libc-bin")
_CORE = ("libc6", "libc-bin", "libgcc-s1", "base-files", "netbase")
_DATA = ("ca-certificates", "tzdata", "media-types")
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _group(name: str) -> str:
    """Which layer of the run image a package goes into, by how often it changes together."""
    if name in _CORE or (name.startswith("gcc-") and name.endswith("-base")):
        return "core"
    if "python" in name:
        return "python"
    if name in _DATA:
        return "data"
    return "libraries"


GROUPS = ("core", "libraries", "python", "data")


def python_packages(suite: Suite) -> tuple[str, ...]:
    return (f"python{suite.python}-minimal", f"libpython{suite.python}-stdlib")


@dataclass(frozen=True)
class Indexes:
    """The verified indexes of a suite for one architecture."""

    suite: Suite
    architecture: str
    digests: tuple[str, ...]  # of the Packages indexes, in archive order
    load: Callable[[], Universe]  # the parsed candidates, only when a resolution needs them


def indexes(
    suite: Suite,
    architecture: str,
    mirror: str,
    cache_root: Path,
    fetcher: Fetcher,
    pull_policy: str,
) -> Indexes:
    """Verify the suite's ``InRelease`` files (fetched as the pull policy says) and read
    their ``Packages`` digests; the indexes themselves are loaded only if needed."""
    loaders = []
    digests = []
    for archive in archives(mirror, suite.codename):
        digest, loader = load_index(archive, architecture, cache_root, fetcher, pull_policy)
        digests.append(digest)
        loaders.append(loader)
    universe: list[Universe] = []

    def load() -> Universe:
        if not universe:
            # Fetching and decompressing (which release the GIL) side by side.
            with ThreadPoolExecutor(max_workers=len(loaders)) as pool:
                loaded = list(pool.map(lambda loader: loader(), loaders))
            universe.append(Universe.of(d for debs in loaded for d in debs))
        return universe[0]

    return Indexes(suite, architecture, tuple(digests), load)


# The modules whose code turns packages into layers: named in every cache key (``code_key``).
CODE = (
    "buildpacks.debian",
    "buildpacks.debian.archive",
    "buildpacks.debian.assemble",
    "buildpacks.debian.ldcache",
    "buildpacks.debian.resolve",
    "buildpacks.debian.unpack",
)


def _write_packages(
    writer: LayerWriter, debs: Iterable[Deb], files: Mapping[str, Path], unpacked: Unpacked
) -> dict[str, bytes]:
    certificates: dict[str, bytes] = {}
    for deb in debs:
        certificates.update(writer.package(deb, files[deb.name], unpacked))
    return certificates


def _write_declarative(
    writer: LayerWriter, certificates: Mapping[str, bytes], unpacked: Unpacked
) -> None:
    """The files the handled maintainer scripts would have written."""
    if certificates:
        writer.file("etc/ssl/certs/ca-certificates.crt", ca_bundle(dict(certificates)))
        # OpenSSL's built-in default paths on Debian (what Python's ssl module loads).
        writer.symlink("usr/lib/ssl/certs", "/etc/ssl/certs")
        writer.symlink("usr/lib/ssl/cert.pem", "/etc/ssl/certs/ca-certificates.crt")
    write_alternatives(writer, unpacked)


def package_records(debs: Iterable[Deb]) -> list[dict[str, str]]:
    """The resolved set as recorded in labels and SBOMs."""
    return [
        {"name": d.name, "version": d.version, "architecture": d.architecture, "sha256": d.sha256}
        for d in debs
    ]


def _image(config: dict, layers: list[Layer]) -> Image:
    """The assembled image, its manifest digest known as a pulled image's is (the
    ``org.opencontainers.image.base.digest`` of images built on it)."""
    image = Image(config, layers)
    image.manifest_digest = image.digest()
    return image


def _cached(store: BlobStore, record: Path) -> Image | None:
    try:
        data = json.loads(record.read_text())
        layers = [
            Layer(Descriptor.from_json(e["descriptor"]), e["diff_id"], Path())
            for e in data["layers"]
        ]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not all(store.has(layer.digest) for layer in layers):
        return None
    layers = [Layer(lay.descriptor, lay.diff_id, store.path(lay.digest)) for lay in layers]
    return _image(data["config"], layers)


def assemble(
    spec: str,
    platform: Platform,
    store: BlobStore,
    mirror: str,
    pull_policy: str,
    log: Callable[[str], None],
    keyring: Path | None = None,
) -> Image:
    """The run image ``debian-packages:SUITE`` names, for ``platform``, from the cache when
    the verified indexes are unchanged; ``keyring``: the keys ``mirror`` signs with, if not
    Debian's."""
    suite = suite_of(spec)
    check_architecture(platform, f"base image {spec}")
    cache_root = store.root.parent / "debian"
    fetcher = Fetcher(mirror, log, keyring)
    try:
        found = indexes(suite, platform.architecture, mirror, cache_root, fetcher, pull_policy)
        roots = (*python_packages(suite), *BASE_PACKAGES)
        mtime = source_date_epoch()
        key = hashlib.sha256(
            json.dumps(
                [suite.codename, str(platform), found.digests, roots, mtime, code_key(*CODE)]
            ).encode()
        ).hexdigest()
        record = cache_root / "images" / f"{key}.json"
        image = _cached(store, record)
        if image is not None:
            return image
        debs = resolve(found.load(), roots)
        log(f"Assembling {spec} for {platform}: {len(debs)} Debian packages")
        files = fetch_debs(debs, store, fetcher)

        def group_layer(group: str) -> tuple[Layer, list[str], dict[str, bytes], Unpacked]:
            writer = LayerWriter(mtime)
            unpacked = Unpacked()
            members = [d for d in debs if _group(d.name) == group]
            certificates = _write_packages(writer, members, files, unpacked)
            if group == "core":
                for top in ("bin", "sbin", "lib"):
                    writer.symlink(top, f"usr/{top}")
                if platform.architecture == "amd64":
                    writer.symlink("lib64", "usr/lib64")
            return writer.finish(store), writer.paths, certificates, unpacked

        # The groups' layers are independent: written side by side, one group's gzip and
        # xz work (which release the GIL) overlaps another's tar writing. Their results are
        # merged in group order, as if written one after the other.
        with ThreadPoolExecutor(max_workers=len(GROUPS)) as pool:
            built = list(pool.map(group_layer, GROUPS))
        layers = [layer for layer, _, _, _ in built]
        libraries = [path for _, paths, _, _ in built for path in paths]
        certificates: dict[str, bytes] = {}
        unpacked = Unpacked()
        for _, _, group_certificates, group_unpacked in built:
            certificates.update(group_certificates)
            unpacked.update(group_unpacked)
        writer = LayerWriter(mtime)
        _write_declarative(writer, certificates, unpacked)
        writer.file("etc/ld.so.cache", ld_so_cache(libraries, platform.architecture))
        users, groups = passwd(IMAGE_UID, IMAGE_GID)
        writer.file("etc/passwd", users)
        writer.file("etc/group", groups)
        writer.file("etc/timezone", b"Etc/UTC\n")
        writer.symlink("etc/localtime", "/usr/share/zoneinfo/Etc/UTC")
        writer.directory("root", 0o700)
        writer.directory("tmp", 0o1777)
        writer.directory("workspace")
        layers.append(writer.finish(store))
    finally:
        fetcher.close()
    config = {
        "architecture": platform.architecture,
        "os": platform.os,
        **({"variant": platform.variant} if platform.variant else {}),
        "config": {
            "Env": [f"PATH={PATH}", "LANG=C.UTF-8"],
            "Labels": {
                "io.buildpacks.base.distro.name": "debian",
                "io.buildpacks.base.distro.version": suite.version,
                PACKAGES_LABEL: json.dumps(package_records(debs), separators=(",", ":")),
            },
        },
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
    }
    write_atomic(
        record,
        json.dumps(
            {
                "config": config,
                "layers": [
                    {"descriptor": lay.descriptor.to_json(), "diff_id": lay.diff_id}
                    for lay in layers
                ],
            }
        ),
    )
    return _image(config, layers)


def installed_packages(status: Mapping[str, bytes]) -> dict[str, str]:
    """Name to version of the packages a base's dpkg database (``var/lib/dpkg/status`` and
    the ``status.d/`` records of distroless-style images) says are installed."""
    from debian.deb822 import Deb822

    versions: dict[str, str] = {}
    for content in status.values():
        for paragraph in Deb822.iter_paragraphs(content.decode("utf-8", "replace").splitlines()):
            state = paragraph.get("Status", "install ok installed")
            if "Package" in paragraph and "Version" in paragraph and state.endswith(" installed"):
                versions[paragraph["Package"]] = paragraph["Version"]
    return versions


def suite_of_os_release(os_release: bytes, reference: str) -> Suite:
    """The suite of a Debian-based base from its ``/etc/os-release``; a ``BuildError`` for
    bases that are not Debian or a release this project does not know."""
    fields = dict(
        line.split("=", 1)
        for line in os_release.decode("utf-8", "replace").splitlines()
        if "=" in line
    )
    fields = {k: v.strip().strip('"') for k, v in fields.items()}
    ids = {fields.get("ID", ""), *fields.get("ID_LIKE", "").split()}
    if "debian" not in ids:
        raise BuildError(
            f"system-packages: base image {reference} is not Debian-based "
            f"(/etc/os-release ID={fields.get('ID', '?')!r}); use a Debian-based base such as "
            "debian-packages:bookworm or python:3.11-slim"
        )
    codename = fields.get("VERSION_CODENAME", "")
    if codename not in SUITES:
        raise BuildError(
            f"system-packages: base image {reference} is Debian {codename or '(unknown)'}; "
            f"supported: {', '.join(SUITES)}"
        )
    return SUITES[codename]


def system_packages_layer(
    names: Iterable[str],
    installed: Mapping[str, str],
    base_libraries: Iterable[str],
    found: Indexes,
    store: BlobStore,
    fetcher: Fetcher,
    log: Callable[[str], None],
) -> tuple[Layer, list[dict[str, str]]] | None:
    """One layer holding ``names`` and their dependencies missing from the base, with their
    dpkg records; None when the base has them all."""
    debs = resolve(found.load(), names, installed)
    if not debs:
        return None
    log(f"System packages: {', '.join(f'{d.name} {d.version}' for d in debs)}")
    writer = LayerWriter(source_date_epoch())
    unpacked = Unpacked()
    certificates = _write_packages(writer, debs, fetch_debs(debs, store, fetcher), unpacked)
    _write_declarative(writer, certificates, unpacked)
    libraries = [*base_libraries, *writer.paths]
    writer.file("etc/ld.so.cache", ld_so_cache(libraries, found.architecture))
    return writer.finish(store), package_records(debs)
