"""The OCI layout backend: reading images from an OCI image layout directory
(``oci-layout:PATH[:TAG]``) or from a tar of one (``oci-archive:PATH``)."""

from __future__ import annotations

import json
import tarfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from buildpacks.errors import BuildError
from buildpacks.oci.blobs import BlobStore
from buildpacks.oci.manifest import select_platform, source_from_manifest
from buildpacks.oci.model import (
    INDEX_TYPES,
    Descriptor,
    Image,
    ImageSource,
    Platform,
    sha256_digest,
)

REF_NAME = "org.opencontainers.image.ref.name"
DAMAGED = "the archive is truncated or damaged"

Opener = Callable[[str], BinaryIO]


def blob_name(digest: str) -> str:
    """Where a blob lies in an OCI image layout."""
    algorithm, _, hex_ = digest.partition(":")
    return f"blobs/{algorithm}/{hex_}"


@contextmanager
def _layout_opener(source: Path) -> Iterator[Opener]:
    """A function opening files of the layout by relative name, for a directory or a tar."""
    if source.is_dir():

        def open_dir(name: str) -> BinaryIO:
            return open(source / name, "rb")

        yield open_dir
        return
    try:
        tar = tarfile.open(source, "r:*")  # noqa: SIM115  (closed by the `with tar` below)
    except tarfile.TarError:
        raise BuildError(f"{source}: not a tar archive") from None
    with tar:
        try:
            members = {m.name.removeprefix("./"): m for m in tar.getmembers() if m.isfile()}
        except (tarfile.TarError, EOFError) as e:
            raise BuildError(f"{source}: {DAMAGED} ({e})") from None

        def open_tar(name: str) -> BinaryIO:
            member = members.get(name)
            stream = tar.extractfile(member) if member else None
            if stream is None:
                raise FileNotFoundError(name)
            return stream  # type: ignore[return-value]

        yield open_tar


def _read(opener: Opener, name: str, what: str) -> bytes:
    try:
        with opener(name) as f:
            return f.read()
    except FileNotFoundError:
        raise BuildError(f"{what}: missing {name}; is it an OCI image layout?") from None
    except (tarfile.TarError, EOFError) as e:
        raise BuildError(f"{what}: {name}: {DAMAGED} ({e})") from None


@contextmanager
def _blob(opener: Opener, desc: Descriptor, what: str) -> Iterator[BinaryIO]:
    """The blob ``desc`` of the layout, open; a missing or damaged one is a ``BuildError``."""
    try:
        with opener(blob_name(desc.digest)) as f:
            yield f
    except FileNotFoundError:
        raise BuildError(f"{what}: blob {desc.digest} is missing from the layout") from None
    except (tarfile.TarError, EOFError) as e:
        raise BuildError(f"{what}: blob {desc.digest}: {DAMAGED} ({e})") from None


def _copy_blob(opener: Opener, store: BlobStore, desc: Descriptor, what: str) -> None:
    if store.has(desc.digest):
        return
    with _blob(opener, desc, what) as f:
        store.put_stream(
            iter(lambda: f.read(1 << 20), b""), desc.digest, f"{what}: blob {desc.digest}"
        )


def _read_blob(opener: Opener, desc: Descriptor, what: str) -> bytes:
    """A small blob (manifest, config) read whole and checked against its digest, for
    parsing only: not copied into the store, where a previous archive's, new at every
    build, would cost a write and a rename each."""
    with _blob(opener, desc, what) as f:
        data = f.read()
    actual = sha256_digest(data)
    if actual != desc.digest:
        raise BuildError(
            f"{what}: blob {desc.digest}: content digest {actual} does not match "
            f"{desc.digest} (truncated or altered)"
        )
    return data


def _index(data: bytes, what: str) -> dict:
    """The layout's ``index.json``, checked to be an image index."""
    try:
        index = json.loads(data)
    except ValueError as e:
        raise BuildError(f"{what}: index.json: not valid JSON ({e})") from None
    manifests = index.get("manifests") if isinstance(index, dict) else None
    if not isinstance(manifests, list) or not all(isinstance(m, dict) for m in manifests):
        raise BuildError(f"{what}: index.json: not an OCI image index (no manifests list)")
    return index


def _named(index: dict, tag: str | None, what: str) -> list[dict]:
    """The entries of ``index.json`` named ``tag`` (all of them without a tag)."""
    manifests = index.get("manifests", [])
    if tag is not None:
        named = [m for m in manifests if (m.get("annotations") or {}).get(REF_NAME) in (tag,)]
        if not named:
            names = sorted(
                {(m.get("annotations") or {}).get(REF_NAME, "") for m in manifests} - {""}
            )
            raise BuildError(
                f"{what}: no image tagged {tag!r} (tags: {', '.join(names) or 'none'})"
            )
        manifests = named
    return manifests


def _pick(index: dict, tag: str | None, platform: Platform, what: str) -> Descriptor:
    manifests = _named(index, tag, what)
    if len(manifests) == 1:
        return Descriptor.from_json(manifests[0])
    if any("platform" in m for m in manifests):
        return select_platform({"manifests": manifests}, platform, what)
    raise BuildError(f"{what}: holds {len(manifests)} images; name one with :TAG")


def layout_index(
    source: Path, tag: str | None, store: BlobStore, what: str
) -> tuple[dict[str, Any], str] | None:
    """The image index a layout directory or archive holds (under ``tag``), and its digest;
    None when it holds one image. An ``index.json`` listing images of several platforms
    (as ``podman manifest push`` to an ``oci:`` layout writes it) is the index itself."""
    if not source.exists():
        raise BuildError(f"{what}: {source} does not exist")
    with _layout_opener(source) as opener:
        data = _read(opener, "index.json", what)
        manifests = _named(_index(data, what), tag, what)
        if len(manifests) == 1:
            desc = Descriptor.from_json(manifests[0])
            if desc.media_type not in INDEX_TYPES:
                return None
            _copy_blob(opener, store, desc, what)
            return json.loads(store.path(desc.digest).read_bytes()), desc.digest
        if any("platform" in m for m in manifests):
            return {**json.loads(data), "manifests": manifests}, sha256_digest(data)
        return None


@contextmanager
def layout_source(
    source: Path, tag: str | None, platform: Platform, store: BlobStore, what: str
) -> Iterator[ImageSource]:
    """An image of a layout directory or archive: manifest and config now, layers on demand."""
    if not source.exists():
        raise BuildError(f"{what}: {source} does not exist")
    with _layout_opener(source) as opener:
        index = _index(_read(opener, "index.json", what), what)
        desc = _pick(index, tag, platform, what)
        name = (desc.annotations or {}).get(REF_NAME)
        data = _read_blob(opener, desc, what)
        if desc.media_type in INDEX_TYPES:
            desc = select_platform(json.loads(data), platform, what)
            data = _read_blob(opener, desc, what)
        source = source_from_manifest(
            data,
            desc.digest,
            lambda d: _copy_blob(opener, store, d, what),
            store,
            what,
            lambda d: _read_blob(opener, d, what),
        )
        source.name = name
        yield source


def read_layout(
    source: Path, tag: str | None, platform: Platform, store: BlobStore, what: str
) -> Image:
    """Copy an image of a layout directory or archive into the store, verifying every blob."""
    with layout_source(source, tag, platform, store, what) as image_source:
        return image_source.image()
