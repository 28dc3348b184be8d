"""The archive backend: one tar that is both an OCI image layout and a Docker archive
(a ``manifest.json`` beside ``index.json``), so ``podman load`` and ``docker load`` both take
it; and reading plain ``docker save`` archives (``docker-archive:PATH``).

An image index goes in as OCI tools nest one: ``index.json`` names the index (a blob, so
the archive keeps the index's digest), which names every platform's manifest. ``docker
load`` cannot load an index; the ``manifest.json`` beside it names the image of this
machine's platform (else the first), which is the one it loads."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tarfile
import threading
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from buildpacks.errors import BuildError
from buildpacks.oci.blobs import (
    CHUNK,
    BlobStore,
    claimed,
    file_identity,
    no_space,
    remove_stale,
    write_atomic,
)
from buildpacks.oci.layer import open_layer
from buildpacks.oci.layout import REF_NAME, blob_name
from buildpacks.oci.model import (
    OCI_INDEX,
    OCI_LAYER,
    OCI_LAYER_GZIP,
    OCI_LAYER_ZSTD,
    OCI_MANIFEST,
    Artifact,
    Descriptor,
    Image,
    Index,
    Layer,
    canonical_json,
    images_of,
)

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_LAYOUT = ("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
_LAYOUT_ENTRY = (_LAYOUT[0], len(_LAYOUT[1]))


def write_archive(artifact: Artifact, path: Path, reference: str, mtime: int) -> None:
    """Write an image or index as an archive at ``path``, atomically: a failure leaves no
    file."""
    writer = ArchiveWriter(path, mtime)
    try:
        writer.finish(artifact, reference)
    finally:
        writer.discard()


def _layers(artifact: Artifact) -> list[Layer]:
    """Every layer blob of an image or index once, in the order the archive holds them: each
    image's layers, image after image."""
    unique = {layer.digest: layer for image in images_of(artifact) for layer in image.layers}
    order = dict.fromkeys(layer.digest for image in images_of(artifact) for layer in image.layers)
    return [unique[digest] for digest in order]


class ArchiveSink:
    """The ``dist/*.tar`` of a build: written unless the archive there already holds the
    artifact. ``writer``: the archive begun while the buildpacks ran (``ArchiveWriter.start``);
    without one, a writer is made here."""

    def __init__(
        self, path: Path, reference: str, mtime: int, writer: ArchiveWriter | None = None
    ) -> None:
        self.path = path
        self.reference = reference
        self.mtime = mtime
        self.writer = writer

    def write(self, artifact: Artifact, log: Callable[[str], None]) -> str:
        digest = artifact.digest()
        if archive_digest(self.path) == digest:
            log(f"Archive unchanged: {self.path.name}")
        elif self.writer is None:
            write_archive(artifact, self.path, self.reference, self.mtime)
        else:
            self.writer.finish(artifact, self.reference)
        log(f"Archive: {self.path}")
        return digest


@dataclass(eq=False, repr=False)  # no generated methods but __init__: one exec
class _Ledger:
    """What a ledger says of the archive its writer left: the file's identity, and its
    entries (name, size) in order."""

    identity: list[int] | None = None
    entries: list[tuple[str, int]] = field(default_factory=list)


def _identity(st: os.stat_result) -> list[int]:
    # The blob store's identity of a file, on its device: a file rewritten in place, even
    # to its old size and modification time, is another file (its change time moved).
    return [st.st_dev, *file_identity(st)]


def _read_ledger(ledger: Path | None, path: Path, mtime: int) -> _Ledger:
    """The ledger's word on the archive at ``path``, if it speaks of that path, of entries
    dated ``mtime`` (their headers hold it) and of the file there now; else an empty one."""
    if ledger is None:
        return _Ledger()
    try:
        note = json.loads(ledger.read_text())
        identity = [int(n) for n in note["file"]]
        if note["path"] != str(path.resolve()) or note["mtime"] != mtime:
            return _Ledger()
        if _identity(os.stat(path)) != identity:  # checked again when it is taken over
            return _Ledger()
        return _Ledger(identity, [(str(name), int(size)) for name, size in note["entries"]])
    except (OSError, ValueError, TypeError, KeyError):
        return _Ledger()


def _umask() -> int:
    # Reading the umask means setting it: set it back at once.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


class ArchiveWriter:
    """An archive written in two steps, so that a build can copy the run image's layers (the
    bulk of the bytes) in a thread while its buildpacks run: ``start`` with the layers known
    first, ``finish`` with the whole image or index. The bytes do not depend on the split:
    entries go in one order, ``oci-layout``, the layers in manifest order (image after image
    for an index), each image's config and manifest, the index's JSON, then ``index.json``
    and ``manifest.json``; for an index, ``start`` takes its first image's first layers.
    Written to a temp file beside ``path``, renamed into place by ``finish``; ``discard``
    removes what is left of an unfinished one, and the next writer of ``path`` what is left
    by one that was killed (its lock is free). ``retire`` takes away an archive file no
    longer needed, into the build cache's trash (freed later): the one at ``path`` just
    before the new one is renamed there, and an unfinished one; without it, they are
    replaced and unlinked.

    ``ledger``: a file in the build cache where the writer notes the archive it put at
    ``path``: its entries and the file's identity (device, inode, size, modification and
    change times) right after. When the archive there is still that file, untouched, and
    begins with the entries this one begins with (the run image's layers, the dependencies'
    layer), it is taken as the temp file (renamed, locked), cut after the longest run of
    entries the two share and written on from there: a warm rebuild writes its new layer
    and JSON, not the base's tens of megabytes again. The bytes are those of a whole
    write; during ``finish`` no file is at ``path``, and if it fails, none is left there."""

    def __init__(
        self,
        path: Path,
        mtime: int,
        retire: Callable[[Path], None] | None = None,
        ledger: Path | None = None,
    ) -> None:
        self.path = path
        self.mtime = mtime
        self.retire = retire
        self.ledger = ledger
        remove_stale(path.parent, f".{path.name}.*.partial")
        self.previous = _read_ledger(ledger, path, mtime)
        self.file: BinaryIO | None = None
        self.temp: Path | None = None
        self.tar: _TarStream  # with the file, opened or taken over
        self.written: list[str] = []  # layer digests, in order
        self.began = self.done = False
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def _open_new(self) -> None:
        fd, self.temp = claimed(self.path.parent, f".{self.path.name}.", ".partial")
        # mkstemp makes it 0600; an archive is an ordinary output file: 0666 less the umask.
        os.fchmod(fd, 0o666 & ~_umask())
        self.file = os.fdopen(fd, "wb")
        self.tar = _TarStream(self.file, self.mtime)

    def _adopt(self) -> bool:
        """Take the archive at ``path`` as the temp file to write on, if it is the one the
        ledger describes and no other writer holds it."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            # Locked before it is renamed to a temp name, so no sweeper takes it for stale.
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if _identity(os.fstat(fd)) != self.previous.identity:
                raise OSError("not the archive the ledger describes")
            temp = self.path.with_name(f".{self.path.name}.{os.urandom(6).hex()}.partial")
            os.rename(self.path, temp)
            if os.stat(temp).st_ino != os.fstat(fd).st_ino:
                os.rename(temp, self.path)  # another writer's, put in place meanwhile
                raise OSError("the archive was replaced")
        except OSError:
            os.close(fd)
            return False
        self.file = os.fdopen(fd, "r+b")
        self.temp = temp
        self.tar = _TarStream(self.file, self.mtime, self.previous.entries)
        return True

    def start(self, layers: list[Layer]) -> None:
        """Begin with ``layers``, which must be the first of the image, in a thread; or,
        when the archive in place begins with them, leave them there."""
        ahead = [_LAYOUT_ENTRY, *((blob_name(la.digest), la.descriptor.size) for la in layers)]
        if self.previous.entries[: len(ahead)] == ahead:
            return  # finish takes the archive in place and keeps them
        self.previous = _Ledger()

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
        if self.file is None:
            self._open_new()
        if not self.began:
            self.tar.add(*_LAYOUT)
            self.began = True
        for layer in layers:
            if layer.digest not in self.written:
                self.tar.add(blob_name(layer.digest), layer.path)
                self.written.append(layer.digest)

    def finish(self, artifact: Artifact, reference: str) -> None:
        """Write the rest of the image or index and put the archive in place."""
        try:
            self._finish(artifact, reference)
        except OSError as e:
            raise no_space(e, self.path) or e from None

    def _finish(self, artifact: Artifact, reference: str) -> None:
        self._join()
        if self.error is not None:
            raise self.error
        layers = _layers(artifact)
        if self.written != [layer.digest for layer in layers][: len(self.written)]:
            raise ValueError("the archive was started with layers the image does not begin with")
        if self.file is None and not (self.previous.entries and self._adopt()):
            self._open_new()
        self._layers(layers)
        for image in images_of(artifact):
            self._blob(image.config_descriptor().digest, image.config_bytes())
            self._blob(image.digest(), image.manifest_bytes())
        top = artifact.manifest_bytes()
        self._blob(artifact.digest(), top)
        repo_tag = reference.removeprefix("docker.io/library/")
        index = {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {
                    "mediaType": OCI_INDEX if isinstance(artifact, Index) else OCI_MANIFEST,
                    "digest": artifact.digest(),
                    "size": len(top),
                    "annotations": {REF_NAME: repo_tag, "io.containerd.image.name": reference},
                }
            ],
        }
        loaded = artifact.host_image() if isinstance(artifact, Index) else artifact
        docker_manifest = [
            {
                "Config": blob_name(loaded.config_descriptor().digest),
                "RepoTags": [repo_tag],
                "Layers": [blob_name(layer.digest) for layer in loaded.layers],
            }
        ]
        self.tar.add("index.json", canonical_json(index))
        self.tar.add("manifest.json", canonical_json(docker_manifest))
        self.tar.close()
        assert self.file is not None and self.temp is not None  # opened or adopted above
        # Closed only once renamed: the lock goes with the descriptor, and a writer of the
        # same path would sweep an unlocked part away.
        self.file.flush()
        if self.retire is not None:
            # ext4 writes a file renamed over another out to disk during the rename (its
            # auto_da_alloc): ~40 ms for the example's archive. Renamed to a free name, it
            # is not, at the price of a moment in which ``path`` names no file.
            self.retire(self.path)
        os.replace(self.temp, self.path)
        self.done = True
        try:
            self._note(os.fstat(self.file.fileno()))
        finally:
            self.file.close()

    def _note(self, st: os.stat_result) -> None:
        """Write the ledger of the archive just put in place (or drop it, if that fails:
        without it, the next writer writes the whole archive)."""
        if self.ledger is None:
            return
        note = {"path": str(self.path.resolve()), "mtime": self.mtime, "file": _identity(st)}
        try:
            write_atomic(self.ledger, json.dumps({**note, "entries": self.tar.entries}))
        except OSError:
            self.ledger.unlink(missing_ok=True)

    def _blob(self, digest: str, content: bytes) -> None:
        if digest not in self.written:
            self.tar.add(blob_name(digest), content)
            self.written.append(digest)

    def discard(self) -> None:
        """Remove the temp file of an archive not finished (nothing once it is)."""
        if self.done:
            return
        self._join()  # an error of the thread's is moot: the archive is abandoned
        if self.file is None or self.temp is None:
            return  # nothing begun, or the archive in place left there
        # Flushing fails again on a full disk; the error that stopped the archive is told.
        with contextlib.suppress(OSError):
            self.file.close()
        if self.retire is not None:
            # Typically a whole archive written for nothing (the one in place was the same):
            # freed later, as a replaced one is.
            self.retire(self.temp)
        else:
            self.temp.unlink(missing_ok=True)


class _TarStream:
    """The little of the tar format an archive needs — regular files with PAX headers, as
    ``tarfile`` writes them — with file content copied by the kernel (``copy_file_range``).
    Begun on a file that already holds entries (``existing``: names and sizes, in order),
    it keeps those that come again in the same place (same name, a digest, and size: the
    same bytes) and cuts the file at the first that does not."""

    def __init__(self, f: BinaryIO, mtime: int, existing: Sequence[tuple[str, int]] = ()) -> None:
        self.f = f
        self.mtime = mtime
        self.offset = 0
        self.entries: list[tuple[str, int]] = []
        self.existing = list(existing)

    def _write(self, data: bytes) -> None:
        self.f.write(data)
        self.offset += len(data)

    def _keeps(self, entry: tuple[str, int]) -> bool:
        """Whether the file holds ``entry`` here already; if not, cut it here (once)."""
        index = len(self.entries)
        if index < len(self.existing) and self.existing[index] == entry:
            return True
        if self.existing:
            self.existing = []
            self.f.truncate(self.offset)
            self.f.seek(self.offset)
        return False

    def add(self, name: str, content: bytes | Path) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(content) if isinstance(content, bytes) else content.stat().st_size
        info.mtime, info.mode = self.mtime, 0o644
        header = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
        padding = -info.size % tarfile.BLOCKSIZE
        kept = self._keeps((name, info.size))
        self.entries.append((name, info.size))
        if kept:
            self.offset += len(header) + info.size + padding
            return
        self._write(header)
        if isinstance(content, bytes):
            self._write(content)
        else:
            self.f.flush()
            with open(content, "rb") as source:
                _copy(source, self.f, info.size)
            self.offset += info.size
        self._write(tarfile.NUL * padding)

    def close(self) -> None:
        self._keeps(("", -1))  # the end: nothing after the last entry is kept
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
    """The digest of the image or index an archive of ours holds, or None (no file, another
    kind of file)."""
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
