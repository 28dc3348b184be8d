"""Reproducible layers: written from directory trees (staged on disk, or held in memory for
the small files a build makes itself) with sorted entries, fixed mtimes, fixed owners (root,
or the image user for trees it writes to) and normalised modes, gzipped without a time or
name in the header (or zstd-compressed).
Compression runs on every core while the tar is being written: gzip as pigz does it
(independent deflate blocks, each primed with the input before it, joined into one gzip
member), zstd in its multi-threaded mode; in both the bytes depend on the input alone, never
on the number of threads or on their timing.
Also the read side: walking the entries of existing layer blobs, whiteouts included."""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import stat
import struct
import tarfile
import zlib
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, BinaryIO

from buildpacks.oci.blobs import BlobStore
from buildpacks.oci.model import (
    DOCKER_LAYER_GZIP,
    OCI_LAYER,
    OCI_LAYER_GZIP,
    OCI_LAYER_ZSTD,
    Descriptor,
    Layer,
)

if TYPE_CHECKING:
    from concurrent.futures import Executor, Future, ThreadPoolExecutor

# pack and the CNB lifecycle date layer entries 1980-01-01T00:00:01Z when nothing else is given.
DEFAULT_EPOCH = 315532801
# zstd's own default: about as fast as gzip level 1 here, and smaller than gzip level 6.
ZSTD_LEVEL = 3
# gzip layers are deflated in blocks of this much input, side by side. Part of the format:
# another size gives other bytes (and so other digests); the number of threads does not.
GZIP_BLOCK = 1 << 20
_WINDOW = 1 << 15  # deflate's window: what a block may refer back to in the one before it


class _HashingWriter(io.RawIOBase):
    """Passes bytes on to ``sink`` while hashing them."""

    def __init__(self, sink: BinaryIO) -> None:
        self.sink = sink
        self.sha = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # type: ignore[override]
        self.sha.update(data)
        self.size += len(data)
        self.sink.write(data)
        return len(data)


# What a layer is written from: plain data made, read and dropped by one build, with no
# ``==``, repr or immutability generated (each an ``exec`` at import on every build).


@dataclass(eq=False, repr=False)
class TreeMapping:
    """A host directory placed at an absolute path inside the image."""

    source: Path
    target: str  # absolute path in the image, e.g. /layers/bp/venv
    # uid and gid of every entry of the tree (not of the target's parents): the image user
    # for trees the application writes to at run time; root for code.
    owner: tuple[int, int] = (0, 0)


@dataclass(eq=False, repr=False)
class File:
    """A regular file's content, for a ``MemoryTree``."""

    data: bytes
    executable: bool = False


@dataclass(eq=False, repr=False)
class Symlink:
    """A symbolic link, for a ``MemoryTree``."""

    target: str


@dataclass(eq=False, repr=False)
class MemoryTree:
    """Files the build makes itself (launch config, SBOM documents, the installed app), held
    in memory and placed at an absolute path inside the image: written as the same tree
    staged on disk would be, byte for byte, with no directory to make, read back and
    remove (which on a file system mounted with ``discard`` costs milliseconds a file)."""

    # path relative to ``target`` → content; None: an empty directory. Parents are implied.
    entries: Mapping[str, File | Symlink | None]
    target: str
    owner: tuple[int, int] = (0, 0)

    def root(self) -> dict[str, object]:
        """The entries as nested directories: name → dict (a directory) or content."""
        root: dict[str, object] = {}
        for path, content in self.entries.items():
            *parents, name = PurePosixPath(path).parts if path else ("",)
            node = root
            for part in parents:
                node = node.setdefault(part, {})  # type: ignore[assignment]
            if name and not isinstance(node.get(name), dict):
                node[name] = {} if content is None else content
        return root


def memory_digest(trees: Sequence[MemoryTree]) -> str:
    """A digest of all that ``trees`` put into a layer, in their order: each tree's place
    and owner, and each entry's path, kind and content (a file's bytes and executable bit,
    a link's target, an empty directory)."""

    def entry(content: File | Symlink | None) -> list[object]:
        if isinstance(content, File):
            return ["file", content.executable, hashlib.sha256(content.data).hexdigest()]
        if isinstance(content, Symlink):
            return ["link", content.target]
        return ["dir"]

    listing = [
        [tree.target, list(tree.owner), [[path, entry(c)] for path, c in tree.entries.items()]]
        for tree in trees
    ]
    return hashlib.sha256(json.dumps(listing).encode()).hexdigest()


_BLOCK = 512
_RECORD = 20 * _BLOCK  # tar's record: the stream's length is a multiple of it
_CHUNK = 1 << 20


def _octal(value: int, width: int) -> bytes:
    return b"%0*o\0" % (width - 1, value)


def _ustar(
    name: str, kind: bytes, mode: int, ids: tuple[int, int], size: int, mtime: int, link: str
) -> bytes:
    """A ustar header block: names cut to their fields, in ASCII ('?' for other characters;
    a PAX record before it holds the whole name), no user or group name."""
    head = b"".join(
        (
            name.encode("ascii", "replace")[:100].ljust(100, b"\0"),
            _octal(mode, 8),
            _octal(ids[0], 8),
            _octal(ids[1], 8),
            _octal(size, 12),
            _octal(mtime, 12),
            b" " * 8,  # the checksum's place, counted as spaces
            kind,
            link.encode("ascii", "replace")[:100].ljust(100, b"\0"),
            b"ustar\x0000",
        )
    ).ljust(_BLOCK, b"\0")
    return head[:148] + b"%06o\0" % sum(head) + head[155:]


def _pax(records: list[tuple[str, str]]) -> bytes:
    """A PAX extended header ('x') holding ``records``, in UTF-8; when a name is not text
    (undecodable bytes, kept as surrogates by ``os.listdir``), its own bytes, marked
    ``hdrcharset=BINARY``."""
    out = b"" if all(_is_text(value) for _, value in records) else b"21 hdrcharset=BINARY\n"
    for key, value in records:
        field = key.encode() + b"=" + value.encode("utf-8", "surrogateescape") + b"\n"
        # A record starts with its own length in decimal, that number's digits included.
        size = len(field) + 1  # the field and the space after the number
        length = size + 1
        while size + len(str(length)) != length:
            length = size + len(str(length))
        out += str(length).encode() + b" " + field
    return _ustar("././@PaxHeader", b"x", 0, (0, 0), len(out), 0, "") + _padded(out)


def _is_text(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _padded(data: bytes) -> bytes:
    return data + bytes(-len(data) % _BLOCK)


def _header(
    name: str, kind: bytes, mode: int, mtime: int, owner: tuple[int, int], size: int = 0,
    link: str = "",
) -> bytes:  # fmt: skip
    """The header of one entry in ``tarfile.PAX_FORMAT``, byte for byte as tarfile writes
    it: a PAX record before the ustar block for what the block cannot hold (a name or link
    over 100 characters or not ASCII, a number too large for its field)."""
    records = [
        (key, text) for key, text in (("path", name), ("linkpath", link))
        if len(text) > 100 or not text.isascii()
    ]  # fmt: skip
    numbers = {"uid": owner[0], "gid": owner[1], "size": size, "mtime": mtime}
    for key, digits in (("uid", 8), ("gid", 8), ("size", 12), ("mtime", 12)):
        if not 0 <= numbers[key] < 8 ** (digits - 1):
            records.append((key, str(numbers[key])))
            numbers[key] = 0
    ids = (numbers["uid"], numbers["gid"])
    block = _ustar(name, kind, mode, ids, numbers["size"], numbers["mtime"], link)
    return _pax(records) + block if records else block


class _TarStream:
    """A tar stream written straight to ``sink``, entry by entry: one write for a small
    file's header, content and padding, rather than tarfile's many small ones."""

    def __init__(self, sink: BinaryIO) -> None:
        self.sink = sink
        self.offset = 0

    def write(self, data: bytes) -> None:
        self.sink.write(data)
        self.offset += len(data)

    def add_file(self, header: bytes, path: Path, size: int) -> None:
        """``header``, then ``size`` bytes of the file at ``path``, padded to a block; a
        file that shrank meanwhile is an error (tarfile's), one that grew is cut."""
        with open(path, "rb") as f:
            if size <= _CHUNK:
                data = f.read(size)
                if len(data) != size:
                    raise OSError(f"unexpected end of data in {path}")
                self.write(header + data + bytes(-size % _BLOCK))
                return
            self.write(header)
            left = size
            while left:
                chunk = f.read(min(left, _CHUNK))
                if not chunk:
                    raise OSError(f"unexpected end of data in {path}")
                self.write(chunk)
                left -= len(chunk)
            self.write(bytes(-size % _BLOCK))

    def close(self) -> None:
        """The end: two zero blocks, then zeros to the end of the record."""
        self.write(bytes(2 * _BLOCK))
        self.write(bytes(-self.offset % _RECORD))


def _normal_mode(st_mode: int) -> int:
    if stat.S_ISDIR(st_mode) or st_mode & 0o111:
        return 0o755
    return 0o644


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@functools.cache
def _pool() -> ThreadPoolExecutor:
    """The threads that deflate gzip blocks: one per core, made on first use (a layer of
    one block never needs them) and kept for the process (``buildpacks watch``)."""
    # Imported here: a warm build's layers are one block each and never ask for the pool.
    from concurrent.futures import ThreadPoolExecutor

    return ThreadPoolExecutor(max_workers=_cores(), thread_name_prefix="deflate")


def _deflate(block: bytes, primer: bytes, level: int, last: bool) -> bytes:
    """``block`` as raw deflate, its back-references reaching into ``primer`` (the input
    just before it); ended by a sync flush (an empty stored block: byte-aligned, not final)
    so that the next block's deflate can follow it, or, for the ``last``, as a final block.
    zlib releases the GIL while it works."""
    if primer:
        c = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS, zdict=primer)
    else:
        c = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS)
    return c.compress(block) + c.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)


class GzipBlocks(io.RawIOBase):
    """One gzip member (no name, time 0) written to ``sink`` as pigz writes one: the input
    cut into ``GZIP_BLOCK`` blocks, deflated by the executor ``pool`` gives (asked for at
    the first block that is not the last; None: by the writing thread) at most two per
    thread at a time, and written in order. The blocks depend on the input alone, so any
    pool gives the same bytes; an input of one block is deflated here, with no thread."""

    def __init__(self, sink: BinaryIO, level: int, pool: Callable[[], Executor] | None) -> None:
        self.sink, self.level, self.pool = sink, level, pool
        self.buffer = bytearray()
        self.primer = b""
        self.crc = 0
        self.size = 0
        self.pending: deque[Future[bytes]] = deque()
        self.limit = 2 * _cores()
        # As gzip.GzipFile writes it: deflate, no flags, no time, the level hint, OS unknown.
        xfl = {9: 2, 1: 4}.get(level, 0)
        sink.write(struct.pack("<BBBBIBB", 0x1F, 0x8B, 8, 0, 0, xfl, 255))

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # type: ignore[override]
        self.buffer += data
        while len(self.buffer) >= GZIP_BLOCK:
            block = bytes(self.buffer[:GZIP_BLOCK])
            del self.buffer[:GZIP_BLOCK]
            self._add(block, last=False)
        return len(data)

    def _add(self, block: bytes, last: bool) -> None:
        self.crc = zlib.crc32(block, self.crc)
        self.size += len(block)
        primer, self.primer = self.primer, block[-_WINDOW:]
        if self.pool is None or last:
            self._drain(0)
            self.sink.write(_deflate(block, primer, self.level, last))
        else:
            self.pending.append(self.pool().submit(_deflate, block, primer, self.level, last))
            self._drain(self.limit)

    def _drain(self, keep: int) -> None:
        """Write the finished blocks at the head, and wait for more until at most ``keep``
        are in flight. A worker's exception is raised here, in the writing thread."""
        while self.pending and (len(self.pending) > keep or self.pending[0].done()):
            self.sink.write(self.pending.popleft().result())

    def close(self) -> None:
        """End the member: the last block, then CRC-32 and size."""
        if not self.closed:
            self._add(bytes(self.buffer), last=True)
            self.sink.write(struct.pack("<II", self.crc, self.size & 0xFFFFFFFF))
        super().close()

    def discard(self) -> None:
        """Give up, writing nothing more: blocks not yet started are dropped, those being
        deflated finish unwritten (workers only return bytes)."""
        for future in self.pending:
            future.cancel()
        self.pending.clear()
        super().close()  # closed, so that nothing (not even garbage collection) ends it


@contextmanager
def _compressed_blob(
    store: BlobStore, compression: str, compresslevel: int
) -> Iterator[tuple[_HashingWriter, list[Layer]]]:
    """A writable uncompressed stream; on exit its compressed form is a blob of ``store``,
    described in the one-element list: adopted whole, or (on any failure, a worker's
    included) not at all. gzip: ``GzipBlocks`` at level ``compresslevel``; zstd: level
    ``ZSTD_LEVEL``, multi-threaded (one worker or more: their number changes no byte)."""
    out: list[Layer] = []
    with store.writer() as (f, temp):
        compressed = _HashingWriter(f)
        sink: BinaryIO
        if compression == "zstd":
            import zstandard  # only builds that ask for zstd pay for the import

            media_type = OCI_LAYER_ZSTD
            sink = zstandard.ZstdCompressor(level=ZSTD_LEVEL, threads=_cores()).stream_writer(
                compressed, closefd=False
            )
        else:
            media_type = OCI_LAYER_GZIP
            sink = GzipBlocks(compressed, compresslevel, _pool)  # type: ignore[assignment]
        raw = _HashingWriter(sink)
        try:
            yield raw, out
        except BaseException:
            if isinstance(sink, GzipBlocks):
                sink.discard()
            raise
        sink.close()
        f.flush()  # not closed before adopt: the lock goes with the descriptor
        digest = "sha256:" + compressed.sha.hexdigest()
        path = store.adopt(temp, digest)
    out.append(
        Layer(
            Descriptor(media_type, digest, compressed.size),
            "sha256:" + raw.sha.hexdigest(),
            path,
        )
    )


def write_layer(
    store: BlobStore,
    mappings: Sequence[TreeMapping | MemoryTree],
    *,
    mtime: int = DEFAULT_EPOCH,
    compression: str = "gzip",
    compresslevel: int = 6,
) -> Layer:
    """Write the trees (on disk or in memory) as one compressed layer blob (``compression``: gzip at
    ``compresslevel``, or zstd) into ``store`` and describe it.

    Parent directories of each target are written too (mode 0755), so the layer
    extracts the same on any base. Equal trees give byte-identical blobs.
    """
    with _compressed_blob(store, compression, compresslevel) as (raw, out):
        tar = _TarStream(raw)
        written: set[str] = set()
        for mapping in sorted(mappings, key=lambda m: m.target):
            target = PurePosixPath(mapping.target)
            for parent in reversed(target.parents):
                _add_dir(tar, str(parent), mtime, written)
            source = mapping.root() if isinstance(mapping, MemoryTree) else mapping.source
            _add_tree(tar, source, str(target).lstrip("/"), mtime, written, mapping.owner)
        tar.close()
    return out[0]


def compress(
    store: BlobStore, tar_stream: BinaryIO, compresslevel: int = 6, compression: str = "gzip"
) -> Layer:
    """Compress an uncompressed layer as ``write_layer`` does: the same tar gives the same
    blob."""
    with _compressed_blob(store, compression, compresslevel) as (raw, out):
        while chunk := tar_stream.read(1 << 20):
            raw.write(chunk)
    return out[0]


def _add_dir(
    tar: _TarStream,
    name: str,
    mtime: int,
    written: set[str],
    owner: tuple[int, int] = (0, 0),
) -> None:
    name = name.lstrip("/")
    if not name or name in written:
        return
    written.add(name)
    tar.write(_header(name + "/", tarfile.DIRTYPE, 0o755, mtime, owner))


def _add_tree(
    tar: _TarStream,
    node: Path | dict[str, object] | File | Symlink,
    name: str,
    mtime: int,
    written: set[str],
    owner: tuple[int, int],
) -> None:
    """Add ``node`` at ``name``, a directory's children in the order of their names: a
    path on disk, or a ``MemoryTree`` node (a dict is a directory)."""
    if isinstance(node, Path):
        st = node.lstat()
        if stat.S_ISDIR(st.st_mode):
            children: dict[str, object] = {child: node / child for child in os.listdir(node)}
            node = children
        elif stat.S_ISLNK(st.st_mode):
            node = Symlink(os.readlink(node))
        elif stat.S_ISREG(st.st_mode):
            size = st.st_size
            header = _header(name, tarfile.REGTYPE, _normal_mode(st.st_mode), mtime, owner, size)
            tar.add_file(header, node, size)
            return
        else:  # sockets, fifos and devices have no place in an application layer: skipped
            return
    if isinstance(node, dict):
        _add_dir(tar, name, mtime, written, owner)
        for child in sorted(node):
            path = f"{name}/{child}" if name else child
            _add_tree(tar, node[child], path, mtime, written, owner)  # type: ignore[arg-type]
    elif isinstance(node, Symlink):
        tar.write(_header(name, tarfile.SYMTYPE, 0o777, mtime, owner, 0, node.target))
    else:
        mode = 0o755 if node.executable else 0o644
        header = _header(name, tarfile.REGTYPE, mode, mtime, owner, len(node.data))
        tar.write(header + _padded(node.data))


class _Inflated(io.RawIOBase):
    """A gzip file inflated by ISA-L, about twice as fast as zlib, in a thread of its own
    that releases the GIL: a reader parsing what it inflates (a base's tar entries) works
    meanwhile. Its errors are raised as zlib's, which callers already handle."""

    def __init__(self, path: Path) -> None:
        from isal import igzip_threaded, isal_zlib  # only when a gzip layer is read

        self._error = isal_zlib.error
        self._stream = igzip_threaded.open(path, "rb")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        try:
            return self._stream.readinto(buffer)
        except self._error as e:
            raise zlib.error(str(e)) from None

    def close(self) -> None:
        if not self.closed:
            self._stream.close()
        super().close()


def open_layer(layer: Layer) -> BinaryIO:
    """The uncompressed tar stream of a layer blob."""
    media_type = layer.descriptor.media_type
    if media_type in (OCI_LAYER_GZIP, DOCKER_LAYER_GZIP) or media_type.endswith("gzip"):
        return _Inflated(layer.path)  # type: ignore[return-value]
    f = open(layer.path, "rb")  # noqa: SIM115  (the caller closes the returned stream)
    if media_type == OCI_LAYER_ZSTD or media_type.endswith("zstd"):
        import zstandard  # only for zstd layers (a base's, or ours)

        return zstandard.ZstdDecompressor().stream_reader(f, closefd=True)  # type: ignore[return-value]
    if media_type == OCI_LAYER or media_type.endswith(".tar"):
        return f
    f.close()
    raise ValueError(f"unknown layer media type {media_type}")


def iter_entries(layer: Layer) -> Iterator[tuple[tarfile.TarFile, tarfile.TarInfo]]:
    """Every entry of a layer, in order, with the open archive to read file content from."""
    with open_layer(layer) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
        for info in tar:
            yield tar, info
