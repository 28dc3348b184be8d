"""Building any project from the command line or a PEP 517 backend: metadata first (static
when ``pyproject.toml`` has it, so bad input fails before anything is built), then the wheel
through the project's own build backend, then the lifecycle, skipped when the up-to-date
check proves it would give the image already built. An application with no
``pyproject.toml`` is built from its source tree."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from uv import find_uv_bin

from buildpacks import config as build_config
from buildpacks import uptodate
from buildpacks.builtin.application import source_files, wheel_content_digest
from buildpacks.errors import BuildError
from buildpacks.lifecycle import BuildResult, analyze, build_image
from buildpacks.oci.auth import redact
from buildpacks.oci.model import Image
from buildpacks.project import (
    Project,
    project_from_wheel,
    provisional_project,
    read_pyproject,
    source_project,
    static_project,
)


def wheel_env() -> dict[str, str]:
    """The environment a wheel is built in: ``SOURCE_DATE_EPOCH`` set (to the layers' date
    unless the user set it), so backends that stamp files with the time (setuptools) give
    the same wheel twice."""
    return {**os.environ, "SOURCE_DATE_EPOCH": str(build_config.source_date_epoch())}


@contextmanager
def reproducible_wheel_env() -> Iterator[None]:
    """``wheel_env`` for a backend that builds in this process (setuptools)."""
    saved = os.environ.get("SOURCE_DATE_EPOCH")
    os.environ["SOURCE_DATE_EPOCH"] = wheel_env()["SOURCE_DATE_EPOCH"]
    try:
        yield
    finally:
        if saved is None:
            del os.environ["SOURCE_DATE_EPOCH"]
        else:
            os.environ["SOURCE_DATE_EPOCH"] = saved


def host_python(minor: str) -> str | None:
    """An interpreter of Python ``minor`` on this machine, if uv finds one (none is
    downloaded: the build must not reach for the network for it)."""
    result = subprocess.run(
        [find_uv_bin(), "python", "find", "--no-python-downloads", "--no-project", minor],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    found = result.stdout.strip()
    return found if result.returncode == 0 and found else None


def build_wheel(
    root: Path, out_dir: Path, log: Callable[[str], None], python: str | None = None
) -> Path:
    """Build the project's wheel with its own PEP 517 backend (through ``uv build``), with
    Python ``python`` (X.Y, the image's) when this machine has it; when it fails, the
    backend's whole output goes to ``log`` before the one-line error."""
    interpreter = host_python(python) if python else None
    # Not --quiet: that silences the backend's own output, which is the error a user needs.
    result = subprocess.run(
        [find_uv_bin(), "build", "--wheel", "--out-dir", str(out_dir),
         *(["--python", interpreter] if interpreter else []), str(root)],
        capture_output=True, text=True, check=False, env=wheel_env(),
    )  # fmt: skip
    wheels = sorted(out_dir.glob("*.whl"))
    if result.returncode != 0 or not wheels:
        lines = backend_output(result.stdout + result.stderr)
        for line in lines:
            log(f"  | {line}")
        raise BuildError(
            f"building the wheel of {root} with its build backend failed: "
            f"{backend_error(lines)} (the backend's output is above)"
        )
    return wheels[0]


# (project root, output directory, log, the image's Python X.Y or None) -> the wheel
WheelBuilder = Callable[[Path, Path, Callable[[str], None], "str | None"], Path]


def backend_output(output: str) -> list[str]:
    """What ``uv build`` printed, without its progress lines and with URL credentials hidden."""
    return [
        line
        for line in redact(output).rstrip().splitlines()
        if line.strip() and not line.startswith("Building ")
    ]


def backend_error(lines: list[str]) -> str:
    """The backend's own last word: the line before uv's ``error:`` summary (an exception's
    message, a compiler's last error), else uv's summary itself."""
    summary = next((i for i, line in enumerate(lines) if line.startswith("error:")), len(lines))
    if summary > 0:
        return lines[summary - 1].strip()
    return lines[summary].removeprefix("error:").strip() if lines else "no output"


def known_project(root: Path) -> Project | None:
    """What can be known about the project without building it (None: ask its backend)."""
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
    wheel_builder: WheelBuilder = build_wheel,
) -> tuple[analyze.Analysis, Path | None]:
    """The configuration completed by the run image, and the wheel (None for a source
    application). The run image is read before the wheel is built, so a base that does not
    fit fails first; only when nothing but the wheel can say which Python the project needs
    (no static metadata, no setting, no ``.python-version``) is the wheel built first, rather
    than pull a base chosen by a guess."""
    project = known_project(root)
    if project is None:
        project = provisional_project(root)
        config = build_config.resolve(project, output_dir, overrides=overrides)
        if config.origins["python-version"] == "default":
            project = None
    analysis = None
    if project is not None:
        analysis = analyze.prepare(project, output_dir, log, overrides)
        if project.version == "latest" and not (root / "pyproject.toml").exists():
            return analysis, None
    wheel = wheel_builder(root, work, log, analysis.config.python_version if analysis else None)
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
    wheel_builder: WheelBuilder = build_wheel,
) -> tuple[build_config.BuildConfig, Path | None]:
    """The validated configuration and the wheel (None for a source application), built by
    ``wheel_builder``."""
    analysis, wheel = analyze_project(root, output_dir, overrides, work, log, wheel_builder)
    return analysis.config, wheel


def build_project(
    root: Path,
    output_dir: Path,
    overrides: Mapping[str, Any],
    log: Callable[[str], None],
    wheel_builder: WheelBuilder = build_wheel,
) -> BuildResult:
    """Build the image of the project at ``root`` into ``output_dir``, unless it is up to
    date."""
    if not root.is_dir():
        raise BuildError(f"{root}: not a directory")
    with tempfile.TemporaryDirectory(prefix="buildpacks-wheel-") as tmp:
        analysis, wheel = analyze_project(
            root, output_dir, overrides, Path(tmp), log, wheel_builder
        )
        return build_unless_up_to_date(analysis.config, wheel, log, run_images=analysis.run_images)


def build_unless_up_to_date(
    config: build_config.BuildConfig,
    wheel: Path | None,
    log: Callable[[str], None],
    *,
    env: Mapping[str, str] = os.environ,
    code: Iterable[Path] = (),
    run_images: tuple[Image, ...] | None = None,
) -> BuildResult:
    """``build_image``, skipped when the last build of the project into the same directory
    had the same inputs. The project's backend is not known here, so its wheel, already
    built, stands for everything the backend read: its content is part of the inputs (for
    an application without a wheel, every file its image copies is), with the resolved
    configuration (command-line flags and ``-C`` settings included). ``code``: the adapter
    running the build, beside the core; ``run_images``: the bases ``analyze.prepare`` opened."""
    root = config.project.root
    record = uptodate.record_file(config.cache_dir, root, config.output_dir)

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
    missing = {o.key for o in build_config.OPTIONS} - set(values) - set(build_config.NARROW_ALIASES)
    assert not missing, missing  # every option is shown
    width = max(map(len, values))
    return [
        redact(f"{key:<{width}} = {value!r}  ({config.origins.get(key, 'default')})")
        for key, value in values.items()
    ] + [f"warning: {warning}" for warning in config.warnings]
