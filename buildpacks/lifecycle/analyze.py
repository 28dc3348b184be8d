"""analyze: resolve the run image (the base) the app's layers will be placed on, and what
it decides about the build: with an explicit base and no ``python-version``, the base's
Python is the image's. It runs before the wheel is built, so a base that does not fit the
project fails the build before anything is built."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from buildpacks import config as build_config
from buildpacks.builtin import runtime
from buildpacks.config import BuildConfig
from buildpacks.errors import BuildError
from buildpacks.lifecycle import platforms
from buildpacks.oci.blobs import BlobStore
from buildpacks.oci.manifest import MissingPlatform
from buildpacks.oci.model import Image, RegistryOptions
from buildpacks.oci.source import TRANSPORTS, open_image
from buildpacks.progress import Transfers
from buildpacks.project import Project


def registry_options(config: BuildConfig) -> RegistryOptions:
    return RegistryOptions(insecure=config.insecure_registries, ca_bundle=config.registry_ca)


def analyze(config: BuildConfig, store: BlobStore, log: Callable[[str], None]) -> Image:
    """The run image, with its blobs verified into the local store."""
    try:
        image = open_image(
            config.base_image,
            config.platform,
            store,
            options=registry_options(config),
            pull_policy=config.pull_policy,
            transfers=Transfers(log),
            debian_mirror=config.debian_mirror,
            debian_keyring=config.debian_keyring,
        )
    except BuildError as e:
        if config.base_image.startswith(TRANSPORTS) or isinstance(e, MissingPlatform):
            raise
        # Most often the default base on Docker Hub, out of reach: say how to choose another.
        raise BuildError(
            f"{e}; set base-image (BP_BASE_IMAGE, --base-image) to a registry you can reach, "
            "or to a local base: oci-layout:PATH[:TAG], oci-archive:PATH or docker-archive:PATH"
        ) from None
    log(
        f"Run image {config.base_image} ({image.manifest_digest or image.digest()}), "
        f"{len(image.layers)} layer(s)"
    )
    return image


def analyze_all(
    config: BuildConfig, store: BlobStore, log: Callable[[str], None]
) -> tuple[Image, ...]:
    """The run image of each of ``config.platforms``, in order: the base's manifest for that
    platform (a base lacking one fails, naming those it has)."""
    images = []
    for target in platforms.targets(config, log):
        with target.naming():
            images.append(analyze(target.config, store, target.log))
    return tuple(images)


@dataclass(eq=False, repr=False)
class Analysis:
    """The configuration completed by what the run images hold, and the run images, one per
    platform of ``config.platforms``, with what the runtime buildpack read in each."""

    config: BuildConfig
    run_images: tuple[Image, ...]
    facts: tuple[runtime.RunImageFacts, ...]


def _complete(
    config: BuildConfig,
    images: tuple[Image, ...],
    facts: tuple[runtime.RunImageFacts, ...],
    project: Project,
    overrides: Mapping[str, Any] | None,
    env: Mapping[str, str] | None,
) -> Analysis:
    # The first platform's base decides the Python; every platform's must have it.
    minors = runtime.python_minors(facts[0])
    config = build_config.resolve(project, config.output_dir, env, overrides, base_pythons=minors)
    # The Python asked for (or inferred) must be in the base: checked before any wheel is built.
    quiet = platforms.targets(config, lambda line: None)  # for the naming of errors only
    for target, image, found in zip(quiet, images, facts, strict=True):
        machine = target.config.platform.machine
        with target.naming():
            runtime.find_runtime(image, config.python_version, machine, found)
    return Analysis(config, images, facts)


def prepare(
    project: Project,
    output_dir: Path,
    log: Callable[[str], None],
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> Analysis:
    """Resolve the configuration of ``project``, open its run image for each platform and
    complete the configuration with the base's Python; a base without the Python the build
    needs, or whose Python ``requires-python`` refuses, is a ``BuildError``."""
    config = build_config.resolve(project, output_dir, env, overrides)
    log("===> ANALYZING")
    images = analyze_all(config, BlobStore(config.cache_dir / "blobs", log), log)
    facts = tuple(
        runtime.run_image_facts(image, config.cache_dir, platform.machine)
        for image, platform in zip(images, config.platforms, strict=True)
    )
    analysis = _complete(config, images, facts, project, overrides, env)
    for warning in analysis.config.warnings:
        log(f"warning: {warning}")
    return analysis


def reanalyze(
    analysis: Analysis,
    project: Project,
    log: Callable[[str], None],
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> Analysis:
    """``analysis`` for ``project`` as its wheel describes it (dynamic metadata resolved):
    the same run images, not opened again, unless the base now named is another one (the
    default base follows the Python version)."""
    config = build_config.resolve(project, analysis.config.output_dir, env, overrides)
    if config.base_image != analysis.config.base_image:
        return prepare(project, analysis.config.output_dir, log, overrides, env)
    return _complete(config, analysis.run_images, analysis.facts, project, overrides, env)
