"""Layers of trees held in memory, reused from the local cache by their content
(``builtin.memory_layer``, keyed by ``layer.memory_digest``): the same trees give the cached
layer without writing a blob; any other input gives the layer a fresh write gives."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest

import buildpacks.builtin
from buildpacks.builtin import BuildContext, memory_layer
from buildpacks.oci.blobs import BlobStore
from buildpacks.oci.layer import File, MemoryTree, Symlink, memory_digest, write_layer


def trees(**change: object) -> list[MemoryTree]:
    """Launch-layer-like trees; ``change`` replaces one of their parts."""
    entries = {
        "metadata.toml": change.get("content", File(b'type = "web"\n')),
        "bin/run": File(b"#!/bin/sh\n", change.get("executable", True)),  # type: ignore[arg-type]
        "link": Symlink(change.get("link", "/usr/bin/python3")),  # type: ignore[arg-type]
        change.get("path", "empty"): None,
    }
    return [
        MemoryTree(entries, change.get("target", "/layers/config")),  # type: ignore[arg-type]
        MemoryTree({}, "/home/cnb", change.get("owner", (1000, 1000))),  # type: ignore[arg-type]
    ]


CHANGES = {
    "content": File(b'type = "worker"\n'),
    "executable": False,
    "link": "/usr/bin/python3.11",
    "path": "other",
    "target": "/layers/other",
    "owner": (1001, 1000),
}


def context(tmp_path: Path, **config: object) -> BuildContext:
    settings = {
        "clear_cache": False,
        "cache_dir": tmp_path / "cache",
        "source_date_epoch": 315532801,
        "layer_compression": "gzip",
        **config,
    }
    store = BlobStore(tmp_path / "cache" / "blobs")
    return BuildContext(
        SimpleNamespace(**settings),  # type: ignore[arg-type]
        None,
        None,  # type: ignore[arg-type]
        store,
        lambda: tmp_path,
        lambda line: None,
    )


def fresh(tmp_path: Path, given: list[MemoryTree], **config: object):
    """The layer ``write_layer`` gives for ``given``, in a store of its own."""
    settings = {"source_date_epoch": 315532801, "layer_compression": "gzip", **config}
    store = BlobStore(tmp_path / f"fresh-{os.urandom(4).hex()}")
    return write_layer(
        store,
        given,
        mtime=settings["source_date_epoch"],  # type: ignore[arg-type]
        compression=settings["layer_compression"],  # type: ignore[arg-type]
    )


def test_the_digest_names_every_part_of_the_trees():
    base = memory_digest(trees())
    assert memory_digest(trees()) == base
    for name, value in CHANGES.items():
        assert memory_digest(trees(**{name: value})) != base, name
    assert memory_digest(list(reversed(trees()))) != base
    # A file's content, not its identity: equal bytes are the same tree.
    assert memory_digest(trees(content=File(b'type = "web"\n'))) == base


def test_the_same_trees_give_the_cached_layer_with_no_blob_written(tmp_path, monkeypatch):
    ctx = context(tmp_path)
    first = memory_layer(ctx, trees())
    assert first.digest == fresh(tmp_path, trees()).digest

    def no_write(*args, **kwargs):
        raise AssertionError("a blob was written for trees the cache has")

    monkeypatch.setattr(buildpacks.builtin, "write_layer", no_write)
    again = memory_layer(context(tmp_path), trees())
    assert (again.digest, again.diff_id) == (first.digest, first.diff_id)


@pytest.mark.parametrize("name", sorted(CHANGES))
def test_other_trees_give_their_own_layer_never_the_cached_one(tmp_path, name):
    ctx = context(tmp_path)
    cached = memory_layer(ctx, trees())
    changed = trees(**{name: CHANGES[name]})
    layer = memory_layer(context(tmp_path), changed)
    assert layer.digest != cached.digest
    assert layer.digest == fresh(tmp_path, changed).digest


@pytest.mark.parametrize(
    "config", [{"source_date_epoch": 1700000000}, {"layer_compression": "zstd"}]
)
def test_another_date_or_compression_gives_its_own_layer(tmp_path, config):
    cached = memory_layer(context(tmp_path), trees())
    layer = memory_layer(context(tmp_path, **config), trees())
    assert layer.digest != cached.digest
    assert layer.digest == fresh(tmp_path, trees(), **config).digest


def test_other_layer_code_gives_a_new_key(tmp_path, monkeypatch):
    memory_layer(context(tmp_path), trees())
    records = set((tmp_path / "cache" / "layers").iterdir())
    monkeypatch.setattr(buildpacks.builtin, "code_key", lambda *modules: "other code")
    memory_layer(context(tmp_path), trees())
    assert len(set((tmp_path / "cache" / "layers").iterdir()) - records) == 1


@pytest.mark.parametrize("damage", ["removed", "altered"])
def test_a_damaged_cached_blob_is_written_again(tmp_path, damage):
    first = memory_layer(context(tmp_path), trees())
    blob = BlobStore(tmp_path / "cache" / "blobs").path(first.digest)
    if damage == "removed":
        blob.unlink()
    else:
        blob.write_bytes(blob.read_bytes()[:-4] + b"XXXX")
    again = memory_layer(context(tmp_path), trees())
    assert again.digest == first.digest
    assert BlobStore(tmp_path / "cache" / "blobs").has(first.digest)


def test_clear_cache_writes_the_layer_again(tmp_path):
    first = memory_layer(context(tmp_path), trees())
    blob = BlobStore(tmp_path / "cache" / "blobs").path(first.digest)
    before = blob.stat().st_ino
    again = memory_layer(context(tmp_path, clear_cache=True), trees())
    assert again.digest == first.digest
    assert blob.stat().st_ino != before  # a new file renamed into place
