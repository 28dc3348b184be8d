"""Both ``layer-compression`` values with real parts: the command line builds the example
twice from empty caches (every layer compressed anew, the dependencies' in blocks or jobs
that threads compress side by side), the digests agree, and podman loads and runs the
result."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from buildpacks.oci.layer import GZIP_BLOCK, open_layer
from buildpacks.oci.model import OCI_LAYER_GZIP, OCI_LAYER_ZSTD, Descriptor, Layer
from tests import testbed

CHECK = {"gzip": ["gzip", "-t"], "zstd": ["zstd", "-t", "-q"]}
MEDIA_TYPE = {"gzip": OCI_LAYER_GZIP, "zstd": OCI_LAYER_ZSTD}


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_image_is_reproducible_and_runs_in_podman(
    session_dir, hatch_env, debian_cache, podman, compression
):
    project = testbed.copy_example(session_dir / compression)
    base_layers = {layer.digest for layer in debian_cache.layers}  # the default base's
    digests = []
    for n in range(2):  # each from an empty layer cache: every layer of ours compressed anew
        env = {
            **hatch_env,
            "BP_LAYER_COMPRESSION": compression,
            "BP_IMAGE": f"{compression}-service:1",
            "BP_CACHE_DIR": testbed.seeded_cache(session_dir / f"{compression}-cache-{n}"),
        }
        result = testbed.cli("build", str(project), env=env)
        assert result.returncode == 0, result.stdout + result.stderr
        archive = project / f"dist/{compression}-service-1.tar"
        digest, manifest, _ = testbed.read_archive_manifest(archive)
        # The run image's layers stay as they were pulled; every layer of ours is compressed
        # as asked, and is valid to the compressor's own tool.
        ours = [layer for layer in manifest["layers"] if layer["digest"] not in base_layers]
        assert len(ours) >= 3
        assert {layer["mediaType"] for layer in ours} == {MEDIA_TYPE[compression]}
        blobs = Path(env["BP_CACHE_DIR"]) / "blobs" / "sha256"
        tars = []
        for layer in ours:
            path = blobs / layer["digest"].removeprefix("sha256:")
            assert subprocess.run([*CHECK[compression], path]).returncode == 0, layer
            with open_layer(Layer(Descriptor.from_json(layer), "", path)) as stream:
                tars.append(len(stream.read()))
        # The dependencies' layer is big enough to be compressed by threads.
        assert max(tars) > 2 * GZIP_BLOCK
        digests.append(digest)
    assert digests[0] == digests[1]

    loaded = podman("load", "-i", str(archive), check=False)
    assert loaded.returncode == 0, loaded.stderr
    assert f"{compression}-service:1" in loaded.stdout + loaded.stderr
    port = testbed.free_port()
    name = f"{compression}-http"
    podman("rm", "-f", name, check=False)
    podman.serve(f"{compression}-service:1", port, name)
    try:
        status, body = testbed.wait_for_http(f"http://127.0.0.1:{port}/")
        assert status == 200
        assert json.loads(body) == {"name": "example-service", "version": "0.1.0"}
    finally:
        podman("rm", "-f", "-t", "2", name, check=False)
