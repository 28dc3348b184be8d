"""``layer-compression = "zstd"`` with real parts: the command line builds the example
twice from empty caches, and podman loads and runs the result."""

from __future__ import annotations

import json

from buildpacks.oci.model import OCI_LAYER_ZSTD
from tests import testbed


def test_zstd_image_is_reproducible_and_runs_in_podman(
    session_dir, hatch_env, debian_cache, podman
):
    project = testbed.copy_example(session_dir / "zstd")
    base_layers = {layer.digest for layer in debian_cache.layers}  # the default base's
    digests = []
    for n in range(2):  # each from an empty layer cache: every layer of ours compressed anew
        env = {
            **hatch_env,
            "BP_LAYER_COMPRESSION": "zstd",
            "BP_IMAGE": "zstd-service:1",
            "BP_CACHE_DIR": testbed.seeded_cache(session_dir / f"zstd-cache-{n}"),
        }
        result = testbed.cli("build", str(project), env=env)
        assert result.returncode == 0, result.stdout + result.stderr
        digest, manifest, _ = testbed.read_archive_manifest(project / "dist/zstd-service-1.tar")
        # The run image's layers stay as they were pulled; every layer of ours is zstd.
        ours = [layer for layer in manifest["layers"] if layer["digest"] not in base_layers]
        assert len(ours) >= 3
        assert {layer["mediaType"] for layer in ours} == {OCI_LAYER_ZSTD}
        digests.append(digest)
    assert digests[0] == digests[1]

    loaded = podman("load", "-i", str(project / "dist/zstd-service-1.tar"), check=False)
    assert loaded.returncode == 0, loaded.stderr
    assert "zstd-service:1" in loaded.stdout + loaded.stderr
    port = testbed.free_port()
    podman("rm", "-f", "zstd-http", check=False)
    podman.serve("zstd-service:1", port, "zstd-http")
    try:
        status, body = testbed.wait_for_http(f"http://127.0.0.1:{port}/")
        assert status == 200
        assert json.loads(body) == {"name": "example-service", "version": "0.1.0"}
    finally:
        podman("rm", "-f", "-t", "2", "zstd-http", check=False)
