"""The application buildpack: the project's own wheel, installed into a site directory of
its own layer, so a source edit changes this layer and no other. Its console scripts get
shebangs that name the venv's interpreter in the image; no bytecode is compiled."""

from __future__ import annotations

import hashlib
import io
import os
import platform
import posixpath
import re
import shutil
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import pathspec
from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import InvalidWheelFilename, parse_wheel_filename

from buildpacks.builtin import (
    IMAGE_USER,
    WORKSPACE,
    BuildContext,
    Runtime,
    cache_key,
    code_key,
    layer_path,
    reuse_or_build,
)
from buildpacks.config import BuildConfig
from buildpacks.errors import BuildError
from buildpacks.oci.blobs import file_digest
from buildpacks.oci.layer import File, MemoryTree, TreeMapping, write_layer
from buildpacks.oci.model import Layer, Platform

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


class LayerFiles:
    """Where ``installer`` puts what a wheel installs (its ``WheelDestination`` interface):
    in memory, as the files of the app layer, each scheme at its place under ``APP``."""

    def __init__(self, schemes: dict[str, str], interpreter: str) -> None:
        self.schemes, self.interpreter = schemes, interpreter
        self.files: dict[str, File] = {}

    def _add(self, scheme: str, path: str, stream: BinaryIO, executable: bool) -> Any:
        from installer.records import Hash, RecordEntry
        from installer.utils import copyfileobj_with_hashing

        base = self.schemes[scheme]
        name = posixpath.normpath(posixpath.join(base, path))
        # As installer refuses it: a path that leaves its scheme's directory.
        inside = posixpath.relpath(name, base)
        if inside == ".." or inside.startswith("../") or posixpath.isabs(name):
            raise ValueError(f"Attempting to write {path} outside of the target directory")
        if name in self.files:
            raise FileExistsError(f"File already exists: {name}")
        data = io.BytesIO()
        digest, size = copyfileobj_with_hashing(stream, data, "sha256")
        self.files[name] = File(data.getvalue(), executable)
        return RecordEntry(path, Hash("sha256", digest), size)

    def write_file(self, scheme: str, path: str, stream: BinaryIO, is_executable: bool) -> Any:
        """A file of the wheel; a script's ``#!python`` names ``interpreter``."""
        from installer.utils import fix_shebang

        if scheme == "scripts":
            with fix_shebang(stream, self.interpreter) as fixed:
                return self._add(scheme, path, fixed, is_executable)
        return self._add(scheme, path, stream, is_executable)

    def write_script(self, name: str, module: str, attr: str, section: Any) -> Any:
        """A console or GUI script's launcher, as ``installer`` writes it for POSIX."""
        from installer.scripts import Script

        script_name, data = Script(name, module, attr, section).generate(self.interpreter, "posix")
        return self._add("scripts", script_name, io.BytesIO(data), True)

    def finalize_installation(self, scheme: str, record_file_path: str, records: Any) -> None:
        """The ``RECORD`` file, its paths relative to ``scheme``'s directory."""
        from installer.utils import construct_record_file

        def prefix(file_scheme: str) -> str | None:
            if file_scheme == scheme:
                return None
            return posixpath.relpath(self.schemes[file_scheme], self.schemes[scheme]) + "/"

        with construct_record_file(list(records), prefix) as stream:
            self._add(scheme, record_file_path, stream, False)


def install_wheel(wheel: Path, runtime: Runtime, interpreter: str) -> dict[str, File]:
    """What ``wheel`` installs, by path relative to ``APP`` in the image."""
    from installer import install  # only when the layer is rebuilt: keeps warm starts short
    from installer.sources import WheelFile

    site = site_dir(runtime).removeprefix(APP + "/")
    schemes = {"purelib": site, "platlib": site, "scripts": "bin", "headers": "include"}
    destination = LayerFiles({**schemes, "data": "."}, interpreter)
    try:
        with WheelFile.open(wheel) as source:
            install(source, destination, {"INSTALLER": b"python-buildpacks\n"})  # type: ignore[arg-type]
    except Exception as e:  # installer raises plain exceptions for broken wheels
        raise BuildError(f"{wheel.name}: cannot be installed ({e})") from None
    return destination.files


@dataclass(eq=False, repr=False)
class Host:
    """The machine building the image: a ``linux_<arch>`` wheel it compiled links against
    its C library, so it loads in an image of the same architecture whose glibc is as new."""

    machine: str  # x86_64, aarch64
    glibc: tuple[int, int] | None  # None: not a glibc system


def this_host() -> Host:
    """The facts of this machine that decide whether its own wheels fit an image."""
    text = os.confstr("CS_GNU_LIBC_VERSION") if hasattr(os, "confstr") else None
    match = re.fullmatch(r"glibc (\d+)\.(\d+).*", text or "")
    return Host(platform.machine(), (int(match[1]), int(match[2])) if match else None)


def image_platforms(runtime: Runtime, host: Host | None = None) -> list[str]:
    """The wheel platform tags the image can load, best first: manylinux down from its
    glibc (legacy aliases included), or musllinux; ``linux_<arch>`` only for wheels of a
    ``host`` of the image's architecture whose glibc is not newer than the image's."""
    machine, _, libc = runtime.wheel_platform.partition("-")
    if libc.endswith("linux-musl"):
        return [f"musllinux_1_{minor}_{machine}" for minor in range(2, -1, -1)]
    glibc = int(libc.rsplit("_", 1)[1])
    legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
    platforms = []
    for minor in range(glibc, 4, -1):
        platforms.append(f"manylinux_2_{minor}_{machine}")
        if minor in legacy:
            platforms.append(f"{legacy[minor]}_{machine}")
    if host is not None and host.machine == machine and host.glibc and host.glibc <= (2, glibc):
        platforms.append(f"linux_{machine}")
    return platforms


def image_tags(runtime: Runtime, host: Host | None = None) -> set[Tag]:
    """Every wheel tag the image's CPython, ABI and platform accept."""
    major, minor = (int(n) for n in runtime.minor.split("."))
    platforms = image_platforms(runtime, host)
    cp = f"cp{major}{minor}"
    return {
        *cpython_tags((major, minor), abis=[cp], platforms=platforms),
        *compatible_tags((major, minor), cp, platforms),
    }


def check_wheel_fits(wheel: Path, runtime: Runtime, host: Host | None = None) -> None:
    """Refuse a project wheel the image's Python cannot load, saying how to get one it can;
    ``host``: the machine that built it (its ``linux_<arch>`` wheels may fit)."""
    try:
        tags = parse_wheel_filename(wheel.name)[3]
    except InvalidWheelFilename as e:
        raise BuildError(f"{wheel.name}: not a wheel file name ({e})") from None
    # Most project wheels are pure: found so, without listing the image's ~600 tags.
    pure = {f"py{runtime.minor.split('.')[0]}", f"py{runtime.minor.replace('.', '')}"}
    if any(t.interpreter in pure and t.abi == "none" and t.platform == "any" for t in tags):
        return
    if tags & image_tags(runtime, host):
        return
    shown = ", ".join(sorted(map(str, tags)))
    cp = f"cp{runtime.minor.replace('.', '')}"
    interpreters = {t.interpreter for t in tags}
    platforms = {t.platform for t in tags}
    target = image_platforms(runtime)[0]
    if not interpreters & {cp, "py3", f"py{cp[2:]}"}:
        fix = (
            f"build the wheel with Python {runtime.minor}, or set python-version to the Python it "
            "was built for (with a base image that has it)"
        )
    elif all(p.startswith("linux_") for p in platforms):
        fix = (
            "a linux_* wheel is built against the C library of the machine that built it, "
            f"which the image does not match; build a manylinux wheel for {target} (e.g. "
            "auditwheel repair, cibuildwheel), or choose a base with that machine's glibc"
        )
    else:
        fix = f"build it for {target}, or choose a base image it fits"
    raise BuildError(
        f"the project's wheel {wheel.name} cannot be loaded by the image "
        f"(CPython {runtime.minor}, {cp}, {runtime.wheel_platform}; wheel tags: {shown}): {fix}"
    )


def check_pure(wheel: Path, platforms: Sequence[Platform]) -> None:
    """A wheel built once serves several platforms only when it is pure Python
    (``py3-none-any``); otherwise a ``BuildError`` saying how to build it."""
    try:
        tags = parse_wheel_filename(wheel.name)[3]
    except InvalidWheelFilename as e:
        raise BuildError(f"{wheel.name}: not a wheel file name ({e})") from None
    if all(t.abi == "none" and t.platform == "any" for t in tags):
        return
    shown = ", ".join(sorted(map(str, tags)))
    asked = ",".join(map(str, platforms))
    raise BuildError(
        f"the project's wheel {wheel.name} is not pure Python (tags: {shown}), so one wheel "
        f"cannot serve the platforms {asked}: it must be built per platform; build one "
        f"platform per run (e.g. BP_PLATFORMS={platforms[0]}), each on a machine of that "
        "platform or from a wheel built for it"
    )


def wheel_content_digest(wheel: Path) -> str:
    """A digest of what the wheel installs (names, contents, executable bits), not of the
    zip file, whose timestamps some backends (setuptools) set to the time of the build."""
    digest = hashlib.sha256()
    try:
        with zipfile.ZipFile(wheel) as zf:
            for info in sorted(zf.infolist(), key=lambda i: i.filename):
                if info.is_dir():
                    continue
                executable = bool((info.external_attr >> 16) & 0o111)
                data = hashlib.sha256(zf.read(info)).hexdigest()
                digest.update(f"{info.filename}\0{executable}\0{data}\n".encode())
    except (OSError, zipfile.BadZipFile) as e:
        raise BuildError(f"{wheel}: not a readable wheel ({e})") from None
    return f"sha256:{digest.hexdigest()}"


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
                "code": code_key(__name__),
                "wheel": wheel_content_digest(wheel),
                "python": runtime.minor,
                "interpreter": venv_python,
                **OWNERSHIP,
            }
        )

        def build_app() -> tuple[Layer, dict[str, Any]]:
            mappings = [
                MemoryTree(install_wheel(wheel, runtime, venv_python), APP),
                MemoryTree({}, VAR, IMAGE_USER),
                MemoryTree({}, WORKSPACE, IMAGE_USER),
            ]
            return write_layer(
                ctx.store,
                mappings,
                mtime=ctx.config.source_date_epoch,
                compression=ctx.config.layer_compression,
            ), {}

        result = reuse_or_build(ctx, ID, "app", APP, key, build_app)
        ctx.log(
            f"Application {wheel.name}: layer {result.layer.digest[:19]}"
            + (" (cached)" if result.cached else "")
        )
        ctx.path_entries.append(BIN)

    def build_source(self, ctx: BuildContext) -> None:
        """An application without a wheel: its source tree, minus what its ignore files and
        the built-in lists leave out, copied to /workspace."""
        root = ctx.config.project.root
        files = [f for f in source_files(root) if ctx.config.descriptor.selects(f)]
        key = cache_key(
            {
                "code": code_key(__name__),
                "source": [
                    [f, entry_digest(root / f), os.access(root / f, os.X_OK)] for f in files
                ],
                **OWNERSHIP,
            }
        )

        def build_app() -> tuple[Layer, dict[str, Any]]:
            stage = ctx.scratch() / "workspace"
            for name in files:
                (stage / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(root / name, stage / name, follow_symlinks=False)
            stage.mkdir(exist_ok=True)
            mapping = TreeMapping(stage, WORKSPACE, IMAGE_USER)
            return write_layer(
                ctx.store,
                [mapping],
                mtime=ctx.config.source_date_epoch,
                compression=ctx.config.layer_compression,
            ), {}

        result = reuse_or_build(ctx, ID, "app", WORKSPACE, key, build_app)
        ctx.log(
            f"Application source: {len(files)} file(s) in layer {result.layer.digest[:19]}"
            + (" (cached)" if result.cached else "")
        )


# Never copied into an image, whatever the ignore files say: credentials and keys.
SECRETS = (
    ".env*",
    ".envrc",
    ".netrc",
    ".npmrc",
    ".pypirc",
    "*.pem",
    "*.key",
    "id_*",
    ".aws/",
    ".ssh/",
    ".docker/",
)
# Not copied unless an ignore file re-includes them: VCS data, local environments, build
# output, caches, editor settings and image archives.
DEFAULT_IGNORES = (
    ".git/",
    ".hg/",
    ".svn/",
    ".venv/",
    "venv/",
    "env/",
    "__pycache__/",
    "*.pyc",
    "/dist/",
    "/build/",
    ".tox/",
    ".nox/",
    ".pytest_cache/",
    ".mypy_cache/",
    ".ruff_cache/",
    ".idea/",
    ".vscode/",
    "node_modules/",
    "*.tar",
)


def _dockerignore_lines(text: str) -> list[str]:
    """``.dockerignore`` patterns in gitignore syntax: Docker matches a pattern against the
    path from the context's root, so a pattern with no leading ``**`` is anchored there."""
    lines = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate, pattern = ("!", line[1:].strip()) if line.startswith("!") else ("", line)
        pattern = pattern.removeprefix("./")
        if not pattern.startswith(("/", "**")):
            pattern = "/" + pattern
        lines.append(negate + pattern)
    return lines


def ignore_spec(root: Path) -> pathspec.GitIgnoreSpec:
    """What of ``root`` stays out of the image: the built-in list, then ``.gitignore`` and
    ``.dockerignore`` at the root (their ``!`` lines may re-include a built-in entry)."""
    lines = list(DEFAULT_IGNORES)
    for name, convert in ((".gitignore", str.splitlines), (".dockerignore", _dockerignore_lines)):
        path = root / name
        if path.is_file():
            lines += convert(path.read_text(encoding="utf-8", errors="replace"))
    return pathspec.GitIgnoreSpec.from_lines(lines)


def source_files(root: Path) -> list[str]:
    """The entries of an application's source tree that belong in its image, sorted:
    regular files and symbolic links (kept as links, never followed, so a link leaving the
    project cannot copy a host file into the image)."""
    spec = ignore_spec(root)
    # Compiled here, not at import: a project built from its wheel never lists its source.
    secrets = pathspec.GitIgnoreSpec.from_lines(SECRETS)

    def ignored(relative: str) -> bool:
        return spec.match_file(relative) or secrets.match_file(relative)

    found = []
    for directory, dirs, names in os.walk(root):
        here = Path(directory)
        kept = []
        for name in sorted(dirs):
            relative = (here / name).relative_to(root).as_posix()
            if ignored(relative + "/"):
                continue
            if (here / name).is_symlink():  # os.walk does not descend into these
                found.append(relative)
            else:
                kept.append(name)
        dirs[:] = kept
        for name in names:
            path = here / name
            relative = path.relative_to(root).as_posix()
            if ignored(relative) or not (path.is_symlink() or path.is_file()):
                continue
            found.append(relative)
    return sorted(found)


def entry_digest(path: Path) -> str:
    """What identifies a source entry's content: a link's target, a file's digest."""
    return "link:" + os.readlink(path) if path.is_symlink() else file_digest(path)


BUILDPACK = ApplicationBuildpack()
