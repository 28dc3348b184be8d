"""The bill of materials: every Python distribution installed in the image, read from its
``*.dist-info/METADATA``, written as CycloneDX 1.5 JSON and SPDX 2.3 JSON. Deterministic:
identifiers derive from the content, times from ``SOURCE_DATE_EPOCH``."""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from email.parser import HeaderParser
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name

from buildpacks import __version__
from buildpacks.errors import BuildError
from buildpacks.oci.layer import iter_entries
from buildpacks.oci.model import ImageSource

SBOM_ROOT = "/layers/sbom/launch"
CYCLONEDX = "sbom.cdx.json"
SPDX = "sbom.spdx.json"


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    license: str | None = None

    @property
    def purl(self) -> str:
        return f"pkg:pypi/{canonicalize_name(self.name)}@{self.version}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def packages_in(site_packages: Path) -> list[Package]:
    """The distributions installed in a site-packages directory, sorted by name."""
    found = []
    for metadata in sorted(site_packages.glob("*.dist-info/METADATA")):
        meta = HeaderParser().parsestr(metadata.read_text(encoding="utf-8", errors="replace"))
        license_ = meta.get("License-Expression") or meta.get("License")
        if license_ and ("\n" in license_ or len(license_) > 100):
            license_ = None  # a full license text, not an identifier
        found.append(Package(meta["Name"], meta["Version"], license_))
    return sorted(found, key=lambda p: canonicalize_name(p.name))


def _serial(document: dict[str, Any]) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, json.dumps(document, sort_keys=True)))


def cyclonedx(
    app: Package, packages: list[Package], base: str, base_digest: str | None, epoch: int
) -> bytes:
    components = []
    for p in packages:
        component: dict[str, Any] = {
            "type": "library",
            "bom-ref": p.purl,
            "name": p.name,
            "version": p.version,
            "purl": p.purl,
        }
        if p.license:
            component["licenses"] = [{"expression": p.license}]
        components.append(component)
    base_component = {"type": "container", "bom-ref": "run-image", "name": base}
    if base_digest:
        base_component["version"] = base_digest
    components.append(base_component)
    document: dict[str, Any] = {
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "version": 1,
        "metadata": {
            "timestamp": datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "tools": [
                {"vendor": "python-buildpacks", "name": "python-buildpacks", "version": __version__}
            ],
            "component": {
                "type": "application",
                "bom-ref": app.purl,
                "name": app.name,
                "version": app.version,
                "purl": app.purl,
            },
        },
        "components": components,
    }
    document["serialNumber"] = f"urn:uuid:{_serial(document)}"
    return json.dumps(document, indent=2, sort_keys=True).encode()


def spdx(
    app: Package, packages: list[Package], base: str, base_digest: str | None, epoch: int
) -> bytes:
    def spdx_id(p: Package) -> str:
        clean = "".join(c if c.isalnum() or c in ".-" else "-" for c in f"{p.name}-{p.version}")
        return f"SPDXRef-Package-{clean}"

    described = [app, *packages]
    document: dict[str, Any] = {
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": f"{app.name}-{app.version}",
        "creationInfo": {
            "created": datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "creators": [f"Tool: python-buildpacks-{__version__}"],
            "comment": f"run image: {base}" + (f"@{base_digest}" if base_digest else ""),
        },
        "packages": [
            {
                "SPDXID": spdx_id(p),
                "name": p.name,
                "versionInfo": p.version,
                "downloadLocation": "NOASSERTION",
                "licenseConcluded": "NOASSERTION",
                "licenseDeclared": p.license or "NOASSERTION",
                "externalRefs": [
                    {
                        "referenceCategory": "PACKAGE-MANAGER",
                        "referenceType": "purl",
                        "referenceLocator": p.purl,
                    }
                ],
            }
            for p in described
        ],
        "relationships": [
            {
                "spdxElementId": "SPDXRef-DOCUMENT",
                "relationshipType": "DESCRIBES",
                "relatedSpdxElement": spdx_id(app),
            },
            *(
                {
                    "spdxElementId": spdx_id(app),
                    "relationshipType": "DEPENDS_ON",
                    "relatedSpdxElement": spdx_id(p),
                }
                for p in packages
            ),
        ],
    }
    document["documentNamespace"] = f"https://python-buildpacks.invalid/spdx/{_serial(document)}"
    return json.dumps(document, indent=2, sort_keys=True).encode()


def extract(source: ImageSource, out_dir: Path) -> list[Path]:
    """Write the image's SBOM files under ``out_dir`` (keeping their ``layers/sbom/...`` paths);
    only the SBOM layer is fetched."""
    from buildpacks.inspect import lifecycle_metadata  # the reading side of our own labels

    meta = lifecycle_metadata(source)
    sha = meta.sbom.sha if meta.sbom else ""
    if not sha or sha not in source.diff_ids:
        raise BuildError(f"{source.reference} carries no SBOM layer")
    layer = source.layer(source.diff_ids.index(sha))
    written = []
    for tar, info in iter_entries(layer):
        name = info.name.removeprefix("./").lstrip("/")
        if (
            not info.isfile()
            or not name.startswith(SBOM_ROOT.lstrip("/") + "/")
            or ".." in name.split("/")
        ):
            continue
        target = out_dir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        stream = tar.extractfile(info)
        target.write_bytes(stream.read() if stream else b"")
        written.append(target)
    return written
