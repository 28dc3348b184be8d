"""build: run each buildpack of the plan; collect layers, processes and launch environment."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from buildpacks.builtin import BuildContext
from buildpacks.config import BuildConfig
from buildpacks.lifecycle.detect import Plan
from buildpacks.lifecycle.restore import Restorer
from buildpacks.oci.blobs import BlobStore
from buildpacks.oci.model import Image


def build(
    config: BuildConfig,
    plan: Plan,
    wheel: Path | None,
    run_image: Image,
    store: BlobStore,
    scratch: Callable[[], Path],
    log: Callable[[str], None],
    reusable: dict[str, Restorer] | None = None,
    wheel_check: Callable[[], None] | None = None,
) -> BuildContext:
    """Run the plan's buildpacks in order in a fresh context and return it, filled."""
    ctx = BuildContext(
        config, wheel, run_image, store, scratch, log, reusable=reusable or {},
        wheel_check=wheel_check,
    )  # fmt: skip
    for bp in plan.buildpacks:
        bp.build(ctx)
    return ctx
