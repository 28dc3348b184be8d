"""rebase: put an image's app layers on a newer run image without rebuilding them.

The layers above the old run image's top layer (per the lifecycle label) are kept as they
are, digests included; only the config and the manifest are new. Refused, unless forced,
when the new run image is for another OS or architecture, or lacks the interpreter the
image's virtual environment points at (another Python minor version breaks the venv). An
image index is rebased manifest by manifest, each onto the new run image's manifest for the
same os/architecture/variant; refused outright when the new run image lacks a platform."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Sequence

from buildpacks import cnb
from buildpacks.builtin.runtime import inspect_run_image
from buildpacks.debian import PACKAGES_LABEL
from buildpacks.errors import BuildError
from buildpacks.inspect import lifecycle_metadata
from buildpacks.oci.model import Image, ImageSource, Layer, Platform
from buildpacks.oci.source import TRANSPORTS

# Labels that describe the run image: they go with it when an image is rebased.
BASE_LABELS = ("io.buildpacks.base.", PACKAGES_LABEL)
OCI = "org.opencontainers.image."


def recorded_run_image(source: ImageSource) -> str | None:
    """The registry reference of the run image the image was built on (or last rebased
    onto); None for a local base, whose recorded name is not one to pull from."""
    name = lifecycle_metadata(source).run_image.image
    registry_base = cnb.image_labels(source.config).get(OCI + "base.name")
    return name if name and name == registry_base else None


def check_platforms(
    reference: str, run_image: str, wanted: Sequence[Platform], offered: Sequence[Platform]
) -> None:
    """Refuse the rebase of an index whose platforms the new run image does not all serve
    (no ``--force``: a platform without a base has nothing to be rebased onto)."""
    missing = [p for p in wanted if not any(p.matches(o.to_json()) for o in offered)]
    if missing:
        raise BuildError(
            f"rebase of {reference} refused: the new run image {run_image} has no image for "
            f"{', '.join(map(str, missing))} (it has: {', '.join(map(str, offered)) or 'none'})"
        )


def check_compatible(source: ImageSource, new_base: Image, force: bool) -> list[str]:
    """Reasons the new run image does not fit; raises unless ``force``."""
    problems = []
    old = f"{source.config.get('os')}/{source.config.get('architecture')}"
    new = f"{new_base.platform.os}/{new_base.platform.architecture}"
    if old != new:
        problems.append(f"it is for {new}, the image for {old}")
    labels = cnb.image_labels(source.config)
    runtime = cnb.read_label(labels, cnb.RUNTIME, cnb.RuntimeMetadata, source.reference)
    interpreter = runtime.interpreter if runtime else ""
    if interpreter:
        machine = new_base.platform.machine
        found = ["/" + p for p in inspect_run_image(new_base, machine).interpreters]
        if interpreter not in found:
            problems.append(
                f"it has no {interpreter} (Python {runtime.python}, which the image's "
                f"virtual environment runs on; it has: {', '.join(found) or 'no Python'})"
            )
    if problems and not force:
        raise BuildError(
            f"rebase of {source.reference} onto {new_base.reference} refused: "
            + "; ".join(problems)
            + " (--force rebases anyway)"
        )
    return problems


def rebase(
    source: ImageSource,
    new_base: Image,
    app_layer: Callable[[int], Layer],
    force: bool = False,
) -> Image:
    """The image of ``source`` on ``new_base``; ``app_layer(i)`` gives layer ``i`` of the source
    (fetched, or only described when the target already has it)."""
    meta = lifecycle_metadata(source)
    top = meta.run_image.top_layer
    if top not in source.diff_ids:
        raise BuildError(f"{source.reference}: run image top layer {top} is not among its layers")
    check_compatible(source, new_base, force)
    first_app = source.diff_ids.index(top) + 1
    app_layers = [app_layer(i) for i in range(first_app, len(source.diff_ids))]

    config = copy.deepcopy(source.config)
    container = config.setdefault("config", {})
    base_labels = (new_base.config.get("config") or {}).get("Labels") or {}
    labels = {
        k: v for k, v in (container.get("Labels") or {}).items() if not k.startswith(BASE_LABELS)
    }
    labels.update({k: v for k, v in base_labels.items() if k.startswith(BASE_LABELS)})
    base_digest = new_base.manifest_digest or new_base.digest()
    run = cnb.run_image_for_rebase(
        new_base.reference, new_base.config["rootfs"]["diff_ids"][-1], base_digest
    )
    meta = dataclasses.replace(meta, run_image=run, stack=run.to_stack())
    labels[cnb.LIFECYCLE] = cnb.encode(meta)
    labels[OCI + "base.digest"] = base_digest
    if new_base.reference.startswith(TRANSPORTS):
        labels.pop(OCI + "base.name", None)
    else:
        labels[OCI + "base.name"] = new_base.reference
    container["Labels"] = labels
    config["rootfs"] = {
        "type": "layers",
        "diff_ids": [
            *new_base.config["rootfs"]["diff_ids"],
            *(layer.diff_id for layer in app_layers),
        ],
    }
    old_history = source.config.get("history") or []
    app_history = [h for h in old_history if not h.get("empty_layer")][first_app:]
    config["history"] = [*(new_base.config.get("history") or []), *app_history]
    return Image(config, [*new_base.layers, *app_layers], reference=source.reference)
