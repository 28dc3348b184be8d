"""export: place the buildpacks' layers on the run image, write the image config (entry
point, environment, non-root user, labels) and hand the image to its target (an archive)."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from buildpacks.buildpacks import WORKSPACE, BuildContext
from buildpacks.config import BuildConfig
from buildpacks.lifecycle.analyze import registry_options
from buildpacks.lifecycle.detect import Plan
from buildpacks.oci import daemon, registry
from buildpacks.oci.archive import write_archive
from buildpacks.oci.layer import source_date_epoch
from buildpacks.oci.model import Image
from buildpacks.oci.reference import Reference
from buildpacks.oci.source import TRANSPORTS
from buildpacks.progress import Transfers

# The non-root user of CNB run images; numeric, so no passwd entry is needed in the base.
USER = "1000:1000"
OCI = "org.opencontainers.image."
BUILD_METADATA = "io.buildpacks.build.metadata"


def _source_url(urls: dict[str, str]) -> str | None:
    by_label = {k.lower(): v for k, v in urls.items()}
    for label in ("source", "repository", "source code", "code", "github", "homepage"):
        if label in by_label:
            return by_label[label]
    return None


def labels(config: BuildConfig, plan: Plan, run_image: Image, ctx: BuildContext) -> dict[str, str]:
    """OCI annotations from project metadata, and the CNB build metadata."""
    project = config.project
    out = {
        OCI + "title": project.name,
        OCI + "version": project.version,
        OCI + "description": project.summary,
        OCI + "licenses": project.license,
        OCI + "source": _source_url(project.urls),
        OCI + "url": {k.lower(): v for k, v in project.urls.items()}.get("homepage"),
        # A local path (oci-layout:/home/...) says nothing to others and leaks the host's layout.
        OCI + "base.name": None if config.base_image.startswith(TRANSPORTS) else config.base_image,
        OCI + "base.digest": run_image.manifest_digest,
    }
    build_metadata = {
        "buildpacks": [{"id": bp.id, "version": bp.version} for bp in plan.buildpacks],
        "processes": [
            {
                "type": p.type,
                "command": list(p.command),
                "args": [],
                "direct": True,
                "default": p.default,
                "buildpackID": "python-buildpacks/processes",
            }
            for p in ctx.processes
        ],
        "launcher": {"version": "", "source": {}},
    }
    out[BUILD_METADATA] = json.dumps(build_metadata, sort_keys=True, separators=(",", ":"))
    return {k: v for k, v in out.items() if v}


def _environment(base_env: list[str], ctx: BuildContext) -> list[str]:
    env = dict(item.split("=", 1) for item in base_env if "=" in item)
    base_path = env.get("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    env["PATH"] = ":".join([*ctx.path_entries, base_path])
    env.update(ctx.env)
    env["PYTHONUNBUFFERED"] = "1"
    return [f"{k}={v}" for k, v in env.items()]


def assemble(config: BuildConfig, plan: Plan, run_image: Image, ctx: BuildContext) -> Image:
    """The final image: run image layers, then ours; a config derived from the run image's."""
    created = datetime.fromtimestamp(source_date_epoch(), timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    image_config: dict[str, Any] = copy.deepcopy(run_image.config)
    container = image_config.setdefault("config", {})
    default = next(p for p in ctx.processes if p.default)
    container["Entrypoint"] = list(default.command)
    container.pop("Cmd", None)  # the base's Cmd (often `python3`) would become arguments
    container["Env"] = _environment(container.get("Env") or [], ctx)
    container["WorkingDir"] = WORKSPACE
    container["User"] = USER
    container["Labels"] = {
        **(container.get("Labels") or {}),
        **labels(config, plan, run_image, ctx),
    }
    image_config["created"] = created
    image_config["rootfs"] = {
        "type": "layers",
        "diff_ids": [
            *run_image.config["rootfs"]["diff_ids"],
            *(r.layer.diff_id for r in ctx.layers),
        ],
    }
    image_config["history"] = [
        *(image_config.get("history") or []),
        *(
            {"created": created, "created_by": f"buildpacks: {r.buildpack} {r.name}"}
            for r in ctx.layers
        ),
    ]
    layers = [*run_image.layers, *(r.layer for r in ctx.layers)]
    return Image(image_config, layers, reference=config.image)


def archive_path(config: BuildConfig) -> Path:
    ref = Reference.parse(config.image)
    return config.output_dir / f"{ref.repository.rsplit('/', 1)[-1]}-{ref.tag or 'latest'}.tar"


def write(config: BuildConfig, image: Image, log: Callable[[str], None]) -> Path:
    """Write the image archive into the output directory and report reference and digest."""
    path = archive_path(config)
    write_archive(image, path, config.image, source_date_epoch())
    log(f"Image: {config.image}")
    log(f"Digest: {image.digest()}")
    log(f"Archive: {path}")
    return path


def publish(config: BuildConfig, image: Image, archive: Path, log: Callable[[str], None]) -> str:
    """Push the image as ``image`` and every entry of ``tags``; write its digest beside the
    archive (``<archive>.digest``) for scripts."""
    targets = [Reference.parse(config.image), *(Reference.parse(tag) for tag in config.tags)]
    base = [] if config.base_image.startswith(TRANSPORTS) else [Reference.parse(config.base_image)]
    digest = registry.push(image, targets, registry_options(config), Transfers(log), base)
    digest_file = archive.with_name(archive.name + ".digest")
    temp = digest_file.with_name("." + digest_file.name + ".partial")
    temp.write_text(digest + "\n")
    temp.replace(digest_file)
    for target in targets:
        log(f"Pushed {target.registry}/{target.repository}:{target.tag}@{digest}")
    return digest


def to_daemon(archive: Path, log: Callable[[str], None]) -> None:
    """Load the image into the Docker Engine API at ``DOCKER_HOST``."""
    for tag in daemon.load(archive):
        log(f"Loaded into the daemon: {tag}")
