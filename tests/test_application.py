"""The application buildpack installs the project's wheel into its layer from memory: the
files, scripts, RECORD and layer bytes must be what ``installer`` writes to disk."""

from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path

import pytest
from installer import install
from installer.destinations import SchemeDictionaryDestination
from installer.sources import WheelFile

from buildpacks.builtin import Runtime
from buildpacks.builtin.application import APP, install_wheel, site_dir
from buildpacks.errors import BuildError
from buildpacks.oci.blobs import BlobStore
from buildpacks.oci.layer import MemoryTree, TreeMapping, write_layer

INTERPRETER = "/layers/python-buildpacks_dependencies/venv/bin/python"


def record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def make_wheel(directory: Path, extra: dict[str, bytes] | None = None) -> Path:
    """A wheel with a package, a console script, a ``#!python`` script, data and a header."""
    dist = "demo-1.0.dist-info"
    files = {
        "demo/__init__.py": b"def main():\n    print('hi')\n",
        "demo/data.json": b"{}\n",
        "demo-1.0.data/scripts/tool": b"#!python\nprint('tool')\n",
        "demo-1.0.data/data/share/demo/readme.txt": b"shared\n",
        "demo-1.0.data/headers/demo.h": b"int demo;\n",
        f"{dist}/METADATA": b"Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n",
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n",
        f"{dist}/entry_points.txt": b"[console_scripts]\ndemo = demo:main\n",
        **(extra or {}),
    }
    record = [record_line(name, data) for name, data in files.items()] + [f"{dist}/RECORD,,"]
    wheel = directory / "demo-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for name, data in files.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o755 if "scripts/" in name else 0o644) << 16
            zf.writestr(info, data)
        zf.writestr(f"{dist}/RECORD", "\n".join(record) + "\n")
    return wheel


def installed_on_disk(wheel: Path, stage: Path, runtime: Runtime) -> None:
    """The same wheel, installed by ``installer`` itself into a staged directory."""
    site = stage / site_dir(runtime).removeprefix(APP + "/")
    schemes = {"purelib": site, "platlib": site, "scripts": stage / "bin"}
    schemes |= {"headers": stage / "include", "data": stage}
    destination = SchemeDictionaryDestination(
        {k: str(v) for k, v in schemes.items()}, INTERPRETER, "posix"
    )
    with WheelFile.open(wheel) as source:
        install(source, destination, {"INSTALLER": b"python-buildpacks\n"})


def test_the_app_installed_in_memory_is_what_installer_writes_to_disk(tmp_path):
    runtime = Runtime("/usr/bin/python3", "3.11.2", "3.11", "x86_64-manylinux_2_36")
    wheel = make_wheel(tmp_path)
    files = install_wheel(wheel, runtime, INTERPRETER)
    installed_on_disk(wheel, tmp_path / "stage", runtime)

    on_disk = {str(p.relative_to(tmp_path / "stage")): p for p in (tmp_path / "stage").rglob("*")}
    assert sorted(files) == sorted(k for k, p in on_disk.items() if p.is_file())
    for name, entry in files.items():
        assert entry.data == on_disk[name].read_bytes(), name
        assert entry.executable == bool(on_disk[name].stat().st_mode & 0o111), name
    assert files["bin/tool"].data.startswith(f"#!{INTERPRETER}\n".encode())
    assert files["bin/demo"].executable
    record = files["lib/python3.11/site-packages/demo-1.0.dist-info/RECORD"].data.decode()
    assert "../../../bin/demo," in record and "../../../share/demo/readme.txt," in record

    store = BlobStore(tmp_path / "blobs")
    from_memory = write_layer(store, [MemoryTree(files, APP)])
    from_disk = write_layer(store, [TreeMapping(tmp_path / "stage", APP)])
    assert from_memory.digest == from_disk.digest


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"../evil.py": b"x\n"}, "outside of the target directory"),
        ({"demo-1.0.data/scripts/demo": b"#!python\n"}, "already exists"),
    ],
)
def test_a_wheel_writing_outside_its_place_or_twice_is_one_error(tmp_path, extra, message):
    runtime = Runtime("/usr/bin/python3", "3.11.2", "3.11", "x86_64-manylinux_2_36")
    wheel = make_wheel(tmp_path, extra)
    with pytest.raises(
        BuildError, match=f"demo-1.0-py3-none-any.whl: cannot be installed .*{message}"
    ):
        install_wheel(wheel, runtime, INTERPRETER)
