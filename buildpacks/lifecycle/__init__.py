"""The CNB lifecycle, in-process, one module per phase.

``build_image`` runs them in order: analyze → detect → restore → build → export, as the CNB
lifecycle does, once per platform asked for. Each phase takes the plain results of the
phases before it and never reaches back. Build tools run analyze (``analyze.prepare``)
before they build the wheel.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from buildpacks import cachedir, cnb
from buildpacks.builtin import BuildContext, application, dependencies, runtime
from buildpacks.config import BuildConfig
from buildpacks.errors import BuildError
from buildpacks.lifecycle import analyze, build, detect, export, platforms, restore
from buildpacks.oci.blobs import BlobStore
from buildpacks.oci.model import Image, Platform, combine


@dataclass(eq=False, repr=False)
class BuildResult:
    """What a finished build produced: with several platforms, ``digest`` is the index's."""

    reference: str
    digest: str
    archive: Path
    platforms: tuple[Platform, ...]


@dataclass(eq=False, repr=False)
class Built:
    """One platform's image, and the context its buildpacks filled."""

    config: BuildConfig
    image: Image
    context: BuildContext


def build_platform(
    target: platforms.Target,
    wheel: Path | None,
    run_image: Image,
    store: BlobStore,
    stack: ExitStack,
    project: Callable[[], cnb.ProjectMetadata],
    wheel_check: Callable[[], None] | None = None,
) -> Built:
    """detect → restore → build → export of one platform's image (not written anywhere);
    its work directory and restored images stay open on ``stack``; ``project``: the source
    it is built from, when export asks (``export.project_metadata_soon``); ``wheel_check``:
    the wheel-gap check of every platform of the build (None: this platform's alone)."""
    config, log = target.config, target.log
    with target.naming():
        log("===> DETECTING")
        plan = detect.detect(config, log)
        log("===> RESTORING")
        if config.clear_cache:
            log("Cache cleared: every layer is built afresh (clear-cache)")
            reusable = {}
        else:
            previous = restore.previous_sources(config, str(export.archive_path(config)))
            reusable = restore.restore(config, previous, store, stack, log)
        log("===> BUILDING")
        # Made only when a layer is staged on disk (a rebuilt dependencies layer, a source
        # tree): a warm build writes its layers from memory, and making and removing a
        # directory is not free (milliseconds each on a file system mounted with discard).
        scratch = functools.cache(lambda: stack.enter_context(cachedir.work_dir(config.cache_dir)))
        built = build.build(
            config, plan, wheel, run_image, store, scratch, log, reusable, wheel_check
        )
        log("===> EXPORTING")
        image = export.assemble(config, plan, run_image, built, store, project())
        return Built(config, image, built)


def build_images(
    config: BuildConfig,
    wheel: Path | None,
    log: Callable[[str], None],
    run_images: tuple[Image, ...],
    store: BlobStore,
    stack: ExitStack,
    project: Callable[[], cnb.ProjectMetadata],
) -> list[Built]:
    """Each platform's image, in the order of ``config.platforms``, from ``project``'s
    source (see ``build_platform``). A pure wheel is built
    once and installed alike on each, so its layer is the same blob on every platform; a
    wheel that is not pure cannot serve several platforms and is refused first. Before the
    first platform's dependencies are installed, every platform's are checked for wheels
    at once (one error for all)."""
    targets = platforms.targets(config, log)
    wheel_check = None
    if len(targets) > 1:
        if wheel is not None:
            application.check_pure(wheel, config.platforms)

        @functools.cache
        def wheel_check() -> None:
            found = []
            for target, image in zip(targets, run_images, strict=True):
                machine = target.config.platform.machine
                facts = runtime.run_image_facts(image, config.cache_dir, machine)
                python = runtime.find_runtime(image, config.python_version, machine, facts)
                found.append((target.config, python))
            try:
                dependencies.check_wheels(found, log)
            except BuildError as e:  # it names each platform it is about
                raise platforms.AcrossPlatforms(str(e)) from None

    return [
        build_platform(target, wheel, run_image, store, stack, project, wheel_check)
        for target, run_image in zip(targets, run_images, strict=True)
    ]


def build_image(
    config: BuildConfig,
    wheel: Path | None,
    log: Callable[[str], None] = print,
    run_images: tuple[Image, ...] | None = None,
) -> BuildResult:
    """Build the image of ``config.project`` from its ``wheel`` (None: from its source tree)
    for each of its platforms, one image or an index of them, and write it to every output
    asked for; ``run_images`` are the bases ``analyze.prepare`` opened (one per platform),
    else they are opened here."""
    store = BlobStore(config.cache_dir / "blobs", log)
    # Meanwhile: what the last build left in the trash is removed, git is asked.
    cachedir.empty_trash(config.cache_dir)
    project = export.project_metadata_soon(config.project.root)
    if run_images is None:
        log("===> ANALYZING")
        run_images = analyze.analyze_all(config, store, log)
    with ExitStack() as stack:
        # The first run image's layers, most of the archive's bytes, are copied while
        # buildpacks run (unless the archive in place begins with them: it is written on).
        writer = stack.enter_context(export.archive_writer(config, run_images[0]))
        images = build_images(config, wheel, log, run_images, store, stack, project)
        artifact = combine([b.image for b in images], config.image)
        cache = (
            combine([export.cache_image(b.config.platform, b.context) for b in images])
            if config.cache_image
            else None
        )
        for sink, output in export.outputs(config, artifact, cache, writer):
            sink.write(output, log)
    log(f"Image: {config.image}")
    log(f"Digest: {artifact.digest()}")
    return BuildResult(
        config.image, artifact.digest(), export.archive_path(config), config.platforms
    )
