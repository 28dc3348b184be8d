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
from buildpacks.oci.blobs import BlobStore
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
        if config.base_image.startswith(TRANSPORTS):
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


@dataclass(frozen=True)
class Analysis:
    """The configuration completed by what the run image holds, and the run image."""

    config: BuildConfig
    run_image: Image
    facts: dict[str, Any]  # runtime.inspect_run_image of the run image


def _complete(
    config: BuildConfig,
    image: Image,
    facts: dict[str, Any],
    project: Project,
    overrides: Mapping[str, Any] | None,
    env: Mapping[str, str] | None,
) -> Analysis:
    minors = runtime.python_minors(facts)
    config = build_config.resolve(project, config.output_dir, env, overrides, base_pythons=minors)
    # The Python asked for (or inferred) must be in the base: checked before any wheel is built.
    runtime.find_runtime(image, config.python_version, config.platform.machine, facts)
    return Analysis(config, image, facts)


def prepare(
    project: Project,
    output_dir: Path,
    log: Callable[[str], None],
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> Analysis:
    """Resolve the configuration of ``project``, open its run image and complete the
    configuration with the base's Python; a base without the Python the build needs, or
    whose Python ``requires-python`` refuses, is a ``BuildError``."""
    config = build_config.resolve(project, output_dir, env, overrides)
    log("===> ANALYZING")
    image = analyze(config, BlobStore(config.cache_dir / "blobs", log), log)
    facts = runtime.run_image_facts(image, config.cache_dir, config.platform.machine)
    analysis = _complete(config, image, facts, project, overrides, env)
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
    the same run image, not opened again, unless the base now named is another one (the
    default base follows the Python version)."""
    config = build_config.resolve(project, analysis.config.output_dir, env, overrides)
    if config.base_image != analysis.config.base_image:
        return prepare(project, analysis.config.output_dir, log, overrides, env)
    return _complete(config, analysis.run_image, analysis.facts, project, overrides, env)
