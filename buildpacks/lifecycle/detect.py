"""detect: which buildpacks apply to the project, in order; the result is the build plan."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from buildpacks.builtin import (
    Buildpack,
    application,
    dependencies,
    processes,
    runtime,
    system,
)
from buildpacks.config import BuildConfig

ORDER: tuple[Buildpack, ...] = (
    runtime.BUILDPACK,
    system.BUILDPACK,
    dependencies.BUILDPACK,
    application.BUILDPACK,
    processes.BUILDPACK,
)


@dataclass(eq=False, repr=False)
class Plan:
    """The buildpacks that passed detection, in the order they build."""

    buildpacks: tuple[Buildpack, ...]


def detect(config: BuildConfig, log: Callable[[str], None]) -> Plan:
    """Run every buildpack's detection and print the plan."""
    chosen = tuple(bp for bp in ORDER if bp.detect(config))
    project = config.project
    log(
        f"Project {project.name} {project.version}, Python {config.python_version} "
        f"(from {config.origins['python-version']}), platform {config.platform}"
    )
    for bp in chosen:
        log(f"  {bp.id:<34} {bp.version}")
    return Plan(chosen)
