"""The cold path in a real build on the debootstrap base: the base's layers are read once,
for the runtime buildpack and the SBOM alike, and not again while its facts are cached;
the SBOM lists the base's packages read in that pass; two cold builds give one digest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from buildpacks import frontend, sbom
from buildpacks.oci import rootfs
from buildpacks.oci.blobs import BlobStore
from buildpacks.oci.model import Platform
from buildpacks.oci.source import open_source
from tests import testbed

pytestmark = pytest.mark.e2e


def source_app(directory: Path) -> Path:
    directory.mkdir()
    (directory / "Procfile").write_text("web: python3 app.py\n")
    (directory / "app.py").write_text("print('hello')\n")
    (directory / ".python-version").write_text("3.11\n")
    return directory


def test_a_cold_build_reads_its_base_once(tmp_path, monkeypatch):
    base = testbed.debootstrap_base()
    project = source_app(tmp_path / "app")
    monkeypatch.setenv("BP_BASE_IMAGE", base)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    reads: list[str] = []
    find = rootfs.find

    def counted(image, *args, **kwargs):
        reads.append(image.reference)
        return find(image, *args, **kwargs)

    monkeypatch.setattr(rootfs, "find", counted)
    digests = []
    for n in range(2):  # two cold builds, each with a cache of its own
        monkeypatch.setenv("BP_CACHE_DIR", str(tmp_path / f"cache-{n}"))
        reads.clear()
        result = frontend.build_project(project, tmp_path / f"dist-{n}", {}, lambda line: None)
        assert len(reads) == 1, reads  # analysis, runtime buildpack and SBOM: one pass
        digests.append(result.digest)
    assert digests[0] == digests[1]

    # Warm: the facts come from the cache (the up-to-date record removed, so the whole
    # lifecycle runs again).
    monkeypatch.setenv("BP_CACHE_DIR", str(tmp_path / "cache-1"))
    (project / "app.py").write_text("print('edited')\n")
    reads.clear()
    frontend.build_project(project, tmp_path / "dist-1", {}, lambda line: None)
    assert reads == []

    # The SBOM lists the base's distribution and dpkg packages, read in that one pass.
    store = BlobStore(tmp_path / "store")
    archive = next((tmp_path / "dist-0").glob("*.tar"))
    with open_source(f"oci-archive:{archive}", Platform.parse("linux/amd64"), store) as image:
        written = sbom.extract(image, tmp_path / "sbom")
    document = json.loads(next(p for p in written if p.name == sbom.CYCLONEDX).read_text())
    names = {c["name"] for c in document["components"]}
    assert {"libc6", "python3.11-minimal", "dpkg"} <= names
    purls = [c.get("purl", "") for c in document["components"]]
    assert any(p.startswith("pkg:deb/debian/libc6@") and "distro=debian-12" in p for p in purls)
