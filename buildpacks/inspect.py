"""What a finished image says about itself, from its manifest, config and labels only:
run image, Python, buildpacks, processes, layers with sizes and origins, the SBOM's layer;
and of an image index, the platforms it serves."""

from __future__ import annotations

from typing import Any

from buildpacks import cnb
from buildpacks.errors import BuildError
from buildpacks.oci.manifest import index_platforms
from buildpacks.oci.model import OCI_INDEX, ImageSource
from buildpacks.progress import human


def lifecycle_metadata(source: ImageSource) -> cnb.LayersMetadata:
    """The CNB lifecycle label, required: images not built by a CNB platform are refused."""
    labels = cnb.image_labels(source.config)
    meta = cnb.read_label(labels, cnb.LIFECYCLE, cnb.LayersMetadata, source.reference)
    if meta is None or not meta.run_image.top_layer:
        raise BuildError(
            f"{source.reference} has no {cnb.LIFECYCLE} label: it was not built by "
            "python-buildpacks or another CNB platform"
        )
    return meta


def layer_origins(source: ImageSource, meta: cnb.LayersMetadata) -> list[str]:
    """For each layer, bottom to top, what put it there."""
    named: dict[str, str] = {}
    for bp in meta.buildpacks:
        for name, layer in bp.layers.items():
            named[layer.sha] = f"{bp.key} {name}"
    named.update({app.sha: "app" for app in meta.app})
    named[meta.launcher.sha] = "launcher"
    named[meta.process_types.sha] = "process types"
    named[meta.config.sha] = "config"
    if meta.sbom:
        named[meta.sbom.sha] = "sbom"
    named.pop("", None)
    origins, in_base = [], True
    for diff_id in source.diff_ids:
        origins.append("run image" if in_base else named.get(diff_id, "unknown"))
        if diff_id == meta.run_image.top_layer:
            in_base = False
    return origins


def inspect(source: ImageSource) -> dict[str, Any]:
    """The inspection report of an image, as plain data."""
    meta = lifecycle_metadata(source)
    labels = cnb.image_labels(source.config)
    build = cnb.read_label(labels, cnb.BUILD, cnb.BuildMetadata, source.reference)
    build = build or cnb.BuildMetadata()
    runtime = cnb.read_label(labels, cnb.RUNTIME, cnb.RuntimeMetadata, source.reference)
    default = build.default_process()
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
        "runImage": cnb.to_json(meta.run_image),
        "python": cnb.to_json(runtime) if runtime else {},
        "buildpacks": cnb.to_json(build.buildpacks),
        "processes": [{**cnb.to_json(p), "default": p is default} for p in build.processes],
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


def inspect_index(reference: str, index: dict[str, Any], digest: str) -> dict[str, Any]:
    """The inspection report of an image index: its platforms and their manifests."""
    return {
        "reference": reference,
        "digest": digest,
        "mediaType": index.get("mediaType", OCI_INDEX),
        "platforms": [
            {"platform": str(platform), "digest": d.digest, "size": d.size}
            for platform, d in index_platforms(index)
        ],
    }


def render_index(report: dict[str, Any]) -> str:
    """The index report as text for a terminal."""
    width = max((len(p["platform"]) for p in report["platforms"]), default=0)
    return "\n".join(
        [
            f"Index:     {report['reference']}",
            f"Digest:    {report['digest']}",
            "Platforms:",
            *(f"  {p['platform']:<{width}}  {p['digest']}" for p in report["platforms"]),
            f"`buildpacks inspect {report['reference']} --platform PLATFORM` shows one",
        ]
    )
