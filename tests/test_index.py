"""The image-index model (``Index.manifest()``) and an index written to an archive, read back
by skopeo and by our own layout reader."""

from __future__ import annotations

import json
import subprocess
import tarfile

import pytest

from buildpacks.oci.archive import ArchiveWriter, archive_digest, write_archive
from buildpacks.oci.blobs import BlobStore
from buildpacks.oci.layer import TreeMapping, write_layer
from buildpacks.oci.model import OCI_INDEX, OCI_MANIFEST, Image, Index, Platform, combine
from buildpacks.oci.source import open_image

AMD64 = Platform("linux", "amd64")
ARM64 = Platform("linux", "arm64", "v8")


def make_image(tmp_path, store: BlobStore, platform: Platform, shared=None) -> Image:
    """An image of ``platform`` with a layer of its own, then ``shared`` (a layer the other
    platform's image has too, as the app layer of a multi-platform build is)."""
    tree = tmp_path / f"tree-{platform.architecture}"
    tree.mkdir()
    (tree / "machine").write_text(platform.machine * 500)
    own = write_layer(store, [TreeMapping(tree, "/etc/machine")])
    layers = [own, *([shared] if shared else [])]
    config = {
        "architecture": platform.architecture,
        "os": platform.os,
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
    }
    if platform.variant:
        config["variant"] = platform.variant
    return Image(config, layers)


@pytest.fixture
def two(tmp_path):
    store = BlobStore(tmp_path / "store")
    app = tmp_path / "app"
    app.mkdir()
    (app / "main.py").write_text("print('hi')\n")
    shared = write_layer(store, [TreeMapping(app, "/app")])
    return (
        make_image(tmp_path, store, AMD64, shared),
        make_image(tmp_path, store, ARM64, shared),
        shared,
        store,
    )


def test_index_manifest_lists_each_image_with_its_platform_in_the_given_order(two):
    amd, arm, _, _ = two
    index = Index((amd, arm), "app:1")
    manifest = index.manifest()
    assert manifest["schemaVersion"] == 2
    assert manifest["mediaType"] == OCI_INDEX
    assert [m["platform"] for m in manifest["manifests"]] == [
        {"os": "linux", "architecture": "amd64"},
        {"os": "linux", "architecture": "arm64", "variant": "v8"},
    ]
    assert [m["digest"] for m in manifest["manifests"]] == [amd.digest(), arm.digest()]
    assert [m["size"] for m in manifest["manifests"]] == [
        len(amd.manifest_bytes()),
        len(arm.manifest_bytes()),
    ]
    assert {m["mediaType"] for m in manifest["manifests"]} == {OCI_MANIFEST}
    assert json.loads(index.manifest_bytes()) == manifest
    # Same images, same digest; another order is another index.
    assert Index((amd, arm)).digest() == index.digest()
    assert Index((arm, amd)).digest() != index.digest()
    assert index.platforms == (AMD64, ARM64)


def test_index_annotations_and_refusals(two):
    amd, arm, _, _ = two
    annotated = Index((amd, arm), annotations={"org.opencontainers.image.version": "1"})
    assert annotated.manifest()["annotations"] == {"org.opencontainers.image.version": "1"}
    assert annotated.digest() != Index((amd, arm)).digest()
    with pytest.raises(ValueError, match="twice"):
        Index((amd, amd))
    with pytest.raises(ValueError, match="at least one"):
        Index(())


def test_image_for_host_image_and_combine(two, tmp_path):
    amd, arm, _, store = two
    index = Index((amd, arm))
    assert index.image_for(Platform("linux", "arm64")) is arm  # no variant asked: matches v8
    assert index.image_for(AMD64) is amd
    assert index.image_for(Platform("linux", "s390x")) is None
    assert index.host_image() is amd  # this machine's (x86-64)
    s390x = make_image(tmp_path, store, Platform("linux", "s390x"))
    assert Index((arm, s390x)).host_image() is arm  # none for this machine: the first
    assert combine([amd]) is amd  # one platform: the image itself, its digest as before
    assert isinstance(combine([amd, arm], "app:1"), Index)


def test_index_archive_nests_the_index_and_names_the_host_image_for_docker_load(two, tmp_path):
    amd, arm, shared, _ = two
    index = Index((arm, amd), "app:1")  # the host's (amd64 here) second: manifest.json picks it
    archive = tmp_path / "dist" / "app-1.tar"
    write_archive(index, archive, "app:1", 0)
    assert archive_digest(archive) == index.digest()
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        top = json.load(tar.extractfile("index.json"))
        docker = json.load(tar.extractfile("manifest.json"))
    assert names.count(f"blobs/sha256/{shared.digest.split(':')[1]}") == 1  # shared: once
    assert top["manifests"][0]["mediaType"] == OCI_INDEX
    assert top["manifests"][0]["digest"] == index.digest()
    assert top["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] == "app:1"
    host = index.host_image()
    assert host.platform.architecture == Platform.host().architecture
    assert docker == [
        {
            "Config": "blobs/sha256/" + host.config_descriptor().digest.split(":")[1],
            "RepoTags": ["app:1"],
            "Layers": ["blobs/sha256/" + layer.digest.split(":")[1] for layer in host.layers],
        }
    ]
    # skopeo, a reader we did not write, sees the index and each platform's image.
    raw = subprocess.run(
        ["skopeo", "inspect", "--raw", f"oci-archive:{archive}"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(raw.stdout) == index.manifest()
    for platform, image in ((AMD64, amd), (ARM64, arm)):
        arch = subprocess.run(
            [
                "skopeo",
                "--override-arch",
                platform.architecture,
                "inspect",
                "--config",
                f"oci-archive:{archive}",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        assert json.loads(arch.stdout)["rootfs"] == image.config["rootfs"]
        read = open_image(f"oci-archive:{archive}", platform, BlobStore(tmp_path / "read"))
        assert read.digest() == image.digest()


def test_index_archive_started_with_the_first_images_layers_is_the_same_bytes(two, tmp_path):
    amd, arm, _, _ = two
    index = Index((amd, arm), "app:1")
    whole, split = tmp_path / "whole.tar", tmp_path / "split.tar"
    write_archive(index, whole, "app:1", 0)
    writer = ArchiveWriter(split, 0)
    writer.start(amd.layers[:1])
    writer.finish(index, "app:1")
    assert split.read_bytes() == whole.read_bytes()
    wrong = ArchiveWriter(tmp_path / "wrong.tar", 0)
    wrong.start(arm.layers[:1])
    with pytest.raises(ValueError, match="does not begin with"):
        wrong.finish(index, "app:1")
    wrong.discard()


def test_index_archive_written_on_after_the_shared_layer_changed_is_the_same_bytes(two, tmp_path):
    """A warm rebuild for two platforms: the shared app layer changes, each platform's own
    layer does not. The archive in place is written on from its first entries; the bytes
    are those of a whole write."""
    amd, arm, _, store = two
    archive, ledger = tmp_path / "dist" / "app.tar", tmp_path / "cache" / "ledger.json"

    def written_on(index: Index) -> None:
        writer = ArchiveWriter(archive, 0, None, ledger)
        writer.start(index.images[0].layers[:1])
        writer.finish(index, "app:1")
        writer.discard()

    written_on(Index((amd, arm), "app:1"))
    inode = archive.stat().st_ino
    app = tmp_path / "app2"
    app.mkdir()
    (app / "main.py").write_text("print('edited')\n")
    shared = write_layer(store, [TreeMapping(app, "/app")])

    def edited(image: Image) -> Image:
        layers = [image.layers[0], shared]
        rootfs = {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]}
        return Image({**image.config, "rootfs": rootfs}, layers)

    index = Index((edited(amd), edited(arm)), "app:1")
    written_on(index)
    whole = tmp_path / "whole.tar"
    write_archive(index, whole, "app:1", 0)
    assert archive.read_bytes() == whole.read_bytes()
    assert archive.stat().st_ino == inode
    assert archive_digest(archive) == index.digest()
