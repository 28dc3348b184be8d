"""Finding the run image's Python and C library from its layers, whiteouts included."""

from __future__ import annotations

from pathlib import Path

import pytest

from buildpacks.builtin.runtime import find_runtime, inspect_run_image
from buildpacks.errors import BuildError
from buildpacks.oci.blobs import BlobStore
from buildpacks.oci.layer import TreeMapping, write_layer
from buildpacks.oci.model import Image

DPKG = """Package: libc6
Status: install ok installed
Version: 2.36-9+deb12u4

Package: python3.11-minimal
Status: install ok installed
Version: 3.11.2-6+deb12u6
"""


def image_of(tmp_path: Path, *trees: dict[str, str], env: list[str] | None = None) -> Image:
    store = BlobStore(tmp_path / "store")
    layers = []
    for n, files in enumerate(trees):
        root = tmp_path / f"layer{n}"
        for name, content in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(content)
        layers.append(write_layer(store, [TreeMapping(root, "/")]))
    config = {
        "os": "linux",
        "architecture": "amd64",
        "config": {"Env": env or []},
        "rootfs": {"diff_ids": [layer.diff_id for layer in layers]},
    }
    return Image(config, layers, reference="test-base")


def test_debian_python_and_glibc(tmp_path):
    image = image_of(tmp_path, {"usr/bin/python3.11": "", "var/lib/dpkg/status": DPKG})
    facts = inspect_run_image(image, "x86_64")
    runtime = find_runtime(image, "3.11", "x86_64", facts)
    assert runtime.interpreter == "/usr/bin/python3.11"
    assert runtime.version == "3.11.2"
    assert runtime.wheel_platform == "x86_64-manylinux_2_36"


def test_official_image_layout_prefers_usr_local_and_python_version_env(tmp_path):
    image = image_of(
        tmp_path,
        {"usr/bin/python3.11": "", "var/lib/dpkg/status": DPKG},
        {"usr/local/bin/python3.12": ""},
        env=["PYTHON_VERSION=3.12.7"],
    )
    facts = inspect_run_image(image, "x86_64")
    runtime = find_runtime(image, "3.12", "x86_64", facts)
    assert (runtime.interpreter, runtime.version) == ("/usr/local/bin/python3.12", "3.12.7")


def test_whiteout_removes_the_interpreter(tmp_path):
    image = image_of(tmp_path, {"usr/bin/python3.11": ""}, {"usr/bin/.wh.python3.11": ""})
    facts = inspect_run_image(image, "x86_64")
    with pytest.raises(BuildError, match=r"has no Python 3.11 \(found: no Python interpreter\)"):
        find_runtime(image, "3.11", "x86_64", facts)


def test_musl_base(tmp_path):
    image = image_of(tmp_path, {"lib/ld-musl-x86_64.so.1": "", "usr/local/bin/python3.13": ""})
    assert inspect_run_image(image, "x86_64")["wheel_platform"] == "x86_64-unknown-linux-musl"
