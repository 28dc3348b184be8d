"""The CNB lifecycle, in-process, one module per phase.

``build_image`` runs them in order: analyze → detect → restore → build → export, as the CNB
lifecycle does. Each phase takes the plain results of the phases before it and never reaches
back. Build tools run analyze (``analyze.prepare``) before they build the wheel.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from buildpacks.cachedir import work_dir
from buildpacks.config import BuildConfig
from buildpacks.lifecycle import analyze, build, detect, export, restore
from buildpacks.oci.blobs import BlobStore
from buildpacks.oci.model import Image, Platform


@dataclass(frozen=True)
class BuildResult:
    """What a finished build produced."""

    reference: str
    digest: str
    archive: Path
    platform: Platform


def build_image(
    config: BuildConfig,
    wheel: Path | None,
    log: Callable[[str], None] = print,
    run_image: Image | None = None,
) -> BuildResult:
    """Build the image of ``config.project`` from its ``wheel`` (None: from its source tree)
    and write it to the output directory; ``run_image`` is the base ``analyze.prepare``
    opened already, else it is opened here."""
    store = BlobStore(config.cache_dir / "blobs", log)
    if run_image is None:
        log("===> ANALYZING")
        run_image = analyze.analyze(config, store, log)
    log("===> DETECTING")
    plan = detect.detect(config, log)
    with ExitStack() as stack:
        # The run image's layers, most of the archive's bytes, are copied while buildpacks run.
        writer = stack.enter_context(export.archive_writer(config, run_image))
        log("===> RESTORING")
        if config.clear_cache:
            log("Cache cleared: every layer is built afresh (clear-cache)")
            reusable = {}
        else:
            previous = restore.previous_sources(config, str(export.archive_path(config)))
            reusable = restore.restore(config, previous, store, stack, log)
        log("===> BUILDING")
        work = stack.enter_context(work_dir(config.cache_dir))
        built = build.build(config, plan, wheel, run_image, store, work, log, reusable)
        log("===> EXPORTING")
        image = export.assemble(config, plan, run_image, built, store)
        cache = export.cache_image(config.platform, built) if config.cache_image else None
        for sink, artifact in export.outputs(config, image, cache, writer):
            sink.write(artifact, log)
    log(f"Image: {config.image}")
    log(f"Digest: {image.digest()}")
    return BuildResult(config.image, image.digest(), export.archive_path(config), config.platform)
