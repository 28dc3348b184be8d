"""CNB compatibility checked against the platform spec's label and layer contract: lifecycle,
build and project metadata, the SBOM layer, process types, and the layer cache."""

from __future__ import annotations

import json
import subprocess
import tarfile

import pytest

from tests import testbed

pytestmark = pytest.mark.e2e

ARCHIVE = "dist/example-service-0.1.0.tar"
SBOM_DIR = "layers/sbom/launch/python-buildpacks_dependencies/venv"


def labels_of(config: dict) -> dict:
    return config["config"]["Labels"]


def test_lifecycle_metadata_matches_the_layers(example_build, base_image):
    project, _ = example_build
    _, _, config = testbed.read_archive_manifest(project / ARCHIVE)
    diff_ids = config["rootfs"]["diff_ids"]
    meta = json.loads(labels_of(config)["io.buildpacks.lifecycle.metadata"])
    assert meta["runImage"]["topLayer"] == diff_ids[0]  # the local base has one layer
    assert meta["runImage"]["reference"].startswith("sha256:")
    layers = {bp["key"]: bp["layers"] for bp in meta["buildpacks"]}
    assert layers["python-buildpacks/dependencies"]["venv"]["sha"] == diff_ids[1]
    assert layers["python-buildpacks/application"]["app"]["sha"] == diff_ids[2]
    assert meta["app"] == [{"sha": diff_ids[2]}]
    assert meta["config"]["sha"] == diff_ids[3]
    assert meta["sbom"]["sha"] == diff_ids[4]
    build = json.loads(labels_of(config)["io.buildpacks.build.metadata"])
    assert {"id": "python-buildpacks/dependencies", "version": "0.1.0"} in build["buildpacks"]
    assert [p["type"] for p in build["processes"]] == ["example-service"]
    env = dict(e.split("=", 1) for e in config["config"]["Env"])
    assert env["CNB_PLATFORM_API"] == "0.13"
    assert "/cnb/process" in env["PATH"].split(":")


def test_sbom_lists_exactly_the_packages_in_the_venv(example_build, podman):
    project, _ = example_build
    podman("load", "-i", str(project / ARCHIVE))
    out = podman.run(
        "example-service:0.1.0",
        "-c",
        "import importlib.metadata as m, json;"
        "names = {(d.metadata['Name'].lower(), d.version) for d in m.distributions()};"
        "print(json.dumps(sorted(names)))",
        entrypoint="python",
    )
    in_image = {tuple(x) for x in json.loads(out)}
    _, manifest, _ = testbed.read_archive_manifest(project / ARCHIVE)
    with tarfile.open(project / ARCHIVE) as tar:
        blob = tar.extractfile("blobs/" + manifest["layers"][-1]["digest"].replace(":", "/"))
        with tarfile.open(fileobj=blob, mode="r:gz") as sbom_layer:
            cdx = json.load(sbom_layer.extractfile(f"{SBOM_DIR}/sbom.cdx.json"))
            spdx = json.load(sbom_layer.extractfile(f"{SBOM_DIR}/sbom.spdx.json"))
    libraries = {
        (c["name"].lower(), c["version"]) for c in cdx["components"] if c["type"] == "library"
    }
    app = ("example-service", "0.1.0")
    assert libraries | {app} == in_image
    assert cdx["metadata"]["component"]["purl"] == "pkg:pypi/example-service@0.1.0"
    assert {"pkg:pypi/flask@3.1.3", "pkg:pypi/markupsafe@3.0.4"} <= {
        c.get("purl") for c in cdx["components"]
    }
    assert any(c["type"] == "container" for c in cdx["components"])  # the base image
    assert {(p["name"].lower(), p["versionInfo"]) for p in spdx["packages"]} == in_image
    flask = next(c for c in cdx["components"] if c["name"].lower() == "flask")
    assert flask["licenses"] == [{"expression": "BSD-3-Clause"}]


def test_entrypoint_by_process_type(example_build, podman):
    project, _ = example_build
    podman("load", "-i", str(project / ARCHIVE))
    # `--entrypoint <type>` finds /cnb/process/<type> on PATH, as with CNB images.
    out = podman.attempt("example-service:0.1.0", entrypoint="example-service", env={"PORT": "x"})
    assert "invalid literal for int()" in out.stderr  # our main() ran and parsed PORT


def test_procfile_processes_table_env_and_git_metadata(session_dir, hatch_env, podman):
    project = testbed.copy_example(session_dir / "procfile")
    (project / "Procfile").write_text("web: example-service\nworker: echo working $GREETING\n")
    pyproject = project / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text().replace(
            "[tool.buildpacks]",
            '[tool.buildpacks]\nprocesses = { hello = "echo hello from $GREETING" }\n'
            'env = { GREETING = "the image" }',
        )
    )
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    subprocess.run(
        ["git", "remote", "add", "origin", "https://user:token@example.invalid/x.git"],
        cwd=project,
        check=True,
    )
    subprocess.run(
        [
            "git",
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            "x",
        ],
        cwd=project,
        check=True,
    )
    result = testbed.hatch_build(project, hatch_env)
    assert result.returncode == 0, result.stdout + result.stderr
    _, _, config = testbed.read_archive_manifest(project / ARCHIVE)
    assert config["config"]["Entrypoint"] == ["/bin/sh", "-c", "example-service"]  # web is default
    labels = labels_of(config)
    source = json.loads(labels["io.buildpacks.project.metadata"])["source"]
    assert source["type"] == "git" and len(source["version"]["commit"]) == 40
    assert source["metadata"]["repository"] == "https://example.invalid/x.git"  # no credentials
    assert "token" not in json.dumps(config)
    podman("load", "-i", str(project / ARCHIVE))
    assert podman.run("example-service:0.1.0", entrypoint="hello").strip() == "hello from the image"
    assert podman.run("example-service:0.1.0", entrypoint="worker").strip() == "working the image"


def test_corrupt_cache_entries_are_detected_and_rebuilt(session_dir, hatch_env, podman):
    cache = session_dir / "corrupt-cache"
    env = {**hatch_env, "BP_CACHE_DIR": str(cache)}
    project = testbed.copy_example(session_dir / "corrupt")
    assert testbed.hatch_build(project, env).returncode == 0
    good = testbed.read_archive_manifest(project / ARCHIVE)[0]
    records = [json.loads(p.read_text()) for p in (cache / "layers").glob("*.json")]
    blobs = [cache / "blobs" / "sha256" / r["descriptor"]["digest"].split(":")[1] for r in records]
    big = max(blobs, key=lambda p: p.stat().st_size)
    big.write_bytes(big.read_bytes()[: big.stat().st_size // 2])  # truncated
    small = min(blobs, key=lambda p: p.stat().st_size)
    data = bytearray(small.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, wrong content
    small.write_bytes(bytes(data))
    # With its archive intact and nothing changed, the image would be up to date: no build.
    (project / ARCHIVE).unlink()
    result = testbed.hatch_build(project, env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (result.stdout + result.stderr).count("is corrupt: rebuilding it") == 2
    assert testbed.read_archive_manifest(project / ARCHIVE)[0] == good
    podman("load", "-i", str(project / ARCHIVE))
    assert podman.run("example-service:0.1.0", "-c", "import flask", entrypoint="python") == ""


def test_previous_archive_and_cache_image_restore_layers_without_reinstalling(
    session_dir, hatch_env, registry
):
    cache_image = f"{registry.host}/team/app-cache:latest"
    first = testbed.copy_example(session_dir / "cache-image-a")
    env_a = {**hatch_env, "BP_CACHE_DIR": str(session_dir / "cache-a")}
    env_a["BP_CACHE_IMAGE"] = cache_image
    built = testbed.hatch_build(first, env_a)
    assert built.returncode == 0, built.stdout + built.stderr
    assert "Installing dependencies from uv.lock" in built.stdout + built.stderr
    digest = testbed.read_archive_manifest(first / ARCHIVE)[0]

    # Another machine: no local cache, no dist/, only the cache image in the registry.
    second = testbed.copy_example(session_dir / "cache-image-b")
    env_b = {**env_a, "BP_CACHE_DIR": str(session_dir / "cache-b")}
    again = testbed.hatch_build(second, env_b)
    out = again.stdout + again.stderr
    assert again.returncode == 0, out
    assert "Installing" not in out
    assert "Restored python-buildpacks/dependencies venv layer" in out
    assert testbed.read_archive_manifest(second / ARCHIVE)[0] == digest

    # The archive left in dist/ by the last build serves too, with an empty cache.
    env_c = {**hatch_env, "BP_CACHE_DIR": str(session_dir / "cache-c")}
    third = testbed.hatch_build(second, env_c)
    assert third.returncode == 0 and "Installing" not in third.stdout + third.stderr
    assert "Previous image oci-archive:" in third.stdout + third.stderr
    assert testbed.read_archive_manifest(second / ARCHIVE)[0] == digest
