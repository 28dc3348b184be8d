"""Finding the run image's Python and C library from its layers, whiteouts included; the
project wheel's tags checked against them."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import pytest

from buildpacks.builtin import Runtime
from buildpacks.builtin.application import check_wheel_fits, wheel_content_digest
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
    assert inspect_run_image(image, "x86_64").wheel_platform == "x86_64-unknown-linux-musl"


def test_python_minors_in_preference_order(tmp_path):
    from buildpacks.builtin.runtime import python_minors

    image = image_of(
        tmp_path, {"usr/bin/python3.11": "", "usr/local/bin/python3.12": "", "bin/python3.11": ""}
    )
    assert python_minors(inspect_run_image(image, "x86_64")) == ("3.12", "3.11")


DEBIAN_311 = Runtime("/usr/bin/python3.11", "3.11.2", "3.11", "x86_64-manylinux_2_36")


@pytest.mark.parametrize(
    "name",
    [
        "a-1-py3-none-any.whl",
        "a-1-py2.py3-none-any.whl",
        "a-1-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        "a-1-cp39-abi3-manylinux_2_28_x86_64.whl",
        "a-1-cp311-cp311-manylinux_2_36_x86_64.whl",
    ],
)
def test_wheels_the_image_loads(name):
    check_wheel_fits(Path(name), DEBIAN_311)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("a-1-cp312-cp312-manylinux_2_17_x86_64.whl", "build the wheel with Python 3.11"),
        ("a-1-py3-none-linux_x86_64.whl", "built against the C library of the machine"),
        ("a-1-cp311-cp311-manylinux_2_39_x86_64.whl", "build it for manylinux_2_36_x86_64"),
        ("a-1-cp311-cp311-manylinux_2_17_aarch64.whl", "build it for manylinux_2_36_x86_64"),
        ("a-1-cp311-cp311-musllinux_1_2_x86_64.whl", "or choose a base image it fits"),
    ],
)
def test_wheels_the_image_cannot_load_are_refused(name, message):
    with pytest.raises(BuildError, match=r"cannot be loaded by the image \(CPython 3.11, cp311"):
        check_wheel_fits(Path(name), DEBIAN_311)
    with pytest.raises(BuildError, match=re.escape(message)):
        check_wheel_fits(Path(name), DEBIAN_311)


def test_musl_image_loads_musllinux_wheels():
    alpine = Runtime("/usr/local/bin/python3.12", "3.12.7", "3.12", "x86_64-unknown-linux-musl")
    check_wheel_fits(Path("a-1-cp312-cp312-musllinux_1_1_x86_64.whl"), alpine)
    with pytest.raises(BuildError):
        check_wheel_fits(Path("a-1-cp312-cp312-manylinux_2_17_x86_64.whl"), alpine)


def _wheel(path: Path, when: tuple[int, ...], files: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in files.items():
            zf.writestr(zipfile.ZipInfo(name, date_time=when), text)
    return path


def test_wheel_content_digest_ignores_timestamps_not_content(tmp_path):
    files = {"a/__init__.py": "x = 1\n", "a-1.dist-info/METADATA": "Name: a\n"}
    first = _wheel(tmp_path / "1.whl", (2020, 1, 1, 0, 0, 0), files)
    second = _wheel(tmp_path / "2.whl", (2024, 5, 6, 7, 8, 10), files)
    assert first.read_bytes() != second.read_bytes()
    assert wheel_content_digest(first) == wheel_content_digest(second)
    edited = _wheel(tmp_path / "3.whl", (2020, 1, 1, 0, 0, 0), {**files, "a/__init__.py": "x=2"})
    assert wheel_content_digest(edited) != wheel_content_digest(first)


def test_a_hosts_own_linux_wheel_fits_an_image_with_its_glibc_or_newer():
    from buildpacks.builtin.application import Host

    wheel = Path("a-1-cp311-cp311-linux_x86_64.whl")
    check_wheel_fits(wheel, DEBIAN_311, Host("x86_64", (2, 36)))  # Debian 12 builds for Debian 12
    check_wheel_fits(wheel, DEBIAN_311, Host("x86_64", (2, 31)))
    for host in (Host("x86_64", (2, 39)), Host("aarch64", (2, 36)), Host("x86_64", None)):
        with pytest.raises(BuildError, match="a linux_\\* wheel is built against the C library"):
            check_wheel_fits(wheel, DEBIAN_311, host)


def test_facts_are_cached_by_the_layers_and_hold_the_sboms_packages(tmp_path, monkeypatch):
    from buildpacks.builtin.runtime import run_image_facts
    from buildpacks.oci import rootfs

    release = 'ID=debian\nVERSION_ID="12"\n'
    image = image_of(
        tmp_path,
        {"usr/bin/python3.11": "", "var/lib/dpkg/status": DPKG, "etc/os-release": release},
    )
    facts = run_image_facts(image, tmp_path / "cache", "x86_64")
    assert (facts.contents.distro, facts.contents.distro_version) == ("debian", "12")
    assert [(p.name, p.version) for p in facts.contents.packages] == [
        ("libc6", "2.36-9+deb12u4"),
        ("python3.11-minimal", "3.11.2-6+deb12u6"),
    ]
    # The same layers under another config (a tag, an environment): not read again.
    retagged = Image({**image.config, "config": {"Env": ["A=1"]}}, image.layers, reference="b")

    def unread(*args, **kwargs):
        raise AssertionError("the layers were read again")

    monkeypatch.setattr(rootfs, "find", unread)
    assert run_image_facts(retagged, tmp_path / "cache", "x86_64") == facts
    # A record of another shape (an older release's) is read again, not trusted.
    monkeypatch.undo()
    (record,) = (tmp_path / "cache" / "run-images").glob("*.json")
    record.write_text('{"interpreters": ["usr/bin/python3.11"], "dpkg": {}}')
    assert run_image_facts(image, tmp_path / "cache", "x86_64") == facts
