"""Every PEP 517 and PEP 660 hook of ``setuptools.build_meta`` (so ``pip install -e .`` works
as with setuptools); ``build_wheel`` also builds the image when the frontend passes
``image=true`` (``python -m build -C image=true``, ``uv build -C image=true``).

Other ``-C image-<key>=<value>`` settings override ``[tool.buildpacks]`` keys, e.g.
``-C image-base-image=python:3.12-slim`` or ``-C image-publish=true``. Without ``image`` the
backend is setuptools, unchanged, and the image machinery is not even imported.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from setuptools import build_meta as _setuptools

# Re-exported as they are: every hook but build_wheel.
from setuptools.build_meta import (
    build_editable,
    build_sdist,
    get_requires_for_build_editable,
    get_requires_for_build_sdist,
    get_requires_for_build_wheel,
    prepare_metadata_for_build_editable,
    prepare_metadata_for_build_wheel,
)

__all__ = [
    "build_editable",
    "build_sdist",
    "build_wheel",
    "get_requires_for_build_editable",
    "get_requires_for_build_sdist",
    "get_requires_for_build_wheel",
    "prepare_metadata_for_build_editable",
    "prepare_metadata_for_build_wheel",
]

PREFIX = "image-"
_TRUE = ("1", "true", "yes", "on")


def image_settings(config_settings: dict[str, Any] | None) -> dict[str, str] | None:
    """The ``[tool.buildpacks]`` overrides if an image was asked for, else None."""
    settings = config_settings or {}
    if str(settings.get("image", "")).lower() not in _TRUE:
        return None
    return {
        key[len(PREFIX) :]: str(value) for key, value in settings.items() if key.startswith(PREFIX)
    }


def project_root(wheel_directory: Path) -> Path:
    """The project's own directory. Frontends build the wheel from an unpacked sdist in a
    temporary directory, while ``wheel_directory`` is the project's ``dist/``: files an
    sdist may leave out (lock files, ``.python-version``, ``Procfile``) are read from there."""
    candidate = wheel_directory.resolve().parent
    return candidate if (candidate / "pyproject.toml").is_file() else Path.cwd()


def build_wheel(
    wheel_directory: str,
    config_settings: dict[str, Any] | None = None,
    metadata_directory: str | None = None,
) -> str:
    overrides = image_settings(config_settings)
    if overrides is None:
        return _setuptools.build_wheel(wheel_directory, config_settings, metadata_directory)
    import tempfile

    from buildpacks.errors import report
    from buildpacks.frontend import build_unless_up_to_date
    from buildpacks.lifecycle import analyze
    from buildpacks.project import project_from_wheel
    from buildpacks.wheels import reproducible_env

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    out = Path(wheel_directory)
    name: str | None = None
    try:
        # Metadata, configuration and run image before the wheel: bad input fails first.
        with tempfile.TemporaryDirectory(prefix="buildpacks-metadata-") as tmp:
            dist_info = _setuptools.prepare_metadata_for_build_wheel(tmp, config_settings)
            project = project_from_wheel(project_root(out), Path(tmp) / dist_info)
        analysis = analyze.prepare(project, out.resolve(), log, overrides=overrides)
        with reproducible_env():
            name = _setuptools.build_wheel(wheel_directory, config_settings, metadata_directory)
        build_unless_up_to_date(
            analysis.config,
            out / name,
            log,
            route="setuptools",
            code=[Path(__file__).parent],
            run_images=analysis.run_images,
        )
    except (Exception, KeyboardInterrupt) as e:
        if name is not None:  # the hook fails: no wheel of it is left in dist/ either
            (out / name).unlink(missing_ok=True)
        raise SystemExit(report(e, log, os.environ)) from None
    return name
