"""Reproducible layers: same tree, same bytes, whatever the mtimes, owners or umask."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from pathlib import Path

import pytest

from buildpacks.oci.blobs import BlobStore, file_digest
from buildpacks.oci.layer import File, MemoryTree, Symlink, TreeMapping, write_layer


def make_tree(root: Path, stamp: int) -> Path:
    (root / "pkg" / "sub").mkdir(parents=True)
    (root / "pkg" / "b.py").write_text("b = 2\n")
    (root / "pkg" / "a.py").write_text("a = 1\n")
    (root / "pkg" / "sub" / "tool").write_text("#!/bin/sh\necho hi\n")
    (root / "pkg" / "sub" / "tool").chmod(0o775)
    (root / "pkg" / "link").symlink_to("a.py")
    for path in [root, *root.rglob("*")]:
        os.utime(path, (stamp, stamp), follow_symlinks=False)
    return root


def test_same_tree_same_digest_regardless_of_mtime(tmp_path):
    store = BlobStore(tmp_path / "store")
    one = write_layer(store, [TreeMapping(make_tree(tmp_path / "one", 1_000), "/layers/x")])
    two = write_layer(store, [TreeMapping(make_tree(tmp_path / "two", 2_000_000), "/layers/x")])
    assert one.digest == two.digest and one.diff_id == two.diff_id
    assert file_digest(one.path) == one.digest
    assert one.descriptor.size == one.path.stat().st_size


def test_a_tree_held_in_memory_gives_the_blob_of_the_same_tree_staged_on_disk(tmp_path):
    # Names that sort differently as whole paths than child by child ("a-b" < "a/" but
    # "a" < "a-b"), an executable, a symlink, an empty directory, an owner.
    files = {
        "a/x.py": File(b"x = 1\n"),
        "a-b/y.py": File(b"y = 2\n"),
        "bin/tool": File(b"#!/bin/sh\necho hi\n", executable=True),
        "bin/link": Symlink("tool"),
        "var": None,
    }
    root = tmp_path / "staged"
    for name, entry in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if entry is None:
            path.mkdir()
        elif isinstance(entry, Symlink):
            path.symlink_to(entry.target)
        else:
            path.write_bytes(entry.data)
            path.chmod(0o755 if entry.executable else 0o644)
    (tmp_path / "empty").mkdir()
    store = BlobStore(tmp_path / "store")
    for compression in ("zstd", "gzip"):
        on_disk = write_layer(
            store,
            [TreeMapping(root, "/layers/x"), TreeMapping(tmp_path / "empty", "/w", (1000, 1000))],
            compression=compression,
        )
        in_memory = write_layer(
            store,
            [MemoryTree(files, "/layers/x"), MemoryTree({}, "/w", (1000, 1000))],
            compression=compression,
        )
        assert in_memory.digest == on_disk.digest, compression
    with tarfile.open(in_memory.path) as tar:  # the gzip one
        names = tar.getnames()
        assert tar.getmember("w").uid == 1000
    assert names.index("layers/x/a/x.py") < names.index("layers/x/a-b/y.py")
    assert "w" in names and "layers/x/var" in names


def test_entries_sorted_owners_cleared_mtime_fixed_parents_present(tmp_path):
    store = BlobStore(tmp_path / "store")
    tree = [TreeMapping(make_tree(tmp_path / "t", 5), "/layers/x")]
    layer = write_layer(store, tree, mtime=1700000000)
    with tarfile.open(layer.path, "r:gz") as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    # Parents first, then depth-first in name order (tarfile drops directories' trailing /).
    assert names == [
        "layers",
        "layers/x",
        "layers/x/pkg",
        "layers/x/pkg/a.py",
        "layers/x/pkg/b.py",
        "layers/x/pkg/link",
        "layers/x/pkg/sub",
        "layers/x/pkg/sub/tool",
    ]
    assert [m.isdir() for m in members[:3]] == [True, True, True]
    assert {m.mtime for m in members} == {1700000000}
    assert {(m.uid, m.gid, m.uname, m.gname) for m in members} == {(0, 0, "", "")}
    modes = {m.name: m.mode for m in members}
    assert modes["layers/x/pkg/sub/tool"] == 0o755 and modes["layers/x/pkg/a.py"] == 0o644
    assert next(m for m in members if m.name.endswith("link")).linkname == "a.py"


def test_gzip_header_has_no_time_and_no_name(tmp_path):
    store = BlobStore(tmp_path / "store")
    layer = write_layer(store, [TreeMapping(make_tree(tmp_path / "t", 5), "/app")])
    header = layer.path.read_bytes()[:10]
    assert header[:3] == b"\x1f\x8b\x08"
    assert header[3] == 0  # FLG: no FNAME, no comment, no extra
    assert header[4:8] == b"\0\0\0\0"  # MTIME
    with gzip.open(layer.path) as g:
        import hashlib

        assert "sha256:" + hashlib.sha256(g.read()).hexdigest() == layer.diff_id


def test_owned_trees_are_owned_by_the_given_user_and_parents_by_root(tmp_path):
    (tmp_path / "w" / "sub").mkdir(parents=True)
    (tmp_path / "w" / "sub" / "f").write_text("x")
    store = BlobStore(tmp_path / "store")
    layer = write_layer(store, [TreeMapping(tmp_path / "w", "/srv/workspace", (1000, 1000))])
    with tarfile.open(layer.path, "r:gz") as tar:
        owners = {m.name: (m.uid, m.gid, m.uname, m.gname) for m in tar.getmembers()}
    assert owners == {
        "srv": (0, 0, "", ""),
        "srv/workspace": (1000, 1000, "", ""),
        "srv/workspace/sub": (1000, 1000, "", ""),
        "srv/workspace/sub/f": (1000, 1000, "", ""),
    }


def test_zstd_layers_are_reproducible_and_read_back(tmp_path):
    from buildpacks.oci.layer import iter_entries
    from buildpacks.oci.model import OCI_LAYER_ZSTD

    store = BlobStore(tmp_path / "store")
    tree = make_tree(tmp_path / "one", 1_000)
    gz = write_layer(store, [TreeMapping(tree, "/layers/x")])
    one = write_layer(store, [TreeMapping(tree, "/layers/x")], compression="zstd")
    two = write_layer(
        store, [TreeMapping(make_tree(tmp_path / "two", 2_000), "/layers/x")], compression="zstd"
    )
    assert one.descriptor.media_type == OCI_LAYER_ZSTD
    assert one.path.read_bytes()[:4] == b"\x28\xb5\x2f\xfd"  # the zstd frame magic
    assert one.digest == two.digest and one.digest != gz.digest
    assert one.diff_id == gz.diff_id  # the same tar inside
    names = [info.name for _, info in iter_entries(one)]
    assert names == [info.name for _, info in iter_entries(gz)]
    assert "layers/x/pkg/a.py" in names


def test_recompressing_a_layers_tar_gives_the_same_blob(tmp_path):
    """What restoring from a daemon (which keeps layers uncompressed) relies on."""
    from buildpacks.oci.layer import compress, open_layer

    store = BlobStore(tmp_path / "store")
    tree = make_tree(tmp_path / "one", 1_000)
    for compression in ("gzip", "zstd"):
        layer = write_layer(store, [TreeMapping(tree, "/layers/x")], compression=compression)
        with open_layer(layer) as tar:
            again = compress(BlobStore(tmp_path / compression), tar, 6, compression)
        assert again.digest == layer.digest and again.diff_id == layer.diff_id


def make_big_tree(root: Path, blocks: float) -> Path:
    """A tree whose tar spans ``blocks`` gzip blocks, compressible as code and binaries are
    (repeated words, some noise), in several files."""
    import random

    from buildpacks.oci.layer import GZIP_BLOCK

    rng = random.Random(7)
    words = [bytes(rng.choices(range(97, 123), k=rng.randint(2, 9))) for _ in range(500)]
    root.mkdir(parents=True)
    for n in range(int(blocks * 4)):
        data = b" ".join(rng.choices(words, k=GZIP_BLOCK // 24)) + rng.randbytes(GZIP_BLOCK // 16)
        (root / f"part{n:02}.bin").write_bytes(data[: GZIP_BLOCK // 4])
    return root


def test_gzip_layer_compressed_in_parallel_equals_serial_and_is_valid(tmp_path):
    """Blocks deflated by threads give, byte for byte, what one thread gives, and the blob
    is one valid gzip stream of the layer's tar (gzip -t, and Python's reader)."""
    import subprocess
    from concurrent.futures import ThreadPoolExecutor

    from buildpacks.oci.layer import GZIP_BLOCK, GzipBlocks, open_layer

    store = BlobStore(tmp_path / "store")
    tree = [TreeMapping(make_big_tree(tmp_path / "big", 5.5), "/layers/x")]
    layer = write_layer(store, tree, compresslevel=1)
    with open_layer(layer) as stream:
        tar = stream.read()
    assert len(tar) > 5 * GZIP_BLOCK  # several blocks, so several were in flight at once
    blob = layer.path.read_bytes()
    for pool in (None, ThreadPoolExecutor(1), ThreadPoolExecutor(4)):
        out = io.BytesIO()
        writer = GzipBlocks(out, 1, None if pool is None else lambda pool=pool: pool)
        for start in range(0, len(tar), 10_000):  # as tarfile writes: small pieces
            writer.write(tar[start : start + 10_000])
        writer.close()
        assert out.getvalue() == blob, pool
    assert layer.digest == write_layer(store, tree, compresslevel=1).digest
    assert gzip.decompress(blob) == tar
    assert subprocess.run(["gzip", "-t", str(layer.path)]).returncode == 0
    # The blocks' joins cost little: within 1% of one deflate stream over the whole tar.
    assert len(blob) < 1.01 * len(gzip.compress(tar, 1))


def test_small_gzip_layer_is_what_gzip_writes(tmp_path):
    """A layer of one block is deflated in the writing thread, as gzip.GzipFile does."""
    from buildpacks.oci.layer import open_layer

    store = BlobStore(tmp_path / "store")
    layer = write_layer(store, [TreeMapping(make_tree(tmp_path / "t", 5), "/app")])
    with open_layer(layer) as stream:
        tar = stream.read()
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, compresslevel=6, mtime=0) as g:
        g.write(tar)
    assert layer.path.read_bytes() == out.getvalue()


def test_zstd_layer_is_the_same_for_any_number_of_threads(tmp_path):
    """zstd's multi-threaded mode, which zstd layers use, writes the same bytes with one
    worker or four; zstd's own decoder checks and reads the blob."""
    import subprocess

    import zstandard

    from buildpacks.oci.layer import ZSTD_LEVEL, open_layer

    store = BlobStore(tmp_path / "store")
    tree = [TreeMapping(make_big_tree(tmp_path / "big", 5.5), "/layers/x")]
    layer = write_layer(store, tree, compression="zstd")
    with open_layer(layer) as stream:
        tar = stream.read()
    for threads in (1, 4):
        out = io.BytesIO()
        with zstandard.ZstdCompressor(level=ZSTD_LEVEL, threads=threads).stream_writer(
            out, closefd=False
        ) as writer:
            for start in range(0, len(tar), 10_000):
                writer.write(tar[start : start + 10_000])
        assert out.getvalue() == layer.path.read_bytes(), threads
    assert subprocess.run(["zstd", "-t", "-q", str(layer.path)]).returncode == 0


def _store_is_clean(root: Path) -> None:
    """A blob was begun (the temp directory exists), none adopted, no temp file left."""
    assert (root / "tmp").is_dir()
    assert not list(root.glob("sha256/*"))
    assert not list(root.glob("tmp/blob-*"))


def test_failing_deflate_thread_leaves_no_blob_and_one_error_line(tmp_path, monkeypatch):
    """A failure in a compression thread (here: zlib failing on the third block) reaches the
    build as the one error, and the store keeps nothing of the layer."""
    import zlib

    from buildpacks import errors
    from buildpacks.oci import layer as layer_module

    real = zlib.compressobj
    calls = []

    def failing(*args, **kwargs):
        calls.append(args)
        if len(calls) == 3:
            raise zlib.error("Error -2 while compressing data: inconsistent stream state")
        return real(*args, **kwargs)

    monkeypatch.setattr(layer_module.zlib, "compressobj", failing)
    store = BlobStore(tmp_path / "store")
    tree = [TreeMapping(make_big_tree(tmp_path / "big", 5.5), "/layers/x")]
    try:
        write_layer(store, tree, compresslevel=1)
    except zlib.error as e:
        lines = []
        assert errors.report(e, lines.append, {}) == 1
    else:
        raise AssertionError("the worker's failure was swallowed")
    assert len(lines) == 1 and lines[0].startswith("error: unexpected error: Error -2"), lines
    _store_is_clean(store.root)
    monkeypatch.undo()
    assert write_layer(store, tree, compresslevel=1).path.is_file()  # the next one works


UNREADABLE = """
import sys
from pathlib import Path
from buildpacks import errors
from buildpacks.oci.blobs import BlobStore
from buildpacks.oci.layer import File, MemoryTree, Symlink, TreeMapping, write_layer
tree, store = Path(sys.argv[1]), BlobStore(Path(sys.argv[2]))
try:
    write_layer(store, [TreeMapping(tree, "/layers/x")], compresslevel=1, compression=sys.argv[3])
except Exception as e:
    sys.exit(errors.report(e, print, {}))
"""


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_unreadable_file_in_the_tree_gives_one_error_line_and_no_blob(tmp_path, compression):
    """A real unreadable file, met after several blocks are in flight: one ``error:`` line
    naming it, and nothing of the layer in the store. (Root reads any file: as root, the
    writer runs as an unprivileged user of a user namespace, which root's files are not
    readable to.)"""
    import subprocess
    import sys

    tree = make_big_tree(tmp_path / "big", 5.5)
    secret = tree / "zz-secret.key"
    secret.write_text("not for the image\n")
    secret.chmod(0)
    store = tmp_path / "store"
    command = [sys.executable, "-X", "dev", "-c", UNREADABLE, str(tree), str(store), compression]
    if os.geteuid() == 0:
        command = ["unshare", "--user", "--map-user=1000", "--map-group=1000", *command]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.splitlines() == [f"error: {secret}: permission denied"], result.stdout
    assert result.stderr == ""  # no warning either (-X dev shows unclosed files and threads)
    _store_is_clean(store)


def test_a_damaged_gzip_layer_reads_as_zlibs_errors_say(tmp_path):
    """gzip layers are read by ISA-L in a thread; a damaged deflate stream is a zlib.error
    and a wrong CRC a BadGzipFile, as with Python's gzip (what callers catch), and the
    reading thread ends with the stream."""
    import threading
    import zlib

    from buildpacks.oci.layer import open_layer
    from buildpacks.oci.model import Layer

    store = BlobStore(tmp_path / "store")
    tree = [TreeMapping(make_big_tree(tmp_path / "big", 1.5), "/layers/x")]
    layer = write_layer(store, tree)
    with open_layer(layer) as stream:
        assert stream.read() == gzip.decompress(layer.path.read_bytes())
    blob = layer.path.read_bytes()
    threads = threading.active_count()
    for offset, error in ((20, zlib.error), (len(blob) - 8, gzip.BadGzipFile)):
        damaged = tmp_path / f"damaged-{offset}"
        damaged.write_bytes(blob[:offset] + b"\xff" * 4 + blob[offset + 4 :])
        with pytest.raises(error), open_layer(Layer(layer.descriptor, "", damaged)) as stream:
            while stream.read(1 << 16):
                pass
    assert threading.active_count() == threads


def _tarfile_reference(mappings: list[TreeMapping], mtime: int) -> bytes:
    """The tar that Python's tarfile writes (PAX format, stream mode) for ``mappings``, in
    the order and with the normalised metadata of ``write_layer``: what layers held when
    tarfile wrote them, and the reference our own writer must equal."""
    from pathlib import PurePosixPath

    out = io.BytesIO()
    written: set[str] = set()

    def info(name: str, kind: bytes, mode: int, owner: tuple[int, int]) -> tarfile.TarInfo:
        entry = tarfile.TarInfo(name)
        entry.type, entry.mode, entry.mtime = kind, mode, mtime
        entry.uid, entry.gid = owner
        entry.uname = entry.gname = ""
        return entry

    def directory(tar: tarfile.TarFile, name: str, owner: tuple[int, int]) -> None:
        name = name.lstrip("/")
        if name and name not in written:
            written.add(name)
            tar.addfile(info(name + "/", tarfile.DIRTYPE, 0o755, owner))

    def tree(tar: tarfile.TarFile, root: Path, name: str, owner: tuple[int, int]) -> None:
        if root.is_symlink():
            entry = info(name, tarfile.SYMTYPE, 0o777, owner)
            entry.linkname = os.readlink(root)
            tar.addfile(entry)
        elif root.is_dir():
            directory(tar, name, owner)
            for child in sorted(os.listdir(root)):
                tree(tar, root / child, f"{name}/{child}", owner)
        else:
            mode = 0o755 if root.stat().st_mode & 0o111 else 0o644
            entry = info(name, tarfile.REGTYPE, mode, owner)
            entry.size = root.stat().st_size
            with open(root, "rb") as f:
                tar.addfile(entry, f)

    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for mapping in sorted(mappings, key=lambda m: m.target):
            target = PurePosixPath(mapping.target)
            for parent in reversed(target.parents):
                directory(tar, str(parent), (0, 0))
            tree(tar, mapping.source, str(target).lstrip("/"), mapping.owner)
    return out.getvalue()


def test_layer_tar_is_byte_for_byte_what_tarfile_writes(tmp_path):
    """Our tar writer (headers built here, a small file in one write) gives tarfile's bytes,
    for the names and sizes that need more than a ustar header: names and links over 100
    characters or not ASCII, a name that is not UTF-8, a uid too large for its field,
    files of 0, 512 and more than a read's worth of bytes."""
    from buildpacks.oci.layer import open_layer

    root = tmp_path / "tree"
    deep = root / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    (deep / "f.py").write_text("x = 1\n")  # a path of about 130 characters
    # Under layers/x/venv/ (14 characters): names of 100 and 101 characters.
    (root / ("n" * 86)).write_text("exactly 100\n")
    (root / ("m" * 87)).write_text("101\n")
    (root / "café-日本.txt").write_text("not ascii\n")
    (root / os.fsdecode(b"raw-\xff\xfe.bin")).write_bytes(b"not utf-8\n")
    (root / "empty").write_bytes(b"")
    (root / "block").write_bytes(b"b" * 512)
    (root / "big.so").write_bytes(os.urandom((1 << 20) + 3))
    (root / "big.so").chmod(0o755)
    (root / "long-link").symlink_to("l" * 120)
    (root / "link-é").symlink_to("café-日本.txt")
    mappings = [
        TreeMapping(root, "/layers/x/venv"),
        TreeMapping(make_tree(tmp_path / "app", 5), "/workspace", (1000, 1000)),
        TreeMapping(make_tree(tmp_path / "huge-uid", 5), "/home/u", (1 << 21, 7)),
    ]
    for compression in ("gzip", "zstd"):
        layer = write_layer(BlobStore(tmp_path / "store"), mappings, compression=compression)
        with open_layer(layer) as stream:
            assert stream.read() == _tarfile_reference(mappings, 315532801), compression
