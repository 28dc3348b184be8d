"""The ``image`` target: builds the project's wheel in-process with hatchling's wheel
builder, then hands project, configuration and wheel to the core lifecycle."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hatchling.builders.plugin.interface import BuilderInterface
from hatchling.builders.wheel import WheelBuilder

from buildpacks import config as build_config
from buildpacks.errors import BuildError
from buildpacks.lifecycle import build_image
from buildpacks.lifecycle.export import archive_path
from buildpacks.oci.archive import archive_digest
from buildpacks.project import Project, load_project


class ImageBuilder(BuilderInterface):
    """``[tool.hatch.build.targets.image]``: an OCI image archive in the output directory."""

    PLUGIN_NAME = "image"

    def get_version_api(self) -> dict[str, Callable[..., str]]:
        return {"standard": self.build_standard}

    def get_default_versions(self) -> list[str]:
        return ["standard"]

    def clean(self, directory: str, versions: list[str]) -> None:
        # Only image archives (an OCI index inside), never other tar files a user keeps there.
        for archive in Path(directory).glob("*.tar"):
            if archive_digest(archive) is not None:
                archive.with_name(archive.name + ".digest").unlink(missing_ok=True)
                archive.unlink()

    def build_standard(self, directory: str, **build_data: Any) -> str:
        try:
            return str(self._build(Path(directory)))
        except BuildError as e:
            self.app.abort(f"error: {e}")
            raise  # abort exits; this line only satisfies type checkers

    def project(self) -> Project:
        """The project as hatchling's metadata sees it (dynamic fields resolved)."""
        core = self.metadata.core
        return load_project(
            Path(self.root),
            name=core.name,
            version=self.metadata.version,
            requires_python=core.requires_python or None,
            summary=core.description or None,
            license=core.license_expression or core.license or None,
            urls=dict(core.urls),
            requires_dist=tuple(core.dependencies),
            scripts=dict(core.scripts),
        )

    def _build(self, directory: Path) -> Path:
        # Configuration is resolved before the wheel is built, so bad input fails first.
        config = build_config.resolve(self.project(), directory.resolve())
        with tempfile.TemporaryDirectory(prefix="buildpacks-wheel-") as tmp:
            wheel_builder = WheelBuilder(
                self.root, plugin_manager=self.plugin_manager, metadata=self.metadata, app=self.app
            )
            wheel = Path(next(wheel_builder.build(directory=tmp, versions=["standard"])))
            self.app.display_info(f"Building image {config.image} -> {archive_path(config)}")
            result = build_image(config, wheel, log=self.app.display_info)
        return result.archive
