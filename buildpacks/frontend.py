"""Building any project from the command line or a PEP 517 backend: metadata first (static
when ``pyproject.toml`` has it, so bad input fails before anything is built), then the wheel
through the project's own build backend (``buildpacks.wheels``: in this process when it can
be, else in a cached build environment), then the lifecycle, skipped when the up-to-date
check proves it would give the image already built. An application with no
``pyproject.toml`` is built from its source tree.

The up-to-date check of a hatchling project whose wheel is built in this process runs
before anything else, as ``hatch build -t image``'s does, on the same inputs (the files
hatchling's wheel builder selects, the metadata it writes): a no-op builds no wheel and
imports no lifecycle, and a build whose inputs changed only in the content of files
hatchling copies as they are patches the last wheel (``buildpacks.wheelpatch``). Other
backends are unknown here, so their check keys on the content of the wheel they built. This
module imports the lifecycle only when it builds."""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from buildpacks import config as build_config
from buildpacks import uptodate, wheelpatch, wheels
from buildpacks.errors import BuildError
from buildpacks.oci.model import Platform
from buildpacks.project import Project, read_pyproject

if TYPE_CHECKING:
    from buildpacks.lifecycle import BuildResult, analyze
    from buildpacks.oci.model import Image

HATCHLING = "hatchling.build"
ROUTE = "cli"  # the up-to-date record of ``buildpacks build`` (and ``watch``)


@dataclass(frozen=True)
class Check:
    """The early up-to-date check: where the record is, the fingerprint taken (None when
    the build cannot be checked early), the record when it proves the build up to date, and
    the platforms the image was built for."""

    record: Path
    current: uptodate.Fingerprint | None
    found: uptodate.Record | None
    platforms: tuple[Platform, ...]


def check_early(root: Path, output_dir: Path, overrides: Mapping[str, Any]) -> Check | None:
    """The up-to-date check of a hatchling project whose wheel this process can build,
    before anything is built: the inputs ``hatch build -t image`` checks (the files
    hatchling's wheel builder selects, the metadata it writes, the project's root files,
    git state, environment, installed packages, this code), with the command line's
    settings. None for a project this check does not cover (another backend, one not
    installed here, ``creation-time = now``, ``clear-cache``), or a configuration that the
    full build will report.

    Whether the backend is installed is asked only when no record matches, nor a wheel
    kept by a build this check covered with the same shape of fingerprint (a warm edit):
    either was written by such a build, and the shape holds what that answer depends on
    (``pyproject.toml``, the installed packages, the interpreter), so neither a no-op nor a
    warm edit imports ``packaging`` or ``importlib.metadata`` for it."""
    try:
        system = wheels.build_system(root, check_requires=False)
        if system.backend != HATCHLING or system.backend_path:
            return None
        tool = read_pyproject(root).get("tool", {}).get("buildpacks", {})
        values, origins = build_config.gather(tool, os.environ, overrides)
        if build_config.setting(values, "clear-cache"):
            return None  # a full build is asked for
        if str(values.get("creation-time", "")).strip() == "now":
            return None  # a new image every time
        platforms = build_config.resolve_platforms(values, origins)
        cache = build_config.resolve_cache_dir(values)
    except Exception:  # any failure here only means: no early check; the build reports it
        return None
    record = uptodate.record_file(cache, root, output_dir, ROUTE)

    def take() -> uptodate.Fingerprint:
        import hatch_buildpacks
        from hatch_buildpacks.builder import ImageBuilder

        inputs = ImageBuilder(str(root)).wheel_inputs()
        values = {
            **inputs.values,
            "route": "buildpacks build, hatchling in this process",
            "output": str(output_dir),
            "overrides": dict(overrides),
        }
        return uptodate.fingerprint(
            root,
            os.environ,
            uptodate.Inputs(inputs.files, values, inputs.verbatim),
            code=[Path(hatch_buildpacks.__file__).parent],
        )

    current, found = uptodate.check(record, take)
    if found is None and not (current and current.shape == wheelpatch.kept_shape(record)):
        try:
            if not wheels.satisfied(system.requires):  # nor is an invalid requirement
                return None
        except Exception:  # as above: the full build reports it
            return None
    return Check(record, current, found, platforms)


def known_project(root: Path) -> Project | None:
    """What can be known about the project without building it (None: ask its backend)."""
    from buildpacks.project import source_project, static_project

    if not (root / "pyproject.toml").exists() and not (root / "setup.py").exists():
        return source_project(root)
    read_pyproject(root)  # a malformed pyproject.toml is reported here, in one line
    return static_project(root)


def analyze_project(
    root: Path,
    output_dir: Path,
    overrides: Mapping[str, Any],
    work: Path,
    log: Callable[[str], None],
    wheel_builder: wheels.WheelBuilder | None = None,
    wheel: Path | None = None,
) -> tuple[analyze.Analysis, Path | None]:
    """The configuration completed by the run image, and the wheel (None for a source
    application): ``wheel`` when given, else built by ``wheel_builder`` (a new one by
    default). The run image is read
    before the wheel is built, so a base that does not fit fails first; only when nothing
    but the wheel can say which Python the project needs (no static metadata, no setting,
    no ``.python-version``) is the wheel built first, rather than pull a base chosen by a
    guess."""
    from buildpacks.lifecycle import analyze
    from buildpacks.project import project_from_wheel, provisional_project

    project = known_project(root)
    cache = None
    if project is None:
        project = provisional_project(root)
        config = build_config.resolve(project, output_dir, overrides=overrides)
        cache = config.cache_dir
        if config.origins["python-version"] == "default":
            project = None
    analysis = None
    if project is not None:
        analysis = analyze.prepare(project, output_dir, log, overrides)
        cache = analysis.config.cache_dir
        if project.version == "latest" and not (root / "pyproject.toml").exists():
            return analysis, None
    assert cache is not None  # one of the two configurations above was resolved
    python = analysis.config.python_version if analysis else None
    if wheel is None:
        wheel = (wheel_builder or wheels.WheelBuilder()).build(root, work, log, python, cache)
    built = project_from_wheel(root, wheel)
    if analysis is None:
        return analyze.prepare(built, output_dir, log, overrides), wheel
    return analyze.reanalyze(analysis, built, log, overrides), wheel


def resolve_project(
    root: Path,
    output_dir: Path,
    overrides: Mapping[str, Any],
    work: Path,
    log: Callable[[str], None],
) -> tuple[build_config.BuildConfig, Path | None]:
    """The validated configuration and the wheel (None for a source application)."""
    analysis, wheel = analyze_project(root, output_dir, overrides, work, log)
    return analysis.config, wheel


def build_project(
    root: Path,
    output_dir: Path,
    overrides: Mapping[str, Any],
    log: Callable[[str], None],
    wheel_builder: wheels.WheelBuilder | None = None,
) -> BuildResult:
    """Build the image of the project at ``root`` into ``output_dir``, unless it is up to
    date. ``wheel_builder``: one kept across builds (a watch loop), else a new one."""
    from buildpacks.lifecycle import BuildResult

    if not root.is_dir():
        raise BuildError(f"{root}: not a directory")
    early = check_early(root, output_dir, overrides)
    if early is not None and early.found is not None:
        for line in uptodate.report(early.found):
            log(line)
        found = early.found
        return BuildResult(found.image, found.digest, Path(found.archive), early.platforms)
    return build_checked(root, output_dir, overrides, log, early, wheel_builder)


def build_checked(
    root: Path,
    output_dir: Path,
    overrides: Mapping[str, Any],
    log: Callable[[str], None],
    early: Check | None,
    wheel_builder: wheels.WheelBuilder | None = None,
) -> BuildResult:
    """``build_project`` once ``check_early`` has answered ``early`` (not up to date, or
    not covered): the wheel, then the image, unless the check of the wheel's content finds
    it up to date."""
    from buildpacks.lifecycle import build_image

    if not root.is_dir():
        raise BuildError(f"{root}: not a directory")
    builder = wheel_builder or wheels.WheelBuilder()
    with tempfile.TemporaryDirectory(prefix="buildpacks-wheel-") as tmp:
        # A wheel kept by the last build this check covered, with the same shape of
        # inputs, patched with the files changed since (hatchling's wheel, not imported).
        patched = None
        if early is not None and early.current is not None:
            patched = wheelpatch.patch(early.record, early.current, Path(tmp), log)
        analysis, wheel = analyze_project(
            root, output_dir, overrides, Path(tmp), log, builder, patched[0] if patched else None
        )
        config = analysis.config
        # The early fingerprint stands for the wheel only when this process built it with
        # hatchling (or patched one it built), as that check assumes; any other wheel is
        # checked by its content.
        if early is None or early.current is None or not (patched or builder.in_process):
            return build_unless_up_to_date(
                config, wheel, log, route=ROUTE, run_images=analysis.run_images
            )
        result = build_image(config, wheel, log, analysis.run_images)
        if wheel is not None:
            wheelpatch.keep(early.record, early.current, wheel)
    uptodate.remember(early.record, early.current, config, result.digest, result.archive)
    return result


def build_unless_up_to_date(
    config: build_config.BuildConfig,
    wheel: Path | None,
    log: Callable[[str], None],
    *,
    route: str,
    env: Mapping[str, str] = os.environ,
    code: Iterable[Path] = (),
    run_images: tuple[Image, ...] | None = None,
) -> BuildResult:
    """``build_image``, skipped when the last build of the project into the same directory
    had the same inputs. The project's backend is not known here, so its wheel, already
    built, stands for everything the backend read: its content is part of the inputs (for
    an application without a wheel, every file its image copies is), with the resolved
    configuration (command-line flags and ``-C`` settings included). ``route``: whose
    record it is (``uptodate.record_file``); ``code``: the adapter running the build, beside
    the core; ``run_images``: the bases ``analyze.prepare`` opened."""
    from buildpacks.builtin.application import source_files, wheel_content_digest
    from buildpacks.lifecycle import BuildResult, build_image

    root = config.project.root
    record = uptodate.record_file(config.cache_dir, root, config.output_dir, route)

    def take() -> uptodate.Fingerprint:
        settings = dataclasses.asdict(dataclasses.replace(config, origins={}))
        if wheel is None:
            inputs = uptodate.Inputs(
                tuple(root / name for name in source_files(root)), {"config": settings}
            )
        else:
            inputs = uptodate.Inputs(
                values={"config": settings, "wheel": wheel_content_digest(wheel)}
            )
        return uptodate.fingerprint(root, env, inputs, code=code)

    current, found = uptodate.check(record, take)
    if found is not None and not config.clear_cache:  # clear-cache asks for a full build
        for line in uptodate.report(found):
            log(line)
        return BuildResult(found.image, found.digest, Path(found.archive), config.platforms)
    result = build_image(config, wheel, log, run_images)
    uptodate.remember(record, current, config, result.digest, result.archive)
    return result


def describe(config: build_config.BuildConfig) -> list[str]:
    """The resolved configuration, one ``key = value  (origin)`` line per key."""
    values = {
        "image": config.image,
        "base-image": config.base_image,
        "python-version": config.python_version,
        "default-process": config.default_process,
        "platforms": [str(p) for p in config.platforms],
        "publish": config.publish,
        "tags": list(config.tags),
        "pull-policy": config.pull_policy,
        "insecure-registries": list(config.insecure_registries),
        "registry-ca": config.registry_ca,
        "processes": config.processes,
        "env": config.env,
        "extras": list(config.extras),
        "dependency-groups": list(config.dependency_groups),
        "index-url": config.index_url,
        "extra-index-urls": list(config.extra_index_urls),
        "daemon": config.daemon,
        "cache-image": config.cache_image,
        "clear-cache": config.clear_cache,
        "creation-time": config.creation_time,
        "layer-compression": config.layer_compression,
        "cache-dir": str(config.cache_dir),
        "system-packages": list(config.system_packages),
        "debian-mirror": config.debian_mirror,
        "debian-keyring": config.debian_keyring,
    }
    from buildpacks.oci.auth import redact

    missing = {o.key for o in build_config.OPTIONS} - set(values) - set(build_config.NARROW_ALIASES)
    assert not missing, missing  # every option is shown
    width = max(map(len, values))
    return [
        redact(f"{key:<{width}} = {value!r}  ({config.origins.get(key, 'default')})")
        for key, value in values.items()
    ] + [f"warning: {warning}" for warning in config.warnings]
