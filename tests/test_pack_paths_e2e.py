"""What pack does with our image, step by step as its code reads the labels
(pkg/client/inspect_image.go, rebase.go and download_sbom.go, with the lifecycle's
phase/rebaser.go), checked on a real build: the decisions pack takes, not only the shapes."""

from __future__ import annotations

import io
import json
import tarfile

import pytest

from buildpacks import cnb
from buildpacks.oci.reference import Reference
from tests import testbed

pytestmark = pytest.mark.e2e

ARCHIVE = "dist/example-service-0.1.0.tar"


def parse_maybe(name: str) -> str:
    """The lifecycle's internal/name.ParseMaybe: go-containerregistry's full name, digest
    dropped, ``latest`` added; unparseable names as they are."""
    try:
        ref = Reference.parse(name.split("@sha256:", 1)[0])
    except ValueError:
        return name
    registry = "index.docker.io" if ref.registry == "docker.io" else ref.registry
    return f"{registry}/{ref.repository}:{ref.tag or 'latest'}"


def pack_inspect(config: dict) -> dict:
    """pack's InspectImage: run image, stack and the default process."""
    labels = config["config"]["Labels"]
    meta = json.loads(labels[cnb.LIFECYCLE])
    build = cnb.decode(cnb.BuildMetadata, labels[cnb.BUILD])
    run = meta["runImage"]
    launcher = build.launcher.version
    if launcher and tuple(int(x) for x in launcher.split(".")[:2]) < (0, 5):
        run = {**run, "reference": ""}  # pack hides it for launchers before 0.5.0
    entrypoint = config["config"].get("Entrypoint") or []
    default_type = ""
    if entrypoint and entrypoint[0] != "/cnb/lifecycle/launcher":
        default_type = entrypoint[0].removeprefix("/cnb/process/")
    default = next((p for p in build.processes if p.type == default_type), None)
    stack = {"runImage": {"image": run["image"]}} if run.get("image") else meta.get("stack")
    return {"base": run, "stack": stack, "default": default}


def pack_rebase_refusal(config: dict, new_base_name: str, new_base_config: dict) -> str | None:
    """Why pack rebase (lifecycle Rebaser, platform API >= 0.12) refuses ``--run-image
    new_base_name`` without --force; None when it goes ahead."""
    env = dict(e.split("=", 1) for e in config["config"].get("Env", []))
    assert env.get("CNB_PLATFORM_API") and env["CNB_PLATFORM_API"] >= "0.12"
    labels = config["config"]["Labels"]
    if labels.get("io.buildpacks.rebasable") == "false":
        return "app image is not marked as rebasable"
    if (config["os"], config["architecture"]) != (
        new_base_config["os"],
        new_base_config["architecture"],
    ):
        return "unable to satisfy target os/arch constraints"
    meta = cnb.decode(cnb.LayersMetadata, labels[cnb.LIFECYCLE])
    if meta.run_image.top_layer not in config["rootfs"]["diff_ids"]:
        return "top layer not found"
    names = [meta.run_image.image, *meta.run_image.mirrors]
    if meta.stack:
        names += [meta.stack.run_image.image, *meta.stack.run_image.mirrors]
    if parse_maybe(new_base_name) not in {parse_maybe(n) for n in names if n}:
        return f"new base image '{new_base_name}' not found in existing run image metadata"
    return None


def test_pack_inspect_shows_the_run_image_and_finds_the_default_process(example_build):
    project, _ = example_build
    _, _, config = testbed.read_archive_manifest(project / ARCHIVE)
    shown = pack_inspect(config)
    digest = config["config"]["Labels"]["org.opencontainers.image.base.digest"]
    assert shown["base"]["image"] == "debian-packages:bookworm"
    assert shown["base"]["reference"] == f"debian-packages@{digest}"
    assert shown["stack"] == {"runImage": {"image": "debian-packages:bookworm"}}
    # The entrypoint is the one a CNB platform sets (/cnb/process/<default type>): pack finds
    # the default among the processes the label lists.
    assert config["config"]["Entrypoint"] == ["/cnb/process/example-service"]
    default = shown["default"]
    assert default is not None and default.type == "example-service"


def test_pack_rebase_accepts_the_local_base_by_its_name(example_build):
    project, _ = example_build
    _, _, config = testbed.read_archive_manifest(project / ARCHIVE)
    base = {"os": "linux", "architecture": "amd64"}
    # The user loads the updated base as the name it was built on (the assembled base by
    # its recipe), as pack expects.
    assert pack_rebase_refusal(config, "debian-packages:bookworm", base) is None
    assert pack_rebase_refusal(config, "docker.io/library/debian-packages:bookworm", base) is None
    refusal = pack_rebase_refusal(config, "other:1", base)
    assert refusal and "not found in existing run image metadata" in refusal
    assert "unable to satisfy" in pack_rebase_refusal(
        config, "debian-packages:bookworm", {**base, "architecture": "arm64"}
    )


def test_pack_sbom_download_finds_and_extracts_the_sbom_layer(example_build, tmp_path):
    project, _ = example_build
    _, manifest, config = testbed.read_archive_manifest(project / ARCHIVE)
    sbom = json.loads(config["config"]["Labels"][cnb.LIFECYCLE])["sbom"]  # pack's sbomMetadata
    index = config["rootfs"]["diff_ids"].index(sbom["sha"])
    digest = manifest["layers"][index]["digest"]
    with tarfile.open(project / ARCHIVE) as archive:
        blob = archive.extractfile("blobs/" + digest.replace(":", "/")).read()
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as layer:
        names = sorted(m.name.lstrip("./") for m in layer.getmembers() if m.isfile())
    assert names == [
        "layers/sbom/launch/python-buildpacks_dependencies/venv/sbom.cdx.json",
        "layers/sbom/launch/python-buildpacks_dependencies/venv/sbom.spdx.json",
    ]
