"""SBOM documents from plain data: OS package databases parsed, licenses and purls as the
specs write them, and both documents accepted by the formats' own validators."""

from __future__ import annotations

import json
import subprocess

from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from buildpacks import sbom
from tests import testbed

DPKG = """Package: libc6
Status: install ok installed
Architecture: amd64
Version: 2.36-9+deb12u4
Depends: libgcc-s1

Package: libgcc-s1
Status: install ok installed
Architecture: amd64
Version: 1:12.2.0-14
Description: GCC support library
 continued description line

Package: removed-one
Status: deinstall ok config-files
Version: 1.0
"""

APK = """C:Q1abc=
P:musl
V:1.2.4-r2
A:x86_64
L:MIT

P:busybox
V:1.36.1-r15
A:x86_64
L:GPL-2.0-only
D:so:libc.musl-x86_64.so.1 musl>=1.2
"""


def test_dpkg_and_apk_databases():
    debs = sbom.dpkg_packages(DPKG)
    assert [(p.name, p.version) for p in debs] == [
        ("libc6", "2.36-9+deb12u4"),
        ("libgcc-s1", "1:12.2.0-14"),
    ]  # the removed package is not installed
    assert debs[0].depends == ("libgcc-s1",)
    apks = sbom.apk_packages(APK)
    assert [(p.name, p.license) for p in apks] == [("musl", "MIT"), ("busybox", "GPL-2.0-only")]
    assert "musl" in apks[1].depends


def test_purls_follow_the_purl_spec():
    assert sbom.Package("Foo_Bar", "1.0+local").purl == "pkg:pypi/foo-bar@1.0%2Blocal"
    contents = sbom.RunImageContents("debian", "12", ())
    gcc = sbom.dpkg_packages(DPKG)[1]
    assert (
        contents.purl(gcc) == "pkg:deb/debian/libgcc-s1@1%3A12.2.0-14?arch=amd64&distro=debian-12"
    )


def test_licenses_are_spdx_expressions_or_free_text():
    assert sbom.spdx_license("mit OR apache-2.0") == ("MIT OR Apache-2.0", None)
    assert sbom.spdx_license("BSD License") == (None, "BSD License")
    assert sbom.spdx_license(None) == (None, None)


def contents() -> sbom.Contents:
    packages = [
        sbom.Package("Flask", "3.1.3", "BSD-3-Clause", ("werkzeug",)),
        sbom.Package("odd", "0.1", "Some Custom License v2 (see file)"),
        sbom.Package("werkzeug", "3.1.3", "BSD License"),
    ]
    run = sbom.RunImageContents("debian", "12", tuple(sbom.dpkg_packages(DPKG)))
    app = sbom.Package("my_app", "1.0", "Apache-2.0", ("flask", "odd"))
    digest = "sha256:" + "c" * 64
    return sbom.Contents(app, packages, "/usr/bin/python3.11", "3.11.2", "base:1", digest, run)


def test_documents_pass_the_formats_validators(tmp_path):
    cdx_text = sbom.cyclonedx(contents(), 0).decode()
    assert JsonStrictValidator(SchemaVersion.V1_5).validate_str(cdx_text) is None
    cdx = json.loads(cdx_text)
    odd = next(c for c in cdx["components"] if c["name"] == "odd")
    assert odd["licenses"] == [{"license": {"name": "Some Custom License v2 (see file)"}}]
    graph = {d["ref"]: d["dependsOn"] for d in cdx["dependencies"]}
    assert graph["pkg:pypi/flask@3.1.3"] == ["pkg:pypi/werkzeug@3.1.3"]
    assert graph["pkg:pypi/my-app@1.0"][:2] == ["pkg:pypi/flask@3.1.3", "pkg:pypi/odd@0.1"]

    path = tmp_path / "sbom.spdx.json"
    path.write_bytes(sbom.spdx(contents(), 0))
    spdx = json.loads(path.read_text())
    odd_spdx = next(p for p in spdx["packages"] if p["name"] == "odd")
    assert odd_spdx["licenseDeclared"].startswith("LicenseRef-")
    assert {i["licenseId"] for i in spdx["hasExtractedLicensingInfos"]} == {
        odd_spdx["licenseDeclared"],
        next(p for p in spdx["packages"] if p["name"] == "werkzeug")["licenseDeclared"],
    }
    checked = subprocess.run(
        [str(testbed.BIN / "pyspdxtools"), "-i", str(path)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_an_invalid_document_is_caught_by_the_validator(tmp_path):
    # The check above can fail: a package without its required downloadLocation is refused.
    document = json.loads(sbom.spdx(contents(), 0))
    del document["packages"][0]["downloadLocation"]
    path = tmp_path / "bad.spdx.json"
    path.write_text(json.dumps(document))
    checked = subprocess.run(
        [str(testbed.BIN / "pyspdxtools"), "-i", str(path)], capture_output=True, text=True
    )
    assert checked.returncode != 0
