"""The dependencies buildpack: a real virtual environment in its own layer, whose interpreter
is the run image's Python. Packages are installed by uv for the image's platform and Python
version (binary wheels only), without running the image; console-script shebangs and
``pyvenv.cfg`` point inside the image, and no bytecode is compiled on the host."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from uv import find_uv_bin

from buildpacks.builtin import (
    WORKSPACE,
    BuildContext,
    Runtime,
    application,
    cache_key,
    code_key,
    layer_path,
    reuse_or_build,
)
from buildpacks.config import BuildConfig
from buildpacks.errors import BuildError
from buildpacks.locks import Locked, Target, find_lock, read_lock, uv_version
from buildpacks.oci.layer import TreeMapping, write_layer
from buildpacks.oci.model import Layer
from buildpacks.sbom import Package, packages_in

ID = "python-buildpacks/dependencies"
VERSION = "0.1.0"
VENV = layer_path(ID, "venv")
GZIP_LEVEL = 1
# Environment variables that change what uv resolves; part of the cache key.
_INDEX_ENV = (
    "UV_EXCLUDE_NEWER",
    "UV_INDEX_URL",
    "UV_EXTRA_INDEX_URL",
    "UV_INDEX",
    "UV_FIND_LINKS",
    "PIP_INDEX_URL",
    "PIP_EXTRA_INDEX_URL",
)


def _no_wheel_message(output: str, runtime: Runtime) -> str | None:
    """uv's report of a package without a usable wheel, worded as the wheel-gap check words
    its own (which finds the pinned ones before uv runs; uv finds those it resolved)."""
    patterns = (
        r"Because all versions of (?P<name>[\w.\-]+) have no (?:usable )?wheels",
        r"Because (?:only )?(?P<name>[\w.\-]+)(?P<spec>[=<>!~]=?\S+)? has no (?:usable )?wheels",
        r"(?P<name>[\w.\-]+)(?P<spec>==\S+)? has no usable wheels",
    )
    for pattern in patterns:
        match = re.search(pattern, output)
        if match:
            from buildpacks.wheelgap import WHEELS_ONLY

            spec = match.groupdict().get("spec")
            versions = spec.removeprefix("==") if spec else "(any version)"
            return (
                f"no wheel for {runtime.wheel_platform} (CPython {runtime.version}): "
                f"{match['name']} {versions} (uv found none to install); {WHEELS_ONLY}"
            )
    return None


def install(
    locked: Locked,
    target: Path,
    runtime: Runtime,
    index_args: list[str],
    work: Path,
    meanwhile: Callable[[], None] = lambda: None,
) -> None:
    """Install ``locked`` for the image's platform into a flat ``target`` directory.
    ``meanwhile`` runs while uv does; if it raises, uv is stopped and its error raised."""
    if not locked.text.strip():
        meanwhile()
        target.mkdir(parents=True, exist_ok=True)
        return
    requirements = work / "requirements.txt"
    requirements.write_text(locked.text)
    command = [
        find_uv_bin(), "pip", "install", "--quiet", "--no-build", "--no-config",
        "--python", sys.executable,
        "--target", str(target),
        "--python-version", runtime.version,
        "--python-platform", runtime.wheel_platform,
        # Links into uv's cache, not copies: cheaper to make and, above all, to remove with
        # the build's scratch directory (no data blocks to free). Every file changed later
        # is unlinked first (relocate_scripts, fix_records), so the cache is never written.
        # uv copies when its cache is on another file system.
        "--link-mode", "hardlink",
        *(["--no-deps"] if locked.complete else []),
        *index_args,
        "-r", str(requirements),
    ]  # fmt: skip
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        try:
            meanwhile()
            stdout, stderr = process.communicate()
        except BaseException:  # an error of meanwhile's, or Ctrl-C: uv is not waited for
            process.kill()
            raise
    if process.returncode != 0:
        from buildpacks.oci.auth import redact  # only for a failed install

        output = redact(stderr + stdout)
        message = _no_wheel_message(output, runtime)
        if message:
            raise BuildError(message)
        decoration = " \u00d7\u2570\u2500\u25b6\u2502"  # uv's box-drawing and cross marks
        lines = [line.strip(decoration) for line in output.splitlines() if line.strip(decoration)]
        raise BuildError(
            f"installing dependencies from {locked.source} failed: " + " ".join(lines)[:600]
        )


def index_arguments(config: BuildConfig) -> list[str]:
    """uv's index options from the configuration, else from PIP_INDEX_URL (uv reads
    UV_INDEX_URL itself). Netrc and keyring credentials are uv's business, never ours."""
    index = config.index_url or (
        None if os.environ.get("UV_INDEX_URL") else os.environ.get("PIP_INDEX_URL")
    )
    args = ["--index-url", index] if index else []
    for url in config.extra_index_urls:
        args += ["--extra-index-url", url]
    return args


PYPI = "https://pypi.org/simple"
_INDEX_OPTION = re.compile(
    r"^(--index-url|-i|--extra-index-url|--no-index|--find-links|-f)(?:[ =]\s*(\S+))?"
)


def index_urls(config: BuildConfig, locked: Locked) -> list[str]:
    """The indexes uv installs ``locked`` from, in the order it asks them (extra indexes
    before the default one): ``index_arguments``, then uv's own variables, then the
    requirements' own index options, then PyPI. None with ``--no-index``, nor with find-links
    (``--find-links``, ``UV_FIND_LINKS``), whose wheels may fill what an index lacks."""
    default, extras = None, []
    for line in locked.text.splitlines():
        match = _INDEX_OPTION.match(line.strip())
        if match and match[1] in ("--no-index", "--find-links", "-f"):
            return []
        if match and match[2]:
            if match[1] == "--extra-index-url":
                extras.append(match[2])
            else:
                default = match[2]
    if os.environ.get("UV_FIND_LINKS"):
        return []
    arguments = index_arguments(config)
    cli = dict(zip(arguments[::2], arguments[1::2], strict=True)).get("--index-url")
    default = cli or os.environ.get("UV_INDEX_URL") or default or PYPI
    extras = [*config.extra_index_urls, *os.environ.get("UV_EXTRA_INDEX_URL", "").split(), *extras]
    return [*extras, default]


def project_requirements(config: BuildConfig, target: Target) -> Locked:
    """With no lock file: the project's own dependencies (selected extras included),
    resolved at build time, so the build is not pinned."""
    lines = []
    for text in sorted(config.project.requires_dist):
        requirement = Requirement(text)
        marker = requirement.marker
        requirement.marker = None
        env = target.environment()
        if marker is None or any(
            marker.evaluate({**env, "extra": e}) for e in [*target.extras, ""]
        ):
            lines.append(str(requirement))
    return Locked("pyproject.toml", "\n".join(lines) + "\n", complete=False)


def relocate_scripts(bin_dir: Path, interpreter: str) -> None:
    """Point console-script shebangs at the venv's interpreter inside the image."""
    for script in sorted(bin_dir.iterdir()):
        if not script.is_file() or script.is_symlink():
            continue
        data = script.read_bytes()
        if data.startswith(b"#!/bin/sh\n'''exec' "):
            # uv's trampoline for long interpreter paths: `'''exec' "PY" "$0" "$@"` then `' '''`.
            _, _, rest = data.split(b"\n", 1)[1].partition(b"\n")
            body = rest.split(b"\n", 1)[1] if rest.startswith(b"' '''") else rest
        elif data.startswith(b"#!") and b"python" in data.split(b"\n", 1)[0]:
            body = data.split(b"\n", 1)[1] if b"\n" in data else b""
        else:
            continue
        script.unlink()  # never write through a link into uv's cache
        script.write_bytes(b"#!" + interpreter.encode() + b"\n" + body)
        script.chmod(0o755)


def _record_hash(path: Path) -> str:
    digest = hashlib.sha256(path.read_bytes()).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def fix_records(site: Path, bin_dir: Path) -> None:
    """Make RECORD files true again after scripts moved from ``bin/`` to the venv's bin.

    uv recorded them relative to its flat target and with the host's shebang; pip would
    record them relative to site-packages with the content actually installed.
    """
    to_bin = "../../../bin/"
    for record in sorted(site.glob("*.dist-info/RECORD")):
        lines = []
        for row in csv.reader(record.read_text(encoding="utf-8").splitlines()):
            if row and row[0].startswith("bin/") and (bin_dir / row[0][4:]).is_file():
                script = bin_dir / row[0][4:]
                row = [to_bin + row[0][4:], _record_hash(script), str(script.stat().st_size)]
            lines.append(row)
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerows(lines)
        record.unlink()  # a link into uv's cache: never written through
        record.write_text(out.getvalue(), encoding="utf-8")


def make_venv(stage: Path, installed: Path, runtime: Runtime) -> None:
    """Arrange ``installed`` (uv's flat target) as a venv at ``stage``, for path ``VENV``."""
    site = stage / "lib" / f"python{runtime.minor}" / "site-packages"
    site.parent.mkdir(parents=True)
    bin_src = installed / "bin"
    bin_dir = stage / "bin"
    if bin_src.is_dir():
        shutil.move(str(bin_src), bin_dir)
        relocate_scripts(bin_dir, f"{VENV}/bin/python")
    else:
        bin_dir.mkdir()
    shutil.move(str(installed), site)
    fix_records(site, bin_dir)
    for name in ("python", "python3", f"python{runtime.minor}"):
        link = bin_dir / name
        if not link.exists():
            link.symlink_to(runtime.interpreter if name == "python" else "python")
    home = os.path.dirname(runtime.interpreter)
    (stage / "pyvenv.cfg").write_text(
        f"home = {home}\ninclude-system-site-packages = false\nversion = {runtime.version}\n"
        f"executable = {runtime.interpreter}\n"
    )
    # The application layer is a site directory of its own; this line makes it importable.
    # /workspace too, for applications whose source is copied there instead of a wheel.
    pth = f"{application.site_dir(runtime)}\n{WORKSPACE}\n"
    (site / "_buildpacks_application.pth").write_text(pth)


def requirements(config: BuildConfig, runtime: Runtime) -> tuple[Path | None, Target, Locked]:
    """What the image installs on ``config.platform`` with ``runtime``: the lock file (None
    without one), the target its markers are evaluated for, and the requirements."""
    target = Target(
        runtime.version,
        config.platform.machine,
        frozenset(config.extras),
        frozenset(config.dependency_groups),
    )
    lock = find_lock(config.project.root)
    if lock is not None:
        return lock, target, read_lock(lock, target, config.cache_dir)
    return None, target, project_requirements(config, target)


def check_wheels(
    platforms: Sequence[tuple[BuildConfig, Runtime]], log: Callable[[str], None]
) -> None:
    """The wheel-gap check of ``platforms`` (each one's configuration and Python) at once:
    one error names every pinned dependency and platform without a wheel."""
    from buildpacks import wheelgap  # only when dependencies are installed: not on warm builds

    found = []
    for config, runtime in platforms:
        lock, target, locked = requirements(config, runtime)
        found.append(wheelgap.PlatformDependencies(str(config.platform), runtime, target, locked))
    config = platforms[0][0]
    wheelgap.check_wheels(
        found,
        lock,
        index_urls(config, locked),
        config.cache_dir,
        config.pull_policy == "never",
        log,
    )


class DependenciesBuildpack:
    id = ID
    version = VERSION

    def detect(self, config: BuildConfig) -> bool:
        return True

    def build(self, ctx: BuildContext) -> None:
        runtime = ctx.need_runtime()
        config = ctx.config
        lock, _, locked = requirements(config, runtime)
        if lock is not None:
            ctx.log(f"Dependencies locked by {lock.name}")
        elif locked.text.strip():
            ctx.log(
                "warning: no lock file (uv.lock, pylock.toml, poetry.lock, requirements.txt, "
                "Pipfile.lock): dependencies are resolved now, so this build is not pinned"
            )
        index_args = index_arguments(config)
        key = cache_key(
            {
                "code": code_key(
                    __name__, application.__name__, "buildpacks.locks", "buildpacks.sbom"
                ),
                "requirements": locked.text,
                "complete": locked.complete,
                "python": runtime.version,
                "interpreter": runtime.interpreter,
                "platform": runtime.wheel_platform,
                "uv": uv_version(),
                "index": [index_args, {name: os.environ.get(name, "") for name in _INDEX_ENV}],
            }
        )

        def check() -> None:
            if ctx.wheel_check is not None:
                ctx.wheel_check()
            else:
                check_wheels([(config, runtime)], ctx.log)
            ctx.log(f"Installing dependencies from {locked.source} for {runtime.wheel_platform}")

        def build_venv() -> tuple[Layer, dict[str, Any]]:
            # Only when the layer is built (a cached layer's wheels were all found): the
            # warm path never runs it. The wheel-gap check (index pages to fetch and read)
            # runs while uv installs, rather than before: a gap it finds stops uv, whose
            # half-done install in the scratch directory goes with it, and is the error.
            work = ctx.scratch()
            installed = work / "uv-target"
            install(locked, installed, runtime, index_args, work, meanwhile=check)
            stage = work / "venv"
            make_venv(stage, installed, runtime)
            packages = packages_in(stage / "lib" / f"python{runtime.minor}" / "site-packages")
            # Compression is the cold build's bottleneck and this is the big layer: level 1
            # compresses about 2.3 times faster than 6 for a slightly larger blob (bench/).
            layer = write_layer(
                ctx.store,
                [TreeMapping(stage, VENV)],
                mtime=ctx.config.source_date_epoch,
                compression=ctx.config.layer_compression,
                compresslevel=GZIP_LEVEL,
            )
            return layer, {"packages": [p.to_json() for p in packages], "gzip-level": GZIP_LEVEL}

        result = reuse_or_build(ctx, ID, "venv", VENV, key, build_venv)
        if result.cached:
            ctx.log("Reusing cached dependencies layer")
        installed = [Package(**p) for p in result.extra.get("packages", [])]
        ctx.packages.extend(installed)
        if lock is not None and not locked.complete:
            # Besides its unpinned lines, what uv installed that the file does not list.
            listed = {canonicalize_name(name) for name in locked.names}
            resolved = [p.name for p in installed if canonicalize_name(p.name) not in listed]
            unpinned = [*locked.unpinned, *sorted(resolved)]
            if unpinned:
                ctx.log(
                    f"warning: {lock.name} does not pin {', '.join(unpinned)} to one "
                    "version (name==X.Y.Z): they are resolved now, so the image is not pinned"
                )
        ctx.env["VIRTUAL_ENV"] = VENV
        ctx.path_entries.append(f"{VENV}/bin")


BUILDPACK = DependenciesBuildpack()
