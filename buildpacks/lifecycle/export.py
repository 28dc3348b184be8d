"""export: place the buildpacks' layers on the run image, write the image config (entry
point, environment, non-root user, labels), and name the sinks the image (or the index of
every platform's image) goes to: the archive, the daemon, the registry, the cache image."""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import json
import re
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import packaging

from buildpacks import cachedir, cnb, sbom
from buildpacks.builtin import (
    IMAGE_USER,
    LAYERS_ROOT,
    WORKSPACE,
    BuildContext,
    LayerResult,
    application,
    cache_key,
    cached_layer,
    dependencies,
    memory_layer,
    processes,
    remember_layer,
)
from buildpacks.builtin.runtime import run_image_facts
from buildpacks.config import BuildConfig
from buildpacks.lifecycle.analyze import registry_options
from buildpacks.lifecycle.detect import Plan
from buildpacks.oci.archive import ArchiveSink, ArchiveWriter
from buildpacks.oci.blobs import BlobStore, file_digest
from buildpacks.oci.layer import File, MemoryTree, write_layer
from buildpacks.oci.model import Artifact, Image, Layer, Platform
from buildpacks.oci.reference import Reference
from buildpacks.oci.sink import Sink
from buildpacks.oci.source import TRANSPORTS

USER = "{}:{}".format(*IMAGE_USER)
# The user's home, which a base has no passwd entry for; in the config layer, owned by it.
HOME = "/home/cnb"
OCI = "org.opencontainers.image."
# Our buildpacks record processes as this Buildpack API does (direct, shell spelled out).
BUILDPACK_API = "0.10"
LIFECYCLE_ID = "python-buildpacks/lifecycle"
# A process that is PID 1 gets no default action for SIGTERM: without a handler, `podman
# stop` waits its 10 s and kills it. The venv's Python processes, when PID 1 and left with
# the default, take the default action themselves (a .pth line runs at interpreter start).
SIGTERM_PTH = (
    "import os, signal; os.getpid() == 1 and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL"
    " and signal.signal(signal.SIGTERM, lambda number, frame: os._exit(128 + number))\n"
)


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
        OCI + "source": _source_url(project.urls) or config.descriptor.source_url,
        OCI + "url": {k.lower(): v for k, v in project.urls.items()}.get("homepage"),
        OCI + "documentation": config.descriptor.documentation_url,
        OCI + "authors": ", ".join(config.descriptor.authors),
        OCI + "base.name": _base_name(config),
        OCI + "base.digest": run_image.manifest_digest,
    }
    out[cnb.BUILD] = cnb.encode(build_metadata(plan, ctx))
    return {k: v for k, v in out.items() if v}


def build_metadata(plan: Plan, ctx: BuildContext) -> cnb.BuildMetadata:
    """``io.buildpacks.build.metadata`` as the lifecycle writes it for platform API 0.13:
    every process direct with its whole command (Buildpack API >= 0.9), none marked
    ``default`` but the default named, no ``bom``, the launcher's zero value."""
    default = next((p.type for p in ctx.processes if p.default), "")
    return cnb.BuildMetadata(
        buildpacks=[cnb.GroupElement(bp.id, bp.version, cnb.HOMEPAGE) for bp in plan.buildpacks],
        processes=[
            cnb.Process(p.type, tuple(p.command), [], True, buildpack_id=processes.ID)
            for p in ctx.processes
        ],
        buildpack_default_process_type=default,
    )


def project_metadata(root: Path) -> cnb.ProjectMetadata:
    """``io.buildpacks.project.metadata`` as pack writes it from the project's git checkout
    (``version``: commit, describe; ``metadata``: refs, url), credentials stripped from the
    URL; ``{}`` outside git."""

    def git(*args: str) -> str:
        result = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True)
        return result.stdout.strip() if result.returncode == 0 else ""

    try:
        commit = git("rev-parse", "HEAD")
    except OSError:  # no git program
        return cnb.ProjectMetadata()
    if not commit:
        return cnb.ProjectMetadata()
    remote = re.sub(r"//[^/@]*@", "//", git("config", "--get", "remote.origin.url"))
    branch = git("branch", "--show-current")
    tags = git("tag", "--points-at", "HEAD").split()
    return cnb.ProjectMetadata(
        cnb.ProjectSource(
            type="git",
            version={"commit": commit, "describe": git("describe", "--tags", "--always")},
            metadata={"refs": [r for r in [branch, *tags] if r], "url": remote},
        )
    )


def lifecycle_metadata(
    config: BuildConfig, plan: Plan, run_image: Image, ctx: BuildContext, bom: Layer
) -> cnb.LayersMetadata:
    """``io.buildpacks.lifecycle.metadata``: each of our layers named once, as the lifecycle
    does: the application's under ``app``, the process entries, config and launcher layers
    by their role (found by where they go in the image), the rest under their buildpack."""
    by_role = {r.path: r.layer.diff_id for r in ctx.layers}
    by_buildpack: dict[str, dict[str, cnb.BuildpackLayer]] = {}
    for r in ctx.layers:
        if r.buildpack not in (application.ID, processes.ID) and r.path not in cnb.ROLE_PATHS:
            by_buildpack.setdefault(r.buildpack, {})[r.name] = cnb.BuildpackLayer(
                r.layer.diff_id,
                {"cache-key": r.key, **r.extra} if r.key else {},
                False,
                True,
                bool(r.key),
            )
    run = cnb.run_image_for_rebase(
        config.base_image,
        run_image.config["rootfs"]["diff_ids"][-1],
        run_image.manifest_digest or run_image.digest(),
    )
    return cnb.LayersMetadata(
        app=[
            cnb.LayerMetadata(r.layer.diff_id) for r in ctx.layers if r.buildpack == application.ID
        ],
        sbom=cnb.LayerMetadata(bom.diff_id),
        buildpacks=[
            cnb.BuildpackLayers(bp.id, bp.version, by_buildpack.get(bp.id, {}))
            for bp in plan.buildpacks
        ],
        config=cnb.LayerMetadata(by_role.get(cnb.CONFIG_DIR, "")),
        launcher=cnb.LayerMetadata(by_role.get(cnb.LAUNCHER_DIR, "")),
        process_types=cnb.LayerMetadata(by_role.get(processes.PROCESS_DIR, "")),
        run_image=run,
        stack=run.to_stack(),
    )


def _base_name(config: BuildConfig) -> str | None:
    # A local path (oci-layout:/home/...) says nothing to others and leaks the host's layout.
    return None if config.base_image.startswith(TRANSPORTS) else config.base_image


def _with_system_packages(
    contents: sbom.RunImageContents, ctx: BuildContext
) -> sbom.RunImageContents:
    """The run image's OS packages and those the system-packages layer added to it."""
    added = [
        sbom.OsPackage("deb", p["name"], p["version"], p["architecture"])
        for r in ctx.layers
        for p in r.extra.get("debian-packages", [])
    ]
    return dataclasses.replace(contents, packages=(*contents.packages, *added))


def sbom_layer(config: BuildConfig, run_image: Image, ctx: BuildContext, store: BlobStore) -> Layer:
    """The SBOM files at the CNB SBOM path, in a layer of their own."""
    project = config.project
    runtime = ctx.need_runtime()
    environment = sbom.target_environment(runtime.minor, config.platform.machine)
    app = sbom.Package(
        project.name,
        project.version,
        project.license,
        sbom.required_names(list(project.requires_dist), environment, tuple(config.extras)),
    )
    contents = sbom.Contents(
        app,
        ctx.packages,
        runtime.interpreter,
        runtime.version,
        cnb.run_image_name(config.base_image),
        run_image.manifest_digest or run_image.digest(),
        _with_system_packages(
            run_image_facts(run_image, config.cache_dir, config.platform.machine).contents,
            ctx,
        ),
    )
    epoch = config.creation_time
    target = f"{sbom.SBOM_ROOT}/{dependencies.ID.replace('/', '_')}/venv"
    # An edit of the application's code changes none of this: the documents are written
    # (the costliest part of a warm export) only when what they list changes.
    key = cache_key(
        {
            "sbom": dataclasses.asdict(contents),
            # The code writing the documents: sbom.py, the version it names, and packaging,
            # which canonicalises the license expressions.
            "code": [file_digest(Path(sbom.__file__)), sbom.__version__, packaging.__version__],
            "epoch": epoch,
            "mtime": config.source_date_epoch,
            "target": target,
            "compression": config.layer_compression,
        }
    )
    cached = cached_layer(ctx, key)
    if cached is not None:
        return cached[0]
    documents = {
        sbom.CYCLONEDX: File(sbom.cyclonedx(contents, epoch)),
        sbom.SPDX: File(sbom.spdx(contents, epoch)),
    }
    layer = write_layer(
        store,
        [MemoryTree(documents, target)],
        mtime=config.source_date_epoch,
        compression=config.layer_compression,
    )
    remember_layer(ctx, key, layer)
    return layer


def _toml_value(value: str | bool | list[str]) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    # A JSON string is a TOML basic string, but for DEL, which TOML wants escaped.
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")


def build_metadata_toml(plan: Plan, ctx: BuildContext) -> str:
    """``<layers>/config/metadata.toml`` as the lifecycle writes it: the processes and
    buildpacks its launcher reads."""
    default = next(p.type for p in ctx.processes if p.default)
    lines = [f"buildpack-default-process-type = {_toml_value(default)}"]
    for bp in plan.buildpacks:
        lines += ["", "[[buildpacks]]", f'  api = "{BUILDPACK_API}"']
        lines += [f"  id = {_toml_value(bp.id)}", f"  version = {_toml_value(bp.version)}"]
        lines += [f"  homepage = {_toml_value(cnb.HOMEPAGE)}"]
    for p in ctx.processes:
        lines += ["", "[[processes]]", f"  type = {_toml_value(p.type)}"]
        lines += [f"  command = {_toml_value(list(p.command))}", "  args = []", "  direct = true"]
        lines += [f"  buildpack-id = {_toml_value(processes.ID)}"]
    return "\n".join(lines) + "\n"


def launch_layers(plan: Plan, ctx: BuildContext) -> list[LayerResult]:
    """The layers the CNB exporter adds: process-types (``/cnb/process/<type>`` entries) and
    config (``/layers/config/metadata.toml``); the latter with the user's home, owned by the
    user, and the venv's SIGTERM default for PID 1; each from the local cache when the same
    was written before."""
    runtime = ctx.need_runtime()
    site = f"{dependencies.VENV}/lib/python{runtime.minor}/site-packages"
    config = [
        MemoryTree(
            {"metadata.toml": File(build_metadata_toml(plan, ctx).encode())}, cnb.CONFIG_DIR
        ),
        MemoryTree({}, HOME, IMAGE_USER),
        MemoryTree({"_buildpacks_sigterm.pth": File(SIGTERM_PTH.encode())}, site),
    ]
    entries = [
        MemoryTree(processes.entries(ctx.processes, runtime.interpreter), processes.PROCESS_DIR)
    ]
    return [
        LayerResult(
            LIFECYCLE_ID, "process-types", processes.PROCESS_DIR, memory_layer(ctx, entries), False
        ),
        LayerResult(LIFECYCLE_ID, "config", cnb.CONFIG_DIR, memory_layer(ctx, config), False),
    ]


def _environment(base_env: list[str], config: BuildConfig, ctx: BuildContext) -> list[str]:
    env = dict(item.split("=", 1) for item in base_env if "=" in item)
    base_path = env.get("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    env["PATH"] = ":".join([processes.PROCESS_DIR, *ctx.path_entries, base_path])
    env.update(ctx.env)
    env["PYTHONUNBUFFERED"] = "1"
    env["HOME"] = HOME
    env["CNB_PLATFORM_API"] = cnb.PLATFORM_API
    env["CNB_LAYERS_DIR"] = LAYERS_ROOT
    env["CNB_APP_DIR"] = WORKSPACE
    env.update(config.env)
    return [f"{k}={v}" for k, v in env.items()]


def project_metadata_soon(root: Path) -> Callable[[], cnb.ProjectMetadata]:
    """``project_metadata(root)`` asked now in a thread of its own, for what git answers
    (five runs of it in a checkout, ~15 ms) to come while the buildpacks run; the function
    returned waits for it (and raises what it raised). A bare thread: ``concurrent.futures``
    would be one more import for every build."""
    result: list[cnb.ProjectMetadata] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            result.append(project_metadata(root))
        except BaseException as e:
            error.append(e)

    thread = threading.Thread(target=run, name="git", daemon=True)
    thread.start()

    def wait() -> cnb.ProjectMetadata:
        thread.join()
        if error:
            raise error[0]
        return result[0]

    return wait


def assemble(
    config: BuildConfig,
    plan: Plan,
    run_image: Image,
    ctx: BuildContext,
    store: BlobStore,
    project: cnb.ProjectMetadata,
) -> Image:
    """The final image: run image layers, then ours; a config derived from the run image's;
    ``project``: its source (``project_metadata``)."""
    created = datetime.fromtimestamp(config.creation_time, timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    image_config: dict[str, Any] = copy.deepcopy(run_image.config)
    container = image_config.setdefault("config", {})
    default = next(p for p in ctx.processes if p.default)
    container["Entrypoint"] = [f"{processes.PROCESS_DIR}/{default.type}"]
    container.pop("Cmd", None)  # the base's Cmd (often `python3`) would become arguments
    container["Env"] = _environment(container.get("Env") or [], config, ctx)
    container["WorkingDir"] = WORKSPACE
    container["User"] = USER
    ctx.layers.extend(launch_layers(plan, ctx))
    bom = sbom_layer(config, run_image, ctx, store)
    runtime = ctx.need_runtime()
    ours_labels = {
        cnb.LIFECYCLE: cnb.encode(lifecycle_metadata(config, plan, run_image, ctx, bom)),
        cnb.PROJECT: cnb.encode(project),
        cnb.RUNTIME: cnb.encode(
            cnb.RuntimeMetadata(runtime.minor, runtime.version, runtime.interpreter)
        ),
    }
    # The lifecycle label has no place for the app layers' cache keys; ours keeps them, so a
    # build with an empty cache restores an unchanged app layer from the previous image.
    app_keys = [r for r in ctx.layers if r.buildpack == application.ID and r.key]
    if app_keys:
        ours_labels[cnb.CACHE] = cnb.encode(
            cnb.CacheMetadata([cnb.CachedLayer(r.key, r.layer.diff_id, r.extra) for r in app_keys])
        )
    container["Labels"] = {
        **(container.get("Labels") or {}),
        **labels(config, plan, run_image, ctx),
        **ours_labels,
    }
    if project.source:
        container["Labels"][OCI + "revision"] = project.source.version["commit"]
    ours = [*(r.layer for r in ctx.layers), bom]
    image_config["created"] = created
    image_config["rootfs"] = {
        "type": "layers",
        "diff_ids": [
            *run_image.config["rootfs"]["diff_ids"],
            *(layer.diff_id for layer in ours),
        ],
    }
    image_config["history"] = [
        *(image_config.get("history") or []),
        *(
            {"created": created, "created_by": f"buildpacks: {r.buildpack} {r.name}"}
            for r in [
                *ctx.layers,
                LayerResult(LIFECYCLE_ID, "sbom", sbom.SBOM_ROOT, bom, False),
            ]
        ),
    ]
    layers = [*run_image.layers, *ours]
    return Image(image_config, layers, reference=config.image)


def archive_path(config: BuildConfig) -> Path:
    ref = Reference.parse(config.image)
    return config.output_dir / f"{ref.repository.rsplit('/', 1)[-1]}-{ref.tag or 'latest'}.tar"


@contextmanager
def archive_writer(config: BuildConfig, run_image: Image) -> Iterator[ArchiveWriter]:
    """The archive of this build, begun now with the run image's layers (for several
    platforms, the first platform's run image); removed on exit unless its sink finished
    it."""
    # The archive it replaces goes into the cache's trash, freed in the background; the
    # ledger, keyed by the archive's path, lets the next build write on from what is kept.
    path = archive_path(config)
    key = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:32]
    writer = ArchiveWriter(
        path,
        config.source_date_epoch,
        functools.partial(cachedir.discard, cache=config.cache_dir),
        config.cache_dir / "archives" / f"{key}.json",
    )
    try:
        writer.start(run_image.layers)
        yield writer
    finally:
        writer.discard()


def cache_image(platform: Platform, ctx: BuildContext) -> Image:
    """The cacheable layers of one platform's build, as an image for ``cache-image``. A build
    for several platforms pushes an index of these (``combine``), one image per platform,
    under the one ``cache-image`` reference: restore opens it for each platform and gets
    that platform's layers, as it picks a platform from any index, and a tag is never
    shared by two platforms' caches that would overwrite each other."""
    cacheable = [r for r in ctx.layers if r.key]
    label = cnb.CacheMetadata([cnb.CachedLayer(r.key, r.layer.diff_id, r.extra) for r in cacheable])
    image_config: dict[str, Any] = {
        "os": platform.os,
        "architecture": platform.architecture,
        "config": {"Labels": {cnb.CACHE: cnb.encode(label)}},
        "rootfs": {"type": "layers", "diff_ids": [r.layer.diff_id for r in cacheable]},
    }
    if platform.variant:
        image_config["variant"] = platform.variant
    return Image(image_config, [r.layer for r in cacheable])


def outputs(
    config: BuildConfig,
    artifact: Artifact,
    cache: Artifact | None,
    writer: ArchiveWriter | None,
) -> list[tuple[Sink, Artifact]]:
    """Where a build's image (or index) goes, in order, each through the one sink protocol:
    the archive in the output directory always (finishing ``writer``); the daemon
    (``daemon``), which loads that archive; the registry (``publish``: the image reference
    and ``tags``, the digest written beside the archive); and ``cache`` to ``cache-image``."""
    archive = archive_path(config)
    sinks: list[tuple[Sink, Artifact]] = [
        (ArchiveSink(archive, config.image, config.source_date_epoch, writer), artifact)
    ]
    if config.daemon:
        from buildpacks.oci.daemon import DaemonSink  # only for a build that loads a daemon

        sinks.append((DaemonSink(config.image, config.source_date_epoch, archive), artifact))
    if config.publish or (config.cache_image and cache is not None):
        from buildpacks.oci.registry import RegistrySink  # httpx loads only when pushing

        options = registry_options(config)
        if config.publish:
            targets = [Reference.parse(config.image), *map(Reference.parse, config.tags)]
            bases = [] if config.base_image.startswith(TRANSPORTS) else [config.base_image]
            digest_file = archive.with_name(archive.name + ".digest")
            sink = RegistrySink(targets, options, [*map(Reference.parse, bases)], digest_file)
            sinks.append((sink, artifact))
        if config.cache_image and cache is not None:
            mounts = [] if config.image.startswith(TRANSPORTS) else [Reference.parse(config.image)]
            sink = RegistrySink(
                [Reference.parse(config.cache_image)], options, mounts, verb="Cache image"
            )
            sinks.append((sink, cache))
    return sinks
