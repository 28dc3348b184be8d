"""What a finished image says about itself, from its manifest, config and labels only:
run image, Python, buildpacks, processes, layers with sizes and origins, the SBOM's layer."""

from __future__ import annotations

import json
from typing import Any

from buildpacks.errors import BuildError
from buildpacks.oci.model import ImageSource
from buildpacks.progress import human

LIFECYCLE = "io.buildpacks.lifecycle.metadata"
BUILD = "io.buildpacks.build.metadata"
RUNTIME = "io.python-buildpacks.runtime"


def label_json(source: ImageSource, key: str) -> dict[str, Any]:
    """A JSON label of the image ({} when absent); a malformed one is a ``BuildError``."""
    labels = source.config.get("config", {}).get("Labels") or {}
    if key not in labels:
        return {}
    try:
        return json.loads(labels[key])
    except ValueError:
        raise BuildError(f"{source.reference}: label {key} is not JSON") from None


def lifecycle_metadata(source: ImageSource) -> dict[str, Any]:
    """The CNB lifecycle label, required: images not built by a CNB platform are refused."""
    meta = label_json(source, LIFECYCLE)
    if not meta.get("runImage", {}).get("topLayer"):
        raise BuildError(
            f"{source.reference} has no {LIFECYCLE} label: it was not built by python-buildpacks "
            "or another CNB platform"
        )
    return meta


def layer_origins(source: ImageSource, meta: dict[str, Any]) -> list[str]:
    """For each layer, bottom to top, what put it there."""
    named: dict[str, str] = {}
    for bp in meta.get("buildpacks", []):
        for name, layer in bp.get("layers", {}).items():
            named[layer.get("sha", "")] = f"{bp['key']} {name}"
    named[meta.get("config", {}).get("sha", "")] = "config (processes)"
    named[meta.get("sbom", {}).get("sha", "")] = "sbom"
    top = meta["runImage"]["topLayer"]
    origins, in_base = [], True
    for diff_id in source.diff_ids:
        origins.append("run image" if in_base else named.get(diff_id, "unknown"))
        if diff_id == top:
            in_base = False
    return origins


def inspect(source: ImageSource) -> dict[str, Any]:
    """The inspection report of an image, as plain data."""
    meta = lifecycle_metadata(source)
    build = label_json(source, BUILD)
    container = source.config.get("config", {})
    layers = [
        {"digest": d.digest, "diffId": diff_id, "size": d.size, "origin": origin}
        for d, diff_id, origin in zip(
            source.layer_descriptors, source.diff_ids, layer_origins(source, meta), strict=True
        )
    ]
    sbom = next((layer for layer in layers if layer["origin"] == "sbom"), None)
    return {
        "reference": source.reference,
        "digest": source.manifest_digest,
        "platform": f"{source.config.get('os')}/{source.config.get('architecture')}",
        "created": source.config.get("created"),
        "runImage": meta["runImage"],
        "python": label_json(source, RUNTIME),
        "buildpacks": build.get("buildpacks", []),
        "processes": build.get("processes", []),
        "entrypoint": container.get("Entrypoint"),
        "user": container.get("User"),
        "layers": layers,
        "sbom": {"layer": sbom["digest"], "size": sbom["size"], "formats": ["cyclonedx", "spdx"]}
        if sbom
        else None,
        "labels": {
            k: v
            for k, v in (container.get("Labels") or {}).items()
            if k.startswith("org.opencontainers")
        },
    }


def render(report: dict[str, Any]) -> str:
    """The report as text for a terminal."""
    run = report["runImage"]
    python = report["python"]
    lines = [
        f"Image:     {report['reference']}",
        f"Digest:    {report['digest']}",
        f"Platform:  {report['platform']}",
        f"Run image: {run.get('image') or '(local)'} {run.get('reference', '')}",
        f"Python:    {python.get('version', '?')} ({python.get('interpreter', '?')})",
        f"User:      {report['user']}",
        "Buildpacks:",
        *(f"  {bp['id']:<34} {bp['version']}" for bp in report["buildpacks"]),
        "Processes:",
        *(
            f"  {p['type']}{' (default)' if p.get('default') else ''}: {' '.join(p['command'])}"
            for p in report["processes"]
        ),
        "Layers:",
        *(
            f"  {layer['digest'][:19]}  {human(layer['size']):>9}  {layer['origin']}"
            for layer in report["layers"]
        ),
    ]
    sbom = report["sbom"]
    lines.append(
        f"SBOM:      CycloneDX and SPDX in layer {sbom['layer'][:19]} ({human(sbom['size'])}); "
        "`buildpacks sbom REF -o DIR` writes them"
        if sbom
        else "SBOM:      none"
    )
    return "\n".join(lines)
