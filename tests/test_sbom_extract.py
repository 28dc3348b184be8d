"""``buildpacks sbom`` names: flat files for one SBOM owner, one name per layer for several."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from buildpacks.cnb import LIFECYCLE
from buildpacks.errors import BuildError
from buildpacks.oci.blobs import BlobStore
from buildpacks.oci.layer import TreeMapping, write_layer
from buildpacks.oci.model import ImageSource
from buildpacks.sbom import SBOM_ROOT, extract


def image_with_sbom(tmp_path: Path, owners: list[str]) -> ImageSource:
    """An image whose SBOM layer holds sbom.cdx.json and sbom.spdx.json for each owner."""
    mappings = []
    for owner in owners:
        stage = tmp_path / "stage" / owner.replace("/", "-")
        stage.mkdir(parents=True)
        for name in ("sbom.cdx.json", "sbom.spdx.json"):
            (stage / name).write_text(json.dumps({"owner": owner, "file": name}))
        mappings.append(TreeMapping(stage, f"{SBOM_ROOT}/{owner}"))
    layer = write_layer(BlobStore(tmp_path / "blobs"), mappings, mtime=0)
    label = {"runImage": {"topLayer": "sha256:" + "0" * 64}, "sbom": {"sha": layer.diff_id}}
    return ImageSource(
        reference="test-image",
        manifest={"layers": [layer.descriptor.to_json()]},
        manifest_digest="sha256:" + "1" * 64,
        config={
            "rootfs": {"diff_ids": [layer.diff_id]},
            "config": {"Labels": {LIFECYCLE: json.dumps(label)}},
        },
        fetch=lambda descriptor: layer.path,
    )


def test_one_owner_gives_flat_names(tmp_path):
    source = image_with_sbom(tmp_path, ["python-buildpacks_dependencies/venv"])
    written = extract(source, tmp_path / "out")
    assert [p.name for p in written] == ["sbom.cdx.json", "sbom.spdx.json"]
    assert all(p.parent == tmp_path / "out" for p in written)
    assert json.loads(written[0].read_text())["file"] == "sbom.cdx.json"


def test_several_owners_give_one_name_per_layer(tmp_path):
    owners = ["python-buildpacks_dependencies/venv", "python-buildpacks_application/app"]
    written = extract(image_with_sbom(tmp_path, owners), tmp_path / "out")
    assert sorted(p.name for p in written) == [
        "python-buildpacks_application-app.sbom.cdx.json",
        "python-buildpacks_application-app.sbom.spdx.json",
        "python-buildpacks_dependencies-venv.sbom.cdx.json",
        "python-buildpacks_dependencies-venv.sbom.spdx.json",
    ]
    app = tmp_path / "out" / "python-buildpacks_application-app.sbom.spdx.json"
    assert json.loads(app.read_text())["owner"] == "python-buildpacks_application/app"


def test_image_without_sbom_layer_is_refused(tmp_path):
    source = image_with_sbom(tmp_path, ["x/y"])
    source.config["config"]["Labels"][LIFECYCLE] = json.dumps(
        {"runImage": {"topLayer": "sha256:" + "0" * 64}}
    )
    with pytest.raises(BuildError, match="test-image carries no SBOM layer"):
        extract(source, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_output_directory_that_is_a_file_is_named(tmp_path):
    source = image_with_sbom(tmp_path, ["x/y"])
    (tmp_path / "taken").write_text("")
    with pytest.raises(BuildError, match=r"cannot write the SBOM files into .*taken"):
        extract(source, tmp_path / "taken")
