"""Reproducible layers: same tree, same bytes, whatever the mtimes, owners or umask."""

from __future__ import annotations

import gzip
import os
import tarfile
from pathlib import Path

from buildpacks.oci.blobs import BlobStore, file_digest
from buildpacks.oci.layer import TreeMapping, write_layer


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
