"""The application buildpack: the project's own wheel, installed into a site directory of
its own layer, so a source edit changes this layer and no other. Its console scripts get
shebangs that name the venv's interpreter in the image; no bytecode is compiled."""

from __future__ import annotations

import fnmatch
import os
import shutil
from pathlib import Path
from typing import Any

from buildpacks.builtin import (
    IMAGE_USER,
    WORKSPACE,
    BuildContext,
    Runtime,
    cache_key,
    layer_path,
    reuse_or_build,
)
from buildpacks.config import BuildConfig
from buildpacks.errors import BuildError
from buildpacks.oci.blobs import file_digest
from buildpacks.oci.layer import TreeMapping, write_layer
from buildpacks.oci.model import Layer

ID = "python-buildpacks/application"
VERSION = "0.1.0"
APP = layer_path(ID, "app")
BIN = f"{APP}/bin"
# Where apps write at run time, owned by the image user: the app directory, and the
# installation prefix's var/ (Flask's instance folder is <prefix>/var/<name>-instance).
VAR = f"{APP}/var"
# What the layer's ownership depends on: part of its cache key, so a change of owner or of
# writable paths never reuses a layer cached before it.
OWNERSHIP = {"owner": IMAGE_USER, "writable": [WORKSPACE, VAR]}


def site_dir(runtime: Runtime) -> str:
    """The application's site directory in the image (named like a venv's, for tools)."""
    return f"{APP}/lib/python{runtime.minor}/site-packages"


def install_wheel(wheel: Path, stage: Path, runtime: Runtime, interpreter: str) -> None:
    """Install ``wheel`` into ``stage``, laid out as it will be at ``APP`` in the image."""
    from installer import install  # only when the layer is rebuilt: keeps warm starts short
    from installer.destinations import SchemeDictionaryDestination
    from installer.sources import WheelFile

    site = site_dir(runtime).removeprefix(APP + "/")
    scheme = {
        "purelib": str(stage / site),
        "platlib": str(stage / site),
        "scripts": str(stage / "bin"),
        "headers": str(stage / "include"),
        "data": str(stage),
    }
    destination = SchemeDictionaryDestination(
        scheme, interpreter=interpreter, script_kind="posix", bytecode_optimization_levels=()
    )
    try:
        with WheelFile.open(wheel) as source:
            install(source, destination, {"INSTALLER": b"python-buildpacks\n"})
    except Exception as e:  # installer raises plain exceptions for broken wheels
        raise BuildError(f"{wheel.name}: cannot be installed ({e})") from None


class ApplicationBuildpack:
    id = ID
    version = VERSION

    def detect(self, config: BuildConfig) -> bool:
        return True

    def build(self, ctx: BuildContext) -> None:
        if ctx.wheel is None:
            self.build_source(ctx)
        else:
            self.build_wheel(ctx, ctx.wheel)

    def build_wheel(self, ctx: BuildContext, wheel: Path) -> None:
        runtime = ctx.need_runtime()
        venv_python = ctx.env.get("VIRTUAL_ENV", "") + "/bin/python"
        key = cache_key(
            {
                "buildpack": f"{ID}@{VERSION}",
                "wheel": file_digest(wheel),
                "python": runtime.minor,
                "interpreter": venv_python,
                **OWNERSHIP,
            }
        )

        def build_app() -> tuple[Layer, dict[str, Any]]:
            stage = ctx.work_dir / "app"
            install_wheel(wheel, stage, runtime, venv_python)
            writable = ctx.work_dir / "writable"
            writable.mkdir()
            mappings = [
                TreeMapping(stage, APP),
                TreeMapping(writable, VAR, IMAGE_USER),
                TreeMapping(writable, WORKSPACE, IMAGE_USER),
            ]
            return write_layer(ctx.store, mappings), {}

        result = reuse_or_build(ctx, ID, "app", APP, key, build_app)
        ctx.log(
            f"Application {wheel.name}: layer {result.layer.digest[:19]}"
            + (" (cached)" if result.cached else "")
        )
        ctx.path_entries.append(BIN)

    def build_source(self, ctx: BuildContext) -> None:
        """An application without a wheel: its source tree, minus VCS data, virtual
        environments, caches and secrets, copied to /workspace."""
        root = ctx.config.project.root
        files = [f for f in source_files(root) if ctx.config.descriptor.selects(f)]
        key = cache_key(
            {
                "buildpack": f"{ID}@{VERSION}",
                "source": [[f, file_digest(root / f), os.access(root / f, os.X_OK)] for f in files],
                **OWNERSHIP,
            }
        )

        def build_app() -> tuple[Layer, dict[str, Any]]:
            stage = ctx.work_dir / "workspace"
            for name in files:
                (stage / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(root / name, stage / name)
            stage.mkdir(exist_ok=True)
            return write_layer(ctx.store, [TreeMapping(stage, WORKSPACE, IMAGE_USER)]), {}

        result = reuse_or_build(ctx, ID, "app", WORKSPACE, key, build_app)
        ctx.log(
            f"Application source: {len(files)} file(s) in layer {result.layer.digest[:19]}"
            + (" (cached)" if result.cached else "")
        )


# Never copied into an image: VCS data, local environments, build output, caches, secrets.
EXCLUDED_DIRS = {
    ".git",
    ".hg",
    ".svn",
    ".venv",
    "venv",
    "env",
    "__pycache__",
    "dist",
    "build",
    ".tox",
    ".nox",
    ".pytest_cache",
    ".mypy_cache",
    ".ruff_cache",
    ".idea",
    ".vscode",
    "node_modules",
    ".ssh",
    ".docker",
}
EXCLUDED_FILES = (
    ".env",
    ".env.*",
    "*.pyc",
    "*.pem",
    "*.key",
    "id_rsa*",
    "id_ed25519*",
    ".netrc",
    ".pypirc",
    ".npmrc",
    "*.tar",
)


def source_files(root: Path) -> list[str]:
    """The files of an application's source tree that belong in its image, sorted."""
    found = []
    for directory, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in EXCLUDED_DIRS)
        for name in names:
            path = Path(directory) / name
            if (
                any(fnmatch.fnmatch(name, pattern) for pattern in EXCLUDED_FILES)
                or not path.is_file()
            ):
                continue
            found.append(path.relative_to(root).as_posix())
    return sorted(found)


BUILDPACK = ApplicationBuildpack()
