"""The bill of materials of an image: the run image's OS packages (dpkg's ``status`` and
distroless ``status.d/``, Alpine's apk database), its Python interpreter, and every Python
distribution installed in the venv and app layers, with the dependencies between them;
written as CycloneDX 1.5 JSON and SPDX 2.3 JSON. Deterministic: identifiers derive from the
content, times from ``SOURCE_DATE_EPOCH``."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from email.parser import HeaderParser
from pathlib import Path
from typing import Any
from urllib.parse import quote

from packaging.licenses import InvalidLicenseExpression, canonicalize_license_expression
from packaging.markers import InvalidMarker
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from buildpacks import __version__
from buildpacks.errors import BuildError
from buildpacks.oci.layer import iter_entries
from buildpacks.oci.model import ImageSource

SBOM_ROOT = "/layers/sbom/launch"
CYCLONEDX = "sbom.cdx.json"
SPDX = "sbom.spdx.json"
CYCLONEDX_VERSION = "1.5"

_DPKG_STATUS = "var/lib/dpkg/status"
_DPKG_STATUS_D = "var/lib/dpkg/status.d/"
_APK_INSTALLED = "lib/apk/db/installed"
_OS_RELEASE = ("etc/os-release", "usr/lib/os-release")


def _purl_version(version: str) -> str:
    # The purl spec percent-encodes all but unreserved characters (an epoch's ':', a '+').
    return quote(version, safe=".-_~")


# Plain dataclasses (``==`` kept for the values read back from JSON): they are made at import
# by every build, and a frozen one costs Python 3.11 six ``exec``s, a plain one two.


@dataclass(repr=False)
class Package:
    """A Python distribution: name, version, declared license, and the names (normalised)
    of the installed distributions it requires."""

    name: str
    version: str
    license: str | None = None
    requires: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.requires = tuple(self.requires)  # read back from JSON

    @property
    def purl(self) -> str:
        # The purl spec's PyPI names: lowercased, '_' written as '-'.
        name = self.name.lower().replace("_", "-")
        return f"pkg:pypi/{quote(name, safe='.-')}@{_purl_version(self.version)}"

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "requires": list(self.requires)}


@dataclass(repr=False)
class OsPackage:
    """A package of the run image's distribution (``deb`` or ``apk``)."""

    kind: str
    name: str
    version: str
    arch: str = ""
    license: str | None = None
    depends: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.depends = tuple(self.depends)


@dataclass(repr=False)
class RunImageContents:
    """What the SBOM says about the run image: its distribution and OS packages."""

    distro: str = ""  # os-release ID, e.g. debian
    distro_version: str = ""  # os-release VERSION_ID, e.g. 12
    packages: tuple[OsPackage, ...] = field(default_factory=tuple)

    def purl(self, p: OsPackage) -> str:
        namespace = self.distro or ("alpine" if p.kind == "apk" else "debian")
        qualifiers = [f"arch={quote(p.arch)}"] if p.arch else []
        if self.distro and self.distro_version:
            qualifiers.append(f"distro={quote(self.distro)}-{quote(self.distro_version)}")
        tail = "?" + "&".join(qualifiers) if qualifiers else ""
        return f"pkg:{p.kind}/{namespace}/{quote(p.name)}@{_purl_version(p.version)}{tail}"

    def to_json(self) -> dict[str, Any]:
        return {
            "distro": self.distro,
            "distro_version": self.distro_version,
            "packages": [{**asdict(p), "depends": list(p.depends)} for p in self.packages],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunImageContents:
        return cls(
            data["distro"], data["distro_version"], tuple(OsPackage(**p) for p in data["packages"])
        )


def _stanzas(text: str) -> list[dict[str, str]]:
    """Paragraphs of ``Key: value`` lines (dpkg's format), continuation lines joined."""
    out = []
    for block in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = ""
        for line in block.splitlines():
            if line[:1] in (" ", "\t") and key:
                fields[key] += "\n" + line.strip()
            elif ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        if fields:
            out.append(fields)
    return out


def _dpkg_names(field_value: str) -> tuple[str, ...]:
    # "libc6 (>= 2.34), libssl3 | libssl1.1" → each alternative's package name
    names = []
    for alternative in re.split(r"[,|]", field_value):
        name = alternative.strip().split(" ", 1)[0].split(":", 1)[0]
        if name:
            names.append(name)
    return tuple(names)


def dpkg_packages(text: str) -> list[OsPackage]:
    """The installed packages of a dpkg status file (or a distroless ``status.d`` entry)."""
    found = []
    for fields in _stanzas(text):
        status = fields.get("Status", "install ok installed").split()
        if "Package" not in fields or "Version" not in fields or status[-1:] != ["installed"]:
            continue
        depends = ", ".join(v for k in ("Pre-Depends", "Depends") if (v := fields.get(k)))
        found.append(
            OsPackage(
                "deb", fields["Package"], fields["Version"], fields.get("Architecture", ""),
                None, _dpkg_names(depends),
            )
        )  # fmt: skip
    return found


def apk_packages(text: str) -> list[OsPackage]:
    """The installed packages of Alpine's ``lib/apk/db/installed``."""
    found = []
    for block in re.split(r"\n\s*\n", text):
        fields: dict[str, list[str]] = {}
        for line in block.splitlines():
            if len(line) > 2 and line[1] == ":":
                fields.setdefault(line[0], []).append(line[2:])
        if "P" in fields and "V" in fields:
            depends = [
                re.split(r"[<>=~]", d, maxsplit=1)[0]
                for d in " ".join(fields.get("D", [])).split()
                if not d.startswith("!")
            ]
            found.append(
                OsPackage(
                    "apk", fields["P"][0], fields["V"][0], fields.get("A", [""])[0],
                    fields.get("L", [None])[0], tuple(depends),
                )
            )  # fmt: skip
    return found


def is_run_image_record(path: str) -> bool:
    """Whether an image path (relative, no leading slash) holds what the SBOM says of the
    run image: its package databases (dpkg's ``status`` and ``status.d/`` entries, apk's)
    and its ``os-release``."""
    return path in (_DPKG_STATUS, _APK_INSTALLED, *_OS_RELEASE) or (
        path.startswith(_DPKG_STATUS_D) and not path.endswith(".md5sums")
    )


def run_image_contents(files: Mapping[str, bytes]) -> RunImageContents:
    """The run image's distribution and installed OS packages, from the content of its
    files that ``is_run_image_record`` (path to bytes, as ``rootfs.find`` reads them)."""
    text = {p: data.decode("utf-8", "replace") for p, data in files.items()}
    packages = [
        *dpkg_packages(text.get(_DPKG_STATUS, "")),
        *apk_packages(text.get(_APK_INSTALLED, "")),
    ]
    for path in sorted(p for p in text if p.startswith(_DPKG_STATUS_D)):
        packages.extend(dpkg_packages(text[path]))
    release: dict[str, str] = {}
    for path in _OS_RELEASE:
        for line in text.get(path, "").splitlines():
            key, sep, value = line.partition("=")
            if sep:
                release.setdefault(key.strip(), value.strip().strip("\"'"))
    by_name = {(p.kind, p.name, p.arch): p for p in packages}  # status.d may repeat status
    return RunImageContents(
        release.get("ID", ""),
        release.get("VERSION_ID", ""),
        tuple(sorted(by_name.values(), key=lambda p: (p.kind, p.name, p.arch))),
    )


def target_environment(minor: str, machine: str) -> dict[str, str]:
    return {
        "python_version": minor,
        "python_full_version": f"{minor}.0",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "os_name": "posix",
        "platform_machine": machine,
    }


def required_names(
    requirements: list[str], environment: dict[str, str], extras: tuple[str, ...] = ()
) -> tuple[str, ...]:
    """The normalised names of ``requirements`` whose markers hold in ``environment``
    (with no extra, or one of ``extras``)."""
    names = set()
    for text in requirements:
        try:
            req = Requirement(text)
            applies = req.marker is None or any(
                req.marker.evaluate({**environment, "extra": extra}) for extra in ("", *extras)
            )
        except (InvalidRequirement, InvalidMarker, ValueError):
            continue
        if applies:
            names.add(canonicalize_name(req.name))
    return tuple(sorted(names))


def packages_in(site_packages: Path, machine: str = "x86_64") -> list[Package]:
    """The distributions installed in a site-packages directory, sorted by name, each with
    the installed distributions it requires on the image's platform."""
    minor = site_packages.parent.name.removeprefix("python")
    environment = target_environment(minor, machine)
    found = []
    for metadata in sorted(site_packages.glob("*.dist-info/METADATA")):
        meta = HeaderParser().parsestr(metadata.read_text(encoding="utf-8", errors="replace"))
        license_ = meta.get("License-Expression") or meta.get("License")
        if license_ and ("\n" in license_ or len(license_) > 100):
            license_ = None  # a full license text, not an identifier
        requires = required_names(meta.get_all("Requires-Dist") or [], environment)
        found.append(Package(meta["Name"], meta["Version"], license_, requires))
    installed = {canonicalize_name(p.name) for p in found}
    found = [
        Package(p.name, p.version, p.license, tuple(r for r in p.requires if r in installed))
        for p in found
    ]
    return sorted(found, key=lambda p: canonicalize_name(p.name))


@dataclass(eq=False, repr=False)
class Contents:
    """Everything the SBOM lists: the application, its distributions, the interpreter and
    the run image (its reference, distribution and packages)."""

    app: Package
    packages: list[Package]
    interpreter: str  # path in the image
    python_version: str
    base: str  # the run image's name (registry reference or local name)
    base_digest: str
    run_image: RunImageContents


def spdx_license(text: str | None) -> tuple[str | None, str | None]:
    """(valid SPDX expression, free text): a declared license that is not an SPDX expression
    is kept as text."""
    if not text:
        return None, None
    try:
        return canonicalize_license_expression(text), None
    except InvalidLicenseExpression:
        return None, text.strip()


def _serial(document: dict[str, Any]) -> str:
    import uuid  # only when a document is written: a warm build reuses the SBOM layer

    return str(uuid.uuid5(uuid.NAMESPACE_URL, json.dumps(document, sort_keys=True)))


def _time(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _graph(c: Contents) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Dependencies between components by ``bom-ref``, and each Python name's ``bom-ref``."""
    python_ref = {canonicalize_name(p.name): p.purl for p in c.packages}
    os_ref = {(p.kind, p.name): c.run_image.purl(p) for p in c.run_image.packages}
    graph: dict[str, list[str]] = {
        c.app.purl: [
            *(python_ref[n] for n in c.app.requires if n in python_ref),
            "python-interpreter",
            "run-image",
        ],
        "python-interpreter": [],
        "run-image": ["operating-system", *sorted(os_ref.values())],
        "operating-system": [],
    }
    for p in c.packages:
        graph[p.purl] = sorted({python_ref[n] for n in p.requires if n in python_ref})
    for p in c.run_image.packages:
        refs = {os_ref[(p.kind, n)] for n in p.depends if (p.kind, n) in os_ref}
        graph[c.run_image.purl(p)] = sorted(refs - {c.run_image.purl(p)})
    return graph, python_ref


def _cdx_licenses(text: str | None) -> list[dict[str, Any]]:
    expression, free = spdx_license(text)
    if expression:
        return [{"expression": expression}]
    return [{"license": {"name": free}}] if free else []


def cyclonedx(c: Contents, epoch: int) -> bytes:
    """The CycloneDX 1.5 JSON document."""

    def library(p: Package) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": "library", "bom-ref": p.purl, "name": p.name, "version": p.version,
            "purl": p.purl,
        }  # fmt: skip
        if licenses := _cdx_licenses(p.license):
            out["licenses"] = licenses
        return out

    def os_package(p: OsPackage) -> dict[str, Any]:
        purl = c.run_image.purl(p)
        out: dict[str, Any] = {
            "type": "library", "bom-ref": purl, "name": p.name, "version": p.version,
            "purl": purl,
        }  # fmt: skip
        if licenses := _cdx_licenses(p.license):
            out["licenses"] = licenses
        return out

    graph, _ = _graph(c)
    app = library(c.app)
    app["type"] = "application"
    document: dict[str, Any] = {
        "bomFormat": "CycloneDX",
        "specVersion": CYCLONEDX_VERSION,
        "version": 1,
        "metadata": {
            "timestamp": _time(epoch),
            "tools": [
                {"vendor": "python-buildpacks", "name": "python-buildpacks", "version": __version__}
            ],
            "component": app,
        },
        "components": [
            *(library(p) for p in c.packages),
            {
                "type": "platform",
                "bom-ref": "python-interpreter",
                "name": "python",
                "version": c.python_version,
                "description": f"the Python interpreter of the run image, {c.interpreter}",
            },
            {
                "type": "container",
                "bom-ref": "run-image",
                "name": c.base,
                "version": c.base_digest,
            },
            {
                "type": "operating-system",
                "bom-ref": "operating-system",
                "name": c.run_image.distro or "linux",
                **({"version": c.run_image.distro_version} if c.run_image.distro_version else {}),
            },
            *(os_package(p) for p in c.run_image.packages),
        ],
        "dependencies": [{"ref": ref, "dependsOn": deps} for ref, deps in graph.items()],
    }
    document["serialNumber"] = f"urn:uuid:{_serial(document)}"
    return json.dumps(document, indent=2, sort_keys=True).encode()


def spdx(c: Contents, epoch: int) -> bytes:
    """The SPDX 2.3 JSON document."""
    extracted: dict[str, str] = {}

    def declared(text: str | None) -> str:
        expression, free = spdx_license(text)
        if expression:
            return expression
        if not free:
            return "NOASSERTION"
        ref = "LicenseRef-" + re.sub(r"[^A-Za-z0-9.-]+", "-", free).strip("-")[:60]
        extracted[ref] = free
        return ref

    def spdx_id(ref: str) -> str:
        return "SPDXRef-" + re.sub(r"[^A-Za-z0-9.-]+", "-", ref).strip("-")

    def package(ref: str, name: str, version: str, license_: str | None, purl: str | None):
        out: dict[str, Any] = {
            "SPDXID": spdx_id(ref),
            "name": name,
            "versionInfo": version,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": False,
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": declared(license_),
            "copyrightText": "NOASSERTION",
        }
        if purl:
            out["externalRefs"] = [
                {"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl",
                 "referenceLocator": purl}
            ]  # fmt: skip
        return out

    graph, _ = _graph(c)
    packages = [
        package(c.app.purl, c.app.name, c.app.version, c.app.license, c.app.purl),
        *(package(p.purl, p.name, p.version, p.license, p.purl) for p in c.packages),
        package("python-interpreter", "python", c.python_version, None, None),
        package("run-image", c.base, c.base_digest, None, None),
        package("operating-system", c.run_image.distro or "linux", c.run_image.distro_version
                or "NOASSERTION", None, None),
        *(
            package(c.run_image.purl(p), p.name, p.version, p.license, c.run_image.purl(p))
            for p in c.run_image.packages
        ),
    ]  # fmt: skip
    document: dict[str, Any] = {
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": f"{c.app.name}-{c.app.version}",
        "creationInfo": {
            "created": _time(epoch),
            "creators": [f"Tool: python-buildpacks-{__version__}"],
            "comment": f"run image: {c.base}@{c.base_digest}",
        },
        "packages": packages,
        "relationships": [
            {
                "spdxElementId": "SPDXRef-DOCUMENT",
                "relationshipType": "DESCRIBES",
                "relatedSpdxElement": spdx_id(c.app.purl),
            },
            *(
                {
                    "spdxElementId": spdx_id(ref),
                    "relationshipType": "DEPENDS_ON",
                    "relatedSpdxElement": spdx_id(dep),
                }
                for ref, deps in graph.items()
                for dep in deps
            ),
        ],
    }
    if extracted:
        document["hasExtractedLicensingInfos"] = [
            {"licenseId": ref, "extractedText": text, "name": text}
            for ref, text in sorted(extracted.items())
        ]
    document["documentNamespace"] = f"https://python-buildpacks.invalid/spdx/{_serial(document)}"
    return json.dumps(document, indent=2, sort_keys=True).encode()


def extract(source: ImageSource, out_dir: Path) -> list[Path]:
    """Write the image's SBOM files into ``out_dir``: ``sbom.cdx.json`` and ``sbom.spdx.json``
    when one layer has them, else ``<buildpack>-<layer>.sbom.<format>.json`` per layer. Only the
    SBOM layer is fetched; nothing is written unless the whole layer could be read."""
    from buildpacks.inspect import lifecycle_metadata  # the reading side of our own labels

    meta = lifecycle_metadata(source)
    sha = meta.sbom.sha if meta.sbom else ""
    if not sha or sha not in source.diff_ids:
        raise BuildError(f"{source.reference} carries no SBOM layer")
    layer = source.layer(source.diff_ids.index(sha))
    root = SBOM_ROOT.lstrip("/") + "/"
    found: dict[tuple[str, ...], dict[str, bytes]] = {}  # owner's path parts -> name -> bytes
    for tar, info in iter_entries(layer):
        name = info.name.removeprefix("./").lstrip("/")
        if not info.isfile() or not name.startswith(root) or ".." in name.split("/"):
            continue
        *owner, filename = name.removeprefix(root).split("/")
        stream = tar.extractfile(info)
        found.setdefault(tuple(owner), {})[filename] = stream.read() if stream else b""
    if not found:
        raise BuildError(f"{source.reference}: its SBOM layer holds no SBOM file under {SBOM_ROOT}")
    written = []
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for owner, files in sorted(found.items()):
            prefix = "-".join(owner) + "." if len(found) > 1 and owner else ""
            for filename, data in sorted(files.items()):
                target = out_dir / f"{prefix}{filename}"
                target.write_bytes(data)
                written.append(target)
    except OSError as e:
        raise BuildError(f"cannot write the SBOM files into {out_dir}: {e.strerror}") from None
    return written
