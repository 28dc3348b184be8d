"""The ``image`` target: builds the project's wheel in-process with hatchling's wheel
builder, then hands project, configuration and wheel to the core lifecycle.

A build whose inputs are all unchanged since the last one is skipped before anything heavy is
imported (``buildpacks.uptodate``); the core is imported only when there is work to do.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Generator
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hatchling.builders.config import env_var_enabled
from hatchling.builders.constants import BuildEnvVars
from hatchling.builders.plugin.interface import BuilderInterface
from hatchling.builders.wheel import WheelBuilder

from buildpacks import uptodate
from buildpacks.cachedir import cache_dir

if TYPE_CHECKING:
    from buildpacks.config import BuildConfig
    from buildpacks.project import Project

# Version sources that read only files of the project, which the up-to-date check watches.
FILE_VERSION_SOURCES = ("regex", "code")
HATCH_FLAGS = ("hooks_only", "clean", "clean_hooks_after", "clean_only")
HATCH_FLAG_VARS = (BuildEnvVars.HOOKS_ONLY, BuildEnvVars.CLEAN, BuildEnvVars.CLEAN_HOOKS_AFTER)


class ImageBuilder(BuilderInterface):
    """``[tool.hatch.build.targets.image]``: an OCI image archive in the output directory."""

    PLUGIN_NAME = "image"
    _fingerprint: uptodate.Fingerprint | None = None

    def get_version_api(self) -> dict[str, Callable[..., str]]:
        return {"standard": self.build_standard}

    def get_default_versions(self) -> list[str]:
        return ["standard"]

    def clean(self, directory: str, versions: list[str]) -> None:
        from buildpacks.oci.archive import archive_digest

        # Only image archives (an OCI index inside), never other tar files a user keeps there.
        for archive in Path(directory).glob("*.tar"):
            if archive_digest(archive) is not None:
                archive.with_name(archive.name + ".digest").unlink(missing_ok=True)
                archive.unlink()

    def build(self, *, directory: str | None = None, **options: Any) -> Generator[str, None, None]:
        """hatchling's build; any failure, hatchling's own (bad metadata) included, ends it
        with one ``error:`` line and a non-zero exit (130 for Ctrl-C)."""
        try:
            yield from self._build_or_skip(directory=directory, **options)
        except (Exception, KeyboardInterrupt) as e:
            from buildpacks.errors import BuildError, report

            error: BaseException = e
            if isinstance(e, ValueError | TypeError) and _from_project_metadata(e):
                error = BuildError(f"pyproject.toml: {e}")  # hatchling's words for bad metadata
            raise SystemExit(report(error, self.app.display_error, os.environ)) from None

    def _build_or_skip(
        self, *, directory: str | None = None, **options: Any
    ) -> Generator[str, None, None]:
        """hatchling's build, skipped when the image is up to date."""
        self._fingerprint = None
        if not any(options.get(f) for f in HATCH_FLAGS):
            out = Path(self._directory(directory))
            out.mkdir(parents=True, exist_ok=True)  # before the fingerprint: it changes the root
            self._fingerprint = self._take_fingerprint(out)
            record = None
            if self._fingerprint is not None:
                record = uptodate.up_to_date(self._record_file(out), self._fingerprint)
            if record is not None:
                self.app.display_info(
                    f"Image {record.image} is up to date: nothing it is built from has changed"
                )
                self.app.display_info(f"Digest: {record.digest}")
                self.app.display_info(f"Archive: {record.archive}")
                yield record.archive
                return
        yield from super().build(directory=directory, **options)

    def _take_fingerprint(self, out: Path) -> uptodate.Fingerprint | None:
        """The fingerprint of this build's inputs; None when they cannot all be watched."""
        try:
            if not self._watchable():
                return None
            return uptodate.fingerprint(
                Path(self.root),
                out,
                os.environ,
                extra_paths=self._outside_paths(),
                code=[Path(__file__).parent],
            )
        # A directory it cannot read (OSError), or a bad Hatch configuration (TypeError,
        # ValueError), which the full build then reports.
        except (OSError, TypeError, ValueError):
            return None

    def build_standard(self, directory: str, **build_data: Any) -> str:
        return str(self._build(Path(directory)))

    def project(self) -> Project:
        """The project as hatchling's metadata sees it (dynamic fields resolved)."""
        from buildpacks.project import load_project

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
        from buildpacks import config as build_config
        from buildpacks.lifecycle import build_image
        from buildpacks.lifecycle.export import archive_path

        # Configuration is resolved before the wheel is built, so bad input fails first.
        config = build_config.resolve(self.project(), directory.resolve())
        with tempfile.TemporaryDirectory(prefix="buildpacks-wheel-") as tmp:
            wheel = Path(next(self._wheel_builder.build(directory=tmp, versions=["standard"])))
            self.app.display_info(f"Building image {config.image} -> {archive_path(config)}")
            result = build_image(config, wheel, log=self.app.display_info)
        self._remember(config, directory, result.digest, result.archive)
        return result.archive

    def _remember(self, config: BuildConfig, directory: Path, digest: str, archive: Path) -> None:
        """Record the build for the up-to-date check, when its output is all local."""
        from buildpacks.oci.blobs import BlobStore
        from buildpacks.oci.source import local_inputs

        record = self._record_file(directory)
        base = local_inputs(
            config.base_image,
            config.platform,
            BlobStore(config.cache_dir / "blobs"),
            config.pull_policy,
        )
        remote = config.publish or config.daemon or config.cache_image
        if self._fingerprint is None or base is None or remote:
            uptodate.forget(record)
        else:
            uptodate.save(record, self._fingerprint, base, config.image, digest, archive)

    def _watchable(self) -> bool:
        """Whether every input of the build is a file the up-to-date check can watch: no
        build or metadata hooks (they run arbitrary code), no version from outside files."""
        if any(env_var_enabled(name) for name in HATCH_FLAG_VARS):
            return False
        hatch = self.metadata.hatch
        if hatch.metadata.hook_config or self.config.hook_config:
            return False
        if self._wheel_builder.config.hook_config:
            return False
        dynamic = set(self.metadata.dynamic)
        if dynamic - {"version"}:
            return False
        return "version" not in dynamic or hatch.version.source_name in FILE_VERSION_SOURCES

    def _outside_paths(self) -> list[Path]:
        """Paths outside the project the wheel takes in (forced, shared data, readme)."""
        config = self._wheel_builder.config
        root = Path(self.root).resolve()
        sources = [
            *config.get_force_include(),
            *config.shared_data,
            *config.shared_scripts,
            *config.extra_metadata,
        ]
        readme = self.metadata.core.readme_path
        if readme:
            sources.append(readme)
        paths = [(root / source).resolve() for source in sources]
        return [p for p in paths if not p.is_relative_to(root)]

    @cached_property
    def _wheel_builder(self) -> WheelBuilder:
        """hatchling's wheel builder for this project, sharing its metadata."""
        return WheelBuilder(
            self.root, plugin_manager=self.plugin_manager, metadata=self.metadata, app=self.app
        )

    def _directory(self, directory: str | None) -> str:
        """The output directory, found as hatchling's own ``build`` finds it."""
        if directory is not None:
            return directory
        if BuildEnvVars.LOCATION in os.environ:
            return self.config.normalize_build_directory(os.environ[BuildEnvVars.LOCATION])
        return self.config.directory

    def _record_file(self, directory: Path) -> Path:
        tool = self.metadata.config.get("tool", {}).get("buildpacks", {})
        configured = os.environ.get("BP_CACHE_DIR") or tool.get("cache-dir")
        if not isinstance(configured, str | None):
            configured = None  # the full build reports the wrong type
        return uptodate.record_file(cache_dir(configured), Path(self.root), directory)


def _from_project_metadata(error: BaseException) -> bool:
    """Whether hatchling raised ``error`` reading the project's metadata or version."""
    import traceback

    parts = (f"hatchling{os.sep}metadata{os.sep}", f"hatchling{os.sep}version{os.sep}")
    frames = traceback.extract_tb(error.__traceback__)
    return bool(frames) and any(part in frames[-1].filename for part in parts)
