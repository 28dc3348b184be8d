"""Our archive read back by other tools' readers (skopeo, oci-image-tool, umoci) and by
our own base-image backends; docker-archive and oci-archive bases."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from buildpacks.errors import BuildError
from buildpacks.oci.archive import ArchiveWriter, write_archive
from buildpacks.oci.blobs import BlobStore
from buildpacks.oci.layer import TreeMapping, write_layer
from buildpacks.oci.model import Image, Platform
from buildpacks.oci.source import open_image, open_source

AMD64 = Platform("linux", "amd64")


@pytest.fixture
def image(tmp_path) -> tuple[Image, BlobStore]:
    store = BlobStore(tmp_path / "store")
    tree = tmp_path / "tree"
    (tree / "bin").mkdir(parents=True)
    (tree / "bin" / "hello").write_text("#!/bin/sh\necho hello\n")
    layer = write_layer(store, [TreeMapping(tree, "/opt/app")])
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Entrypoint": ["/opt/app/bin/hello"], "User": "1000:1000"},
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]},
    }
    return Image(config, [layer]), store


def test_archive_is_deterministic_and_atomic(image, tmp_path):
    img, _ = image
    a, b = tmp_path / "a" / "x.tar", tmp_path / "b" / "x.tar"
    write_archive(img, a, "app:1", 0)
    write_archive(img, b, "app:1", 0)
    assert a.read_bytes() == b.read_bytes()
    assert [p.name for p in a.parent.iterdir()] == ["x.tar"]  # no temp file left beside it


def two_layer_image(tmp_path, store: BlobStore) -> Image:
    layers = []
    for name in ("base", "app"):
        tree = tmp_path / name
        tree.mkdir()
        (tree / f"{name}.txt").write_text(name * 1000)
        layers.append(write_layer(store, [TreeMapping(tree, f"/{name}")]))
    config = {
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
    }
    return Image(config, layers)


def test_archive_begun_early_has_the_same_bytes(image, tmp_path):
    _, store = image
    img = two_layer_image(tmp_path, store)
    whole, split = tmp_path / "whole" / "x.tar", tmp_path / "split" / "x.tar"
    write_archive(img, whole, "app:1", 0)
    writer = ArchiveWriter(split, 0)
    writer.start(img.layers[:1])  # the run image's layers, while the buildpacks run
    writer.finish(img, "app:1")
    writer.discard()
    assert split.read_bytes() == whole.read_bytes()
    assert [p.name for p in split.parent.iterdir()] == ["x.tar"]


def test_archive_begun_and_abandoned_leaves_nothing(image, tmp_path):
    _, store = image
    img = two_layer_image(tmp_path, store)
    out = tmp_path / "dist"
    writer = ArchiveWriter(out / "x.tar", 0)
    writer.start(img.layers[:1])
    writer.discard()  # the build failed after analyze
    assert list(out.iterdir()) == []
    writer = ArchiveWriter(out / "x.tar", 0)
    writer.start(img.layers[1:])  # not the layers the image begins with
    with pytest.raises(ValueError):
        writer.finish(img, "app:1")
    writer.discard()
    assert list(out.iterdir()) == []


def test_other_tools_read_the_archive(image, tmp_path):
    img, _ = image
    archive = tmp_path / "img.tar"
    write_archive(img, archive, "app:1", 0)
    # skopeo names docker-archive layers by their uncompressed digest.
    for transport, digest in (
        ("oci-archive", img.layers[0].digest),
        ("docker-archive", img.layers[0].diff_id),
    ):
        out = subprocess.run(
            ["skopeo", "inspect", f"{transport}:{archive}"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert json.loads(out.stdout)["Layers"] == [digest]
    layout = unpacked(archive, tmp_path / "layout")
    subprocess.run(
        ["oci-image-tool", "validate", "--type", "image", "--ref", "name=app:1", str(layout)],
        check=True,
        capture_output=True,
    )
    bundle = tmp_path / "bundle"
    subprocess.run(
        ["umoci", "unpack", "--image", f"{layout}:app:1", str(bundle)],
        check=True,
        capture_output=True,
    )
    assert (bundle / "rootfs" / "opt" / "app" / "bin" / "hello").read_text().startswith("#!/bin/sh")


def test_bases_from_each_transport_round_trip(image, tmp_path):
    img, _ = image
    archive = tmp_path / "img.tar"
    write_archive(img, archive, "app:1", 0)
    docker_archive = tmp_path / "docker.tar"
    subprocess.run(
        ["skopeo", "copy", f"oci-archive:{archive}", f"docker-archive:{docker_archive}:app:1"],
        check=True,
        capture_output=True,
    )
    layout = tmp_path / "layout"
    subprocess.run(
        ["skopeo", "copy", f"oci-archive:{archive}", f"oci:{layout}:v1"],
        check=True,
        capture_output=True,
    )
    for spec in (
        f"oci-archive:{archive}",
        f"oci-layout:{layout}:v1",
        f"docker-archive:{docker_archive}",
    ):
        store = BlobStore(tmp_path / ("store-" + spec.split(":")[0]))
        base = open_image(spec, AMD64, store)
        assert [layer.diff_id for layer in base.layers] == [img.layers[0].diff_id], spec
        assert base.config["config"]["Entrypoint"] == ["/opt/app/bin/hello"]
        assert all(layer.path.is_file() for layer in base.layers)


def unpacked(archive: Path, layout: Path) -> Path:
    """``archive`` extracted by ``tar`` into the directory ``layout``: an OCI layout."""
    layout.mkdir()
    subprocess.run(["tar", "-xf", str(archive), "-C", str(layout)], check=True)
    return layout


def test_corrupt_blob_in_a_layout_is_refused(image, tmp_path):
    img, _ = image
    archive = tmp_path / "img.tar"
    write_archive(img, archive, "app:1", 0)
    layout = unpacked(archive, tmp_path / "layout")
    blob = layout / "blobs" / "sha256" / img.layers[0].digest.split(":")[1]
    blob.write_bytes(blob.read_bytes()[:-5] + b"XXXXX")
    with pytest.raises(BuildError, match="does not match"):
        open_image(f"oci-layout:{layout}", AMD64, BlobStore(tmp_path / "fresh"))


def test_opening_an_archive_stores_no_manifest_or_config(image, tmp_path):
    """What restore reads of the previous archive (new at every build) is parsed, checked
    against its digest, and not copied into the store; its layers are, when fetched."""
    img, _ = image
    archive = tmp_path / "img.tar"
    write_archive(img, archive, "app:1", 0)
    store = BlobStore(tmp_path / "fresh")
    with open_source(f"oci-archive:{archive}", AMD64, store) as source:
        assert source.config == img.config
        assert source.manifest_digest == img.digest()
        assert not store.has(img.digest()) and not store.has(img.config_descriptor().digest)
        layer = source.layer(0)
        assert store.has(img.layers[0].digest) and layer.path == store.path(layer.digest)


@pytest.mark.parametrize("blob", ["manifest", "config"])
@pytest.mark.parametrize(
    "damage, message",
    [
        ("altered", r"blob sha256:\w+: content digest sha256:\w+ does not match"),
        ("removed", r"blob sha256:\w+ is missing from the layout"),
    ],
)
def test_a_damaged_manifest_or_config_in_a_layout_is_refused(
    image, tmp_path, blob, damage, message
):
    img, _ = image
    archive = tmp_path / "img.tar"
    write_archive(img, archive, "app:1", 0)
    layout = unpacked(archive, tmp_path / "layout")
    digest = img.digest() if blob == "manifest" else img.config_descriptor().digest
    path = layout / "blobs" / "sha256" / digest.split(":")[1]
    if damage == "removed":
        path.unlink()
    else:
        path.write_bytes(path.read_bytes()[:-2] + b"XX")
    with pytest.raises(BuildError, match=message):
        open_image(f"oci-layout:{layout}", AMD64, BlobStore(tmp_path / "fresh"))


def test_wrong_platform_and_unknown_tag(image, tmp_path):
    img, _ = image
    archive = tmp_path / "img.tar"
    write_archive(img, archive, "app:1", 0)
    with pytest.raises(BuildError, match="is for linux/amd64, the build targets linux/arm64"):
        open_image(f"oci-archive:{archive}", Platform("linux", "arm64"), BlobStore(tmp_path / "s"))
    layout = tmp_path / "layout"
    subprocess.run(
        ["skopeo", "copy", f"oci-archive:{archive}", f"oci:{layout}:v1"],
        check=True,
        capture_output=True,
    )
    with pytest.raises(BuildError, match="no image tagged 'v2' \\(tags: v1\\)"):
        open_image(f"oci-layout:{layout}:v2", AMD64, BlobStore(tmp_path / "s"))


def test_archive_tar_stream_is_what_tarfile_writes(tmp_path):
    import io
    import os
    import tarfile

    from buildpacks.oci.archive import _TarStream

    blob = tmp_path / "blob"
    blob.write_bytes(os.urandom(70_001))
    with open(tmp_path / "ours.tar", "wb") as f:
        stream = _TarStream(f, 5)
        stream.add("index.json", b"{}")
        stream.add("blobs/sha256/ab", blob)
        stream.close()
    with (
        open(tmp_path / "tarfile.tar", "wb") as f,
        tarfile.open(fileobj=f, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for name, data in (("index.json", b"{}"), ("blobs/sha256/ab", blob.read_bytes())):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 5, 0o644
            tar.addfile(info, io.BytesIO(data))
    assert (tmp_path / "ours.tar").read_bytes() == (tmp_path / "tarfile.tar").read_bytes()


def rebuilt_image(tmp_path, store: BlobStore, base: Image, text: str) -> Image:
    """``base`` with its last layer replaced by one holding ``text``: a warm rebuild."""
    tree = tmp_path / f"edit-{len(text)}"
    tree.mkdir()
    (tree / "app.txt").write_text(text)
    layers = [*base.layers[:-1], write_layer(store, [TreeMapping(tree, "/app")])]
    config = {
        **base.config,
        "rootfs": {"type": "layers", "diff_ids": [la.diff_id for la in layers]},
    }
    return Image(config, layers)


def write_with_ledger(img: Image, path, ledger, retire=None) -> ArchiveWriter:
    writer = ArchiveWriter(path, 0, retire, ledger)
    writer.start(img.layers[:1])
    writer.finish(img, "app:1")
    writer.discard()
    return writer


def test_a_rebuilt_archive_is_written_on_from_the_kept_entries(image, tmp_path):
    """The archive in place is cut after the entries the new one shares and written on:
    the result has the bytes of a whole write, and the shared layer is not copied again
    (the file is the same inode, its first bytes never rewritten)."""
    _, store = image
    first = two_layer_image(tmp_path, store)
    out, ledger = tmp_path / "dist" / "x.tar", tmp_path / "cache" / "ledger.json"
    write_with_ledger(first, out, ledger)
    inode = out.stat().st_ino
    second = rebuilt_image(tmp_path, store, first, "edited " * 300)
    writer = write_with_ledger(second, out, ledger)
    assert writer.tar.existing == []  # cut: the app layer differed
    whole = tmp_path / "whole" / "x.tar"
    write_archive(second, whole, "app:1", 0)
    assert out.read_bytes() == whole.read_bytes()
    assert out.stat().st_ino == inode  # written on, not copied
    assert [p.name for p in out.parent.iterdir()] == ["x.tar"]
    # A third build, shorter than the second: the tail of the longer file is cut away.
    third = rebuilt_image(tmp_path, store, first, "e")
    write_with_ledger(third, out, ledger)
    write_archive(third, whole, "app:1", 0)
    assert out.read_bytes() == whole.read_bytes()
    assert out.stat().st_ino == inode


@pytest.mark.parametrize(
    "change",
    ["rewritten in place", "touched", "replaced", "ledger of another mtime", "ledger corrupt"],
)
def test_an_archive_not_as_the_ledger_left_it_is_written_whole(image, tmp_path, change):
    """The kept entries are trusted only while the file is the one the writer left: a file
    changed in any way since (even to its old size and times) is written anew."""
    import os

    _, store = image
    first = two_layer_image(tmp_path, store)
    out, ledger = tmp_path / "dist" / "x.tar", tmp_path / "cache" / "ledger.json"
    write_with_ledger(first, out, ledger)
    st = out.stat()
    if change == "rewritten in place":
        data = bytearray(out.read_bytes())
        data[1024] ^= 0xFF  # inside the first layer's bytes
        with open(out, "r+b") as f:
            f.write(bytes(data))
        os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns))
    elif change == "touched":
        os.utime(out)
    elif change == "replaced":
        copy = out.with_name("copy")
        copy.write_bytes(out.read_bytes())
        os.replace(copy, out)
    elif change == "ledger of another mtime":
        note = json.loads(ledger.read_text())
        ledger.write_text(json.dumps({**note, "mtime": 1}))
    else:
        ledger.write_text("{")
    inode = out.stat().st_ino
    second = rebuilt_image(tmp_path, store, first, "edited")
    write_with_ledger(second, out, ledger)
    whole = tmp_path / "whole" / "x.tar"
    write_archive(second, whole, "app:1", 0)
    assert out.read_bytes() == whole.read_bytes()
    assert out.stat().st_ino != inode  # a new file
    assert [p.name for p in out.parent.iterdir()] == ["x.tar"]


def test_a_failed_build_leaves_the_archive_in_place(image, tmp_path):
    """A build that fails before its archive is finished leaves the one in place as it was,
    and the next build still writes on from it."""
    _, store = image
    first = two_layer_image(tmp_path, store)
    out, ledger = tmp_path / "dist" / "x.tar", tmp_path / "cache" / "ledger.json"
    write_with_ledger(first, out, ledger)
    before = out.read_bytes()
    writer = ArchiveWriter(out, 0, None, ledger)
    writer.start(first.layers[:1])
    writer.discard()  # a buildpack failed
    assert out.read_bytes() == before
    assert [p.name for p in out.parent.iterdir()] == ["x.tar"]
    inode = out.stat().st_ino
    write_with_ledger(rebuilt_image(tmp_path, store, first, "edited"), out, ledger)
    assert out.stat().st_ino == inode


def test_an_archive_held_by_another_writer_is_not_taken(image, tmp_path):
    """Two builds into one archive: the second does not take the file the first holds; it
    writes its own, whole."""
    import fcntl
    import os

    _, store = image
    first = two_layer_image(tmp_path, store)
    out, ledger = tmp_path / "dist" / "x.tar", tmp_path / "cache" / "ledger.json"
    write_with_ledger(first, out, ledger)
    fd = os.open(out, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        inode = out.stat().st_ino
        second = rebuilt_image(tmp_path, store, first, "edited")
        write_with_ledger(second, out, ledger)
        assert out.stat().st_ino != inode
        whole = tmp_path / "whole" / "x.tar"
        write_archive(second, whole, "app:1", 0)
        assert out.read_bytes() == whole.read_bytes()
    finally:
        os.close(fd)
