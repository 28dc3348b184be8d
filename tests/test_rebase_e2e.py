"""inspect, sbom and rebase on finished images, against archives and a real registry."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from buildpacks.oci.archive import write_archive
from buildpacks.oci.blobs import BlobStore
from buildpacks.oci.layer import TreeMapping, write_layer
from buildpacks.oci.model import Image
from tests import testbed

pytestmark = pytest.mark.e2e

ARCHIVE = "dist/example-service-0.1.0.tar"


@pytest.fixture(scope="module")
def updated_base(session_dir, base_layout) -> str:
    return testbed.updated_base(base_layout, session_dir / "updated-base")


def layer_digests(archive: Path) -> list[str]:
    return [layer["digest"] for layer in testbed.read_archive_manifest(archive)[1]["layers"]]


def test_inspect_and_sbom_from_a_registry_fetch_only_the_sbom_layer(
    session_dir, hatch_env, registry
):
    image = f"{registry.host}/team/inspect:0.1.0"
    project = testbed.copy_example(session_dir / "inspect")
    built = testbed.hatch_build(project, hatch_env, {"BP_PUBLISH": "true", "BP_IMAGE": image})
    assert built.returncode == 0, built.stdout + built.stderr
    _, manifest, _ = testbed.read_archive_manifest(project / "dist/inspect-0.1.0.tar")
    env = {**hatch_env, "BP_CACHE_DIR": str(session_dir / "inspect-cli-cache")}  # nothing cached
    before = len(registry.requests("GET", "/team/inspect/blobs/"))
    report = testbed.cli("inspect", image, "--json", env=env)
    assert report.returncode == 0, report.stderr
    data = json.loads(report.stdout)
    assert data["digest"] == testbed.read_archive_manifest(project / "dist/inspect-0.1.0.tar")[0]
    assert [layer["origin"] for layer in data["layers"]] == [
        *["run image"] * 5,  # the assembled base's five layers
        "python-buildpacks/dependencies venv",
        "app",
        "process types",
        "config",
        "sbom",
    ]
    assert data["python"]["version"] == "3.11.2"
    assert data["processes"][0]["type"] == "example-service"
    text = testbed.cli("inspect", image, env=env)
    assert "Processes:" in text.stdout and "example-service (default)" in text.stdout
    out = session_dir / "sbom-out"
    written = testbed.cli("sbom", image, "-o", str(out), env=env)
    assert written.returncode == 0, written.stderr
    cdx = json.loads(next(out.rglob("sbom.cdx.json")).read_text())
    assert any(c.get("purl") == "pkg:pypi/waitress@3.0.2" for c in cdx["components"])
    fetched = {
        line.split("/blobs/")[1].split()[0].strip('"')
        for line in registry.requests("GET", "/team/inspect/blobs/")[before:]
    }
    assert fetched == {config_digest(manifest), manifest["layers"][-1]["digest"]}


def config_digest(manifest: dict) -> str:
    return manifest["config"]["digest"]


def test_rebase_an_archive_onto_an_updated_base(session_dir, hatch_env, updated_base, podman):
    project = testbed.copy_example(session_dir / "rebase-archive")
    assert testbed.hatch_build(project, hatch_env).returncode == 0
    archive = project / ARCHIVE
    before = layer_digests(archive)
    result = testbed.cli(
        "rebase", f"oci-archive:{archive}", "--run-image", updated_base, env=hatch_env
    )
    assert result.returncode == 0, result.stderr
    after = layer_digests(archive)
    assert after[-5:] == before[-5:]  # venv, app, process types, config, sbom: untouched
    assert after[:-5] != before[:-5] and len(after) == len(before) + 1  # the base gained a layer
    _, _, config = testbed.read_archive_manifest(archive)
    meta = json.loads(config["config"]["Labels"]["io.buildpacks.lifecycle.metadata"])
    assert meta["runImage"]["topLayer"] == config["rootfs"]["diff_ids"][-6]
    podman("load", "-i", str(archive))
    assert (
        podman.run(
            "example-service:0.1.0",
            "-c",
            "open('/etc/base-update').read(); import flask",
            entrypoint="python",
        )
        == ""
    )
    port = testbed.free_port()
    podman("rm", "-f", "rebased", check=False)
    podman.serve("example-service:0.1.0", port, "rebased")
    try:
        assert testbed.wait_for_http(f"http://127.0.0.1:{port}/")[0] == 200
    finally:
        podman("rm", "-f", "-t", "2", "rebased", check=False)


def test_rebase_in_a_registry_uploads_no_layer(
    session_dir, hatch_env, registry, base_layout, updated_base, podman
):
    old_base = testbed.push_layout(base_layout, registry, "base/debian:bookworm")
    new_base = testbed.push_layout(updated_base, registry, "base/debian:updated")
    image = f"{registry.host}/team/rebase:0.1.0"
    project = testbed.copy_example(session_dir / "rebase-registry")
    built = testbed.hatch_build(
        project, hatch_env, {"BP_PUBLISH": "true", "BP_IMAGE": image, "BP_BASE_IMAGE": old_base}
    )
    assert built.returncode == 0, built.stdout + built.stderr
    before_layers = layer_digests(project / "dist/rebase-0.1.0.tar")
    uploads = len(registry.requests("PUT", "/team/rebase/blobs/uploads/"))
    env = {**hatch_env, "BP_CACHE_DIR": str(session_dir / "rebase-cli-cache")}
    result = testbed.cli("rebase", image, "--run-image", new_base, "--publish", env=env)
    assert result.returncode == 0, result.stderr
    new_uploads = registry.requests("PUT", "/team/rebase/blobs/uploads/")[uploads:]
    assert len(new_uploads) == 1  # the config; layers were mounted or already there
    inspected = json.loads(testbed.cli("inspect", image, "--json", env=env).stdout)
    assert [layer["digest"] for layer in inspected["layers"]][-5:] == before_layers[-5:]
    assert inspected["runImage"]["image"] == new_base
    podman("pull", "--tls-verify=false", image)
    assert (
        podman.run(
            image, "-c", "print(open('/etc/base-update').read().strip())", entrypoint="python"
        ).strip()
        == "patched"
    )


def test_rebase_refuses_a_base_with_another_python(session_dir, hatch_env, tmp_path):
    store = BlobStore(tmp_path / "store")
    root = tmp_path / "rootfs"
    (root / "usr" / "bin").mkdir(parents=True)
    (root / "usr" / "bin" / "python3.12").write_text("")
    layer = write_layer(store, [TreeMapping(root, "/")])
    other = Image(
        {
            "os": "linux",
            "architecture": "amd64",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]},
        },
        [layer],
    )
    other_archive = tmp_path / "py312.tar"
    write_archive(other, other_archive, "py312:1", 0)
    project = testbed.copy_example(session_dir / "rebase-refused")
    assert testbed.hatch_build(project, hatch_env).returncode == 0
    archive = project / ARCHIVE
    original = archive.read_bytes()
    refused = testbed.cli(
        "rebase",
        f"oci-archive:{archive}",
        "--run-image",
        f"oci-archive:{other_archive}",
        env=hatch_env,
    )
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert refused.stderr.strip().splitlines() == [
        f"error: rebase of oci-archive:{archive} onto oci-archive:{other_archive} refused: "
        "it has no "
        "/usr/bin/python3.11 (Python 3.11, which the image's virtual environment runs on; it has: "
        "/usr/bin/python3.12) (--force rebases anyway)"
    ]
    assert archive.read_bytes() == original
    # Built on a local base: its recorded name (for pack) is not one to pull from.
    unnamed = testbed.cli("rebase", f"oci-archive:{archive}", env=hatch_env)
    assert unnamed.returncode == 1 and unnamed.stderr.strip().splitlines() == [
        f"error: oci-archive:{archive} was built on a local base, which cannot be pulled by its "
        "name; give --run-image"
    ]
    assert archive.read_bytes() == original
    forced = testbed.cli(
        "rebase",
        f"oci-archive:{archive}",
        "--run-image",
        f"oci-archive:{other_archive}",
        "--force",
        env=hatch_env,
    )
    assert forced.returncode == 0, forced.stderr
    with tarfile.open(archive) as tar:
        assert "index.json" in tar.getnames()
