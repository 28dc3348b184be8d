"""The ``image`` target: builds the project's wheel in-process with hatchling's wheel
builder, then hands project, configuration and wheel to the core lifecycle.

A build whose inputs are all unchanged since the last one is skipped before anything heavy is
imported (``buildpacks.uptodate``); the core is imported only when there is work to do.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Generator
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hatchling.builders.config import env_var_enabled
from hatchling.builders.constants import BuildEnvVars
from hatchling.builders.plugin.interface import BuilderInterface

from buildpacks import client

# Imported where used: a build sent to the build server needs none of them in this process.
if TYPE_CHECKING:
    from hatchling.builders.wheel import WheelBuilder

    from buildpacks import uptodate
    from buildpacks.project import Project

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
        with one ``error:`` line and a non-zero exit (130 for Ctrl-C). When this Python
        environment's build server is up, the build runs in its worker, warm (``build_here``:
        this same build, the error line and the exit status included), else here; a subclass
        (which the worker would not make) always builds here."""
        artifacts: list[str] = []
        status = None
        if type(self) is ImageBuilder:
            asked = json.dumps({"directory": directory, **options})
            status = client.run_on_server([asked], kind="hatch", results=artifacts)
        if status is not None:
            if status != 0:
                raise SystemExit(status)
            yield from artifacts
            return
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
        from buildpacks import uptodate

        self._fingerprint = None
        if not any(options.get(f) for f in HATCH_FLAGS):
            out = Path(self._directory(directory))
            self._fingerprint, record = uptodate.check(self._record_file(out), self._take)
            if record is not None:
                for line in uptodate.report(record):
                    self.app.display_info(line)
                yield record.archive
                return
        yield from super().build(directory=directory, **options)

    def _take(self) -> uptodate.Fingerprint:
        """The fingerprint of this build's inputs as hatchling's wheel builder sees them."""
        from buildpacks import uptodate

        return uptodate.fingerprint(
            Path(self.root), os.environ, self.wheel_inputs(), code=[Path(__file__).parent]
        )

    def wheel_inputs(self) -> uptodate.Inputs:
        """What hatchling's wheel builder reads and resolves (``_wheel_inputs``), also for
        ``buildpacks build`` when it builds a hatchling wheel in its own process. Raises
        ValueError for a build that cannot be checked: hatchling's flags, or build hooks
        (they run arbitrary code while the wheel is built)."""
        if any(env_var_enabled(name) for name in HATCH_FLAG_VARS):
            raise ValueError("a hatchling flag is set")
        if self.config.hook_config or self._wheel_builder.config.hook_config:
            raise ValueError("build hooks run")
        return self._wheel_inputs()

    def _wheel_inputs(self) -> uptodate.Inputs:
        """What hatchling's wheel builder reads and resolves: the files it selects and
        where each goes, the ``.gitignore`` it located (up to the repository's root), shared
        data and scripts, extra metadata, license and SBOM files, and the core metadata it
        writes (the version source run: a version read from outside the project, from the
        environment or from git is part of it)."""
        from buildpacks import uptodate

        # The build reads the version first (``project``); hatchling writes "Dynamic:
        # Version" into METADATA only when the metadata is constructed before that read, so
        # the check reads it first too, or it would change the wheel it describes.
        self.metadata.version  # noqa: B018
        wheel = self._wheel_builder
        config = wheel.config
        root = Path(self.root)
        included = list(wheel.recurse_included_files())
        selected = [
            *included,
            *wheel.recurse_explicit_files(config.shared_data),
            *wheel.recurse_explicit_files(config.shared_scripts),
            *wheel.recurse_explicit_files(config.extra_metadata),
        ]
        read = [
            *config.vcs_exclusion_files["git"],
            *config.vcs_exclusion_files["hg"],
            *(root / path for path in self.metadata.core.license_files),
            *(root / path for path in config.sbom_files),
        ]
        metadata = self._metadata_inputs()
        return uptodate.Inputs(
            files=tuple(Path(p) for p in [*(f.path for f in selected), *read]),
            values={
                "selected": [[f.path, f.distribution_path] for f in selected],
                "read": [str(p) for p in read],
                "metadata": metadata,
            },
            verbatim=self._verbatim(included, selected[len(included) :], read, metadata),
        )

    def _verbatim(
        self,
        included: list[Any],
        others: list[Any],
        read: list[Path],
        metadata: dict[str, str],
    ) -> dict[str, str]:
        """The files hatchling's wheel builder copies byte for byte into the wheel, each
        with its entry's name, dated by ``SOURCE_DATE_EPOCH`` only (a reproducible build):
        those whose content decides nothing else (not also shared, license, version or
        readme files). None when a metadata hook or the environment writes the metadata: a
        hook may read a selected file for fields beyond ``METADATA`` (entry points)."""
        if not self._wheel_builder.config.reproducible or "text" in metadata:
            return {}
        root = Path(self.root)
        version = self.metadata.hatch.config.get("version")
        version_path = version.get("path") if isinstance(version, dict) else None
        readme_path = self.metadata.core.readme_path
        elsewhere = {
            os.path.normpath(p)
            for p in [
                *(f.path for f in others),
                *read,
                *([root / version_path] if isinstance(version_path, str) else []),
                *([root / readme_path] if readme_path else []),
            ]
        }
        return {
            str(Path(f.path)): f.distribution_path.replace(os.sep, "/")
            for f in included
            if os.path.normpath(f.path) not in elsewhere
        }

    def _metadata_inputs(self) -> dict[str, str]:
        """The core metadata hatchling would write; or, when ``pyproject.toml`` (a watched
        file) decides all of it but the version, readme and license, those: writing it
        imports most of ``packaging``, which would triple the time of a no-op build."""
        core = self.metadata.core
        raw = self.metadata.core_raw_metadata
        optional = raw.get("optional-dependencies", {}).values()
        requirements = [*raw.get("dependencies", []), *(r for group in optional for r in group)]
        # Metadata hooks change any field; "{env:NAME}" in a requirement reads the environment.
        if self.metadata.hatch.metadata.hook_config or any("{" in r for r in requirements):
            return {"text": self._wheel_builder.config.core_metadata_constructor(self.metadata)}
        return {
            "version": self.metadata.version,
            "readme": core.readme,
            "license": core.license,
            "license-expression": core.license_expression,
        }

    def build_standard(self, directory: str, **build_data: Any) -> str:
        return str(self._build(Path(directory)))

    def project(self) -> Project:
        """The project as hatchling's metadata sees it (dynamic fields resolved), optional
        dependencies included (marked by their extra) so that ``extras`` can select them."""
        from buildpacks.config import check_misplaced
        from buildpacks.project import load_project, with_extra

        check_misplaced(self.target_config, "tool.hatch.build.targets.image")
        core = self.metadata.core
        optional = [
            with_extra(requirement, extra)
            for extra, requirements in core.optional_dependencies.items()
            for requirement in requirements
        ]
        return load_project(
            Path(self.root),
            name=core.name,
            version=self.metadata.version,
            requires_python=core.requires_python or None,
            summary=core.description or None,
            license=core.license_expression or core.license or None,
            urls=dict(core.urls),
            requires_dist=(*core.dependencies, *optional),
            scripts=dict(core.scripts),
        )

    def _build(self, directory: Path) -> Path:
        from buildpacks import uptodate, wheelpatch
        from buildpacks.cachedir import work_dir
        from buildpacks.lifecycle import analyze, build_image
        from buildpacks.lifecycle.export import archive_path

        # Configuration and run image come before the wheel, so bad input fails first.
        analysis = analyze.prepare(self.project(), directory.resolve(), self.app.display_info)
        config = analysis.config
        record = self._record_file(directory)
        # The wheel's directory goes to the cache's trash, freed by the next build in the
        # background: removed now, it would cost milliseconds on a file system mounted with
        # ``discard`` (8 ms of a warm edit here).
        with work_dir(config.cache_dir) as tmp:
            patched = None
            if self._fingerprint is not None and not config.clear_cache:
                patched = wheelpatch.patch(record, self._fingerprint, tmp, self.app.display_info)
            if patched is not None:
                wheel = patched[0]
            else:
                from buildpacks.wheels import temp_files_in  # not for a patched wheel

                with temp_files_in(tmp):  # hatchling's own temp file too, if interrupted
                    built = next(
                        self._wheel_builder.build(directory=str(tmp), versions=["standard"])
                    )
                wheel = Path(built)
            self.app.display_info(f"Building image {config.image} -> {archive_path(config)}")
            result = build_image(config, wheel, self.app.display_info, analysis.run_images)
            wheelpatch.keep(record, self._fingerprint, wheel)
        uptodate.remember(record, self._fingerprint, config, result.digest, result.archive)
        return result.archive

    @cached_property
    def _wheel_builder(self) -> WheelBuilder:
        """hatchling's wheel builder for this project, sharing its metadata."""
        from hatchling.builders.wheel import WheelBuilder

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
        from buildpacks import uptodate
        from buildpacks.cachedir import cache_dir

        tool = self.metadata.config.get("tool", {}).get("buildpacks", {})
        configured = os.environ.get("BP_CACHE_DIR") or tool.get("cache-dir")
        if not isinstance(configured, str | None):
            configured = None  # the full build reports the wrong type
        return uptodate.record_file(cache_dir(configured), Path(self.root), directory, "hatch")


def build_here(argv: list[str]) -> Generator[str, None, None]:
    """The build of the image target as hatchling's ``build`` command makes it (its
    application, plugin manager and metadata, in the working directory), with the options
    ``ImageBuilder.build`` sent: a build server's worker runs it for a Hatch build."""
    from hatchling.bridge.app import Application
    from hatchling.metadata.core import ProjectMetadata
    from hatchling.plugin.manager import PluginManager

    root = os.getcwd()
    plugins = PluginManager()
    app = Application().get_safe_application()
    metadata = ProjectMetadata(root, plugins)
    builder = ImageBuilder(root, plugin_manager=plugins, metadata=metadata, app=app)
    yield from builder.build(**json.loads(argv[0]))


def _from_project_metadata(error: BaseException) -> bool:
    """Whether hatchling raised ``error`` reading the project's metadata or version."""
    import traceback

    parts = (f"hatchling{os.sep}metadata{os.sep}", f"hatchling{os.sep}version{os.sep}")
    frames = traceback.extract_tb(error.__traceback__)
    return bool(frames) and any(part in frames[-1].filename for part in parts)
