"""The archive backend: one tar that is both an OCI image layout and a Docker archive
(a ``manifest.json`` beside ``index.json``), so ``podman load`` and ``docker load`` both take
it; and reading plain ``docker save`` archives (``docker-archive:PATH``)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tarfile
import threading
import zlib
from pathlib import Path
from typing import BinaryIO

from buildpacks.errors import BuildError
from buildpacks.oci.blobs import CHUNK, BlobStore, claimed, no_space, remove_stale
from buildpacks.oci.layer import open_layer
from buildpacks.oci.layout import REF_NAME, blob_name
from buildpacks.oci.model import (
    OCI_LAYER,
    OCI_LAYER_GZIP,
    OCI_LAYER_ZSTD,
    OCI_MANIFEST,
    Descriptor,
    Image,
    Layer,
    canonical_json,
)

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def write_archive(image: Image, path: Path, reference: str, mtime: int) -> None:
    """Write the image as an archive at ``path``, atomically: a failure leaves no file."""
    writer = ArchiveWriter(path, mtime)
    try:
        writer.finish(image, reference)
    finally:
        writer.discard()


def _umask() -> int:
    # Reading the umask means setting it: set it back at once.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


class ArchiveWriter:
    """An archive written in two steps, so that a build can copy the run image's layers (the
    bulk of the bytes) in a thread while its buildpacks run: ``start`` with the layers known
    first, ``finish`` with the whole image. The bytes do not depend on the split: entries go
    in one order, ``oci-layout``, the layers in manifest order, config, manifest, then
    ``index.json`` and ``manifest.json``. Written to a temp file beside ``path``, renamed
    into place by ``finish``; ``discard`` removes what is left of an unfinished one, and
    the next writer of ``path`` what is left by one that was killed (its lock is free)."""

    def __init__(self, path: Path, mtime: int) -> None:
        self.path = path
        remove_stale(path.parent, f".{path.name}.*.partial")
        fd, self.temp = claimed(path.parent, f".{path.name}.", ".partial")
        # mkstemp makes it 0600; an archive is an ordinary output file: 0666 less the umask.
        os.fchmod(fd, 0o666 & ~_umask())
        self.file = os.fdopen(fd, "wb")
        self.tar = _TarStream(self.file, mtime)
        self.written: list[str] = []  # layer digests, in order
        self.began = self.done = False
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def start(self, layers: list[Layer]) -> None:
        """Begin with ``layers``, which must be the first of the image, in a thread."""

        def run() -> None:
            try:
                self._layers(layers)
            except OSError as e:  # surfaced by finish
                self.error = no_space(e, self.path) or e
            except BaseException as e:
                self.error = e

        self.thread = threading.Thread(target=run, name="archive-writer", daemon=True)
        self.thread.start()

    def _join(self) -> None:
        if self.thread is not None:
            self.thread.join()
            self.thread = None

    def _layers(self, layers: list[Layer]) -> None:
        if not self.began:
            self.tar.add("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
            self.began = True
        for layer in layers:
            if layer.digest not in self.written:
                self.tar.add(blob_name(layer.digest), layer.path)
                self.written.append(layer.digest)

    def finish(self, image: Image, reference: str) -> None:
        """Write the rest of ``image`` and put the archive in place."""
        try:
            self._finish(image, reference)
        except OSError as e:
            raise no_space(e, self.path) or e from None

    def _finish(self, image: Image, reference: str) -> None:
        self._join()
        if self.error is not None:
            raise self.error
        if (
            self.written
            != list(dict.fromkeys(layer.digest for layer in image.layers))[: len(self.written)]
        ):
            raise ValueError("the archive was started with layers the image does not begin with")
        manifest = image.manifest_bytes()
        digest = image.digest()
        config = image.config_bytes()
        config_digest = image.config_descriptor().digest
        repo_tag = reference.removeprefix("docker.io/library/")
        index = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": digest,
                    "size": len(manifest),
                    "annotations": {REF_NAME: repo_tag, "io.containerd.image.name": reference},
                }
            ],
        }
        docker_manifest = [
            {
                "Config": blob_name(config_digest),
                "RepoTags": [repo_tag],
                "Layers": [blob_name(layer.digest) for layer in image.layers],
            }
        ]
        self._layers(image.layers)
        for blob_digest, content in ((config_digest, config), (digest, manifest)):
            if blob_digest not in self.written:
                self.tar.add(blob_name(blob_digest), content)
        self.tar.add("index.json", canonical_json(index))
        self.tar.add("manifest.json", canonical_json(docker_manifest))
        self.tar.close()
        self.file.close()
        os.replace(self.temp, self.path)
        self.done = True

    def discard(self) -> None:
        """Remove the temp file of an archive not finished (nothing once it is)."""
        if self.done:
            return
        self._join()  # an error of the thread's is moot: the archive is abandoned
        # Flushing fails again on a full disk; the error that stopped the archive is told.
        with contextlib.suppress(OSError):
            self.file.close()
        self.temp.unlink(missing_ok=True)


class _TarStream:
    """The little of the tar format an archive needs — regular files with PAX headers, as
    ``tarfile`` writes them — with file content copied by the kernel (``copy_file_range``):
    a warm rebuild copies the base's layers into every archive it writes."""

    def __init__(self, f: BinaryIO, mtime: int) -> None:
        self.f = f
        self.mtime = mtime
        self.offset = 0

    def _write(self, data: bytes) -> None:
        self.f.write(data)
        self.offset += len(data)

    def add(self, name: str, content: bytes | Path) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(content) if isinstance(content, bytes) else content.stat().st_size
        info.mtime, info.mode = self.mtime, 0o644
        self._write(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))
        if isinstance(content, bytes):
            self._write(content)
        else:
            self.f.flush()
            with open(content, "rb") as source:
                _copy(source, self.f, info.size)
            self.offset += info.size
        remainder = info.size % tarfile.BLOCKSIZE
        if remainder:
            self._write(tarfile.NUL * (tarfile.BLOCKSIZE - remainder))

    def close(self) -> None:
        self._write(tarfile.NUL * (tarfile.BLOCKSIZE * 2))
        remainder = self.offset % tarfile.RECORDSIZE
        if remainder:
            self._write(tarfile.NUL * (tarfile.RECORDSIZE - remainder))


def _copy(source: BinaryIO, target: BinaryIO, size: int) -> None:
    """Copy ``size`` bytes between files, in the kernel where it can."""
    left = size
    try:
        while left:
            copied = os.copy_file_range(source.fileno(), target.fileno(), left)
            if copied == 0:
                raise OSError("short copy")
            left -= copied
    except (OSError, AttributeError):
        source.seek(size - left)
        target.seek(0, os.SEEK_END)
        shutil.copyfileobj(source, target, CHUNK)  # type: ignore[misc]


def archive_digest(path: Path) -> str | None:
    """The image digest an archive of ours holds, or None (no file, another kind of file)."""
    try:
        with tarfile.open(path) as tar:
            index = tar.extractfile("index.json")
            manifests = json.loads(index.read()).get("manifests", []) if index else []
    except (OSError, KeyError, ValueError, tarfile.TarError):
        return None
    return manifests[0].get("digest") if len(manifests) == 1 else None


def _read_docker_archive(source: Path, store: BlobStore, what: str) -> Image:
    if not source.is_file():
        raise BuildError(f"{what}: {source} is not a file")
    try:
        tar = tarfile.open(source, "r:*")  # noqa: SIM115  (closed by the `with tar` below)
    except tarfile.TarError as e:
        raise BuildError(f"{what}: not a tar archive ({e})") from None
    with tar:

        def read(name: str) -> bytes:
            stream = tar.extractfile(name)
            if stream is None:
                raise BuildError(f"{what}: {name} is not a file in the archive")
            return stream.read()

        try:
            entries = json.loads(read("manifest.json"))
        except KeyError:
            raise BuildError(f"{what}: no manifest.json; is it a docker-archive?") from None
        entry = entries[0]
        config_bytes = read(entry["Config"])
        config = json.loads(config_bytes)
        diff_ids = config.get("rootfs", {}).get("diff_ids", [])
        if len(diff_ids) != len(entry["Layers"]):
            raise BuildError(
                f"{what}: config lists {len(diff_ids)} layers, manifest.json {len(entry['Layers'])}"
            )
        layers = []
        for name, diff_id in zip(entry["Layers"], diff_ids, strict=True):
            layers.append(_import_layer(tar, name, diff_id, store, what))
    return Image(config, layers, reference=what)


def read_docker_archive(source: Path, store: BlobStore, what: str) -> Image:
    """Copy the (first) image of a ``docker save`` archive into the store.

    Layers keep their own encoding; uncompressed layers are checked against the config's
    diff IDs, gzipped ones by hashing what they decompress to.
    """
    try:
        return _read_docker_archive(source, store, what)
    except (tarfile.TarError, EOFError, zlib.error) as e:
        raise BuildError(f"{what}: the archive is truncated or damaged ({e})") from None
    except (ValueError, LookupError, TypeError) as e:  # JSON that is not what docker writes
        raise BuildError(f"{what}: not a docker-archive ({type(e).__name__}: {e})") from None


def _import_layer(
    tar: tarfile.TarFile, name: str, diff_id: str, store: BlobStore, what: str
) -> Layer:
    stream = tar.extractfile(name)
    if stream is None:
        raise BuildError(f"{what}: layer {name} is missing")
    head = stream.read(4)
    gzipped = head[:2] == b"\x1f\x8b"
    zstd = head == ZSTD_MAGIC
    with store.writer() as (f, temp):
        sha = hashlib.sha256(head)
        f.write(head)
        size = len(head)
        while chunk := stream.read(CHUNK):
            sha.update(chunk)
            f.write(chunk)
            size += len(chunk)
        f.close()
        digest = "sha256:" + sha.hexdigest()
        content = digest
        if gzipped or zstd:
            inner = hashlib.sha256()
            with open_layer(Layer(Descriptor(_media_type(head), digest, size), diff_id, temp)) as g:
                while chunk := g.read(CHUNK):
                    inner.update(chunk)
            content = "sha256:" + inner.hexdigest()
        if content != diff_id:
            raise BuildError(
                f"{what}: layer {name} has diff ID {content}, the config says {diff_id}"
            )
        path = store.adopt(temp, digest)
    return Layer(Descriptor(_media_type(head), digest, size), diff_id, path)


def _media_type(head: bytes) -> str:
    """The layer media type that a blob's first bytes (its compression's magic) call for."""
    if head[:2] == b"\x1f\x8b":
        return OCI_LAYER_GZIP
    return OCI_LAYER_ZSTD if head == ZSTD_MAGIC else OCI_LAYER
