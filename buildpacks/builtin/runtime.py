"""The runtime buildpack: finds the run image's Python interpreter and C library in its
layers, checks it is the Python X.Y the build asked for, and hands the facts on.
It adds no layer: the interpreter is the base image's own."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from buildpacks import sbom
from buildpacks.builtin import BuildContext, Runtime, application, cache_key, code_key
from buildpacks.config import BuildConfig
from buildpacks.errors import BuildError
from buildpacks.oci import rootfs
from buildpacks.oci.blobs import write_atomic
from buildpacks.oci.model import Image

ID = "python-buildpacks/runtime"
VERSION = "0.1.0"

_INTERPRETER = re.compile(r"^(usr/local/bin|usr/bin|bin)/python(3\.\d+)$")
_MUSL = re.compile(r"^lib/ld-musl-[\w]+\.so\.1$")
# glibc versions uv can target (its --python-platform values), newest first.
_UV_GLIBC = (40, 39, 38, 37, 36, 35, 34, 33, 32, 31, 28, 17)


def _env(image: Image) -> dict[str, str]:
    pairs = (
        item.split("=", 1)
        for item in image.config.get("config", {}).get("Env") or []
        if "=" in item
    )
    return dict(pairs)


@dataclass(repr=False)
class RunImageFacts:
    """What a build needs to know of its run image's files: its Python interpreters (paths
    without the leading slash, in the order ``find_runtime`` prefers them), the wheels its C
    library loads (uv's ``--python-platform``) and, for the SBOM, its distribution and OS
    packages."""

    interpreters: tuple[str, ...]
    wheel_platform: str
    contents: sbom.RunImageContents

    def package_version(self, name: str) -> str:
        """The version of the OS package ``name`` ('' when it is not installed)."""
        return next((p.version for p in self.contents.packages if p.name == name), "")

    def to_json(self) -> dict[str, Any]:
        return {
            "interpreters": list(self.interpreters),
            "wheel_platform": self.wheel_platform,
            "contents": self.contents.to_json(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunImageFacts:
        return cls(
            tuple(data["interpreters"]),
            data["wheel_platform"],
            sbom.RunImageContents.from_json(data["contents"]),
        )


def _wanted(path: str) -> bool:
    return bool(_INTERPRETER.match(path) or _MUSL.match(path)) or sbom.is_run_image_record(path)


def inspect_run_image(image: Image, machine: str) -> RunImageFacts:
    """The facts of ``image``, read from its layers in one pass: the runtime buildpack's
    and the SBOM's, so that a cold build reads its base once."""
    found = rootfs.find(image, wanted=_wanted, read=sbom.is_run_image_record)
    interpreters = sorted(
        (p for p in found if _INTERPRETER.match(p)),
        key=lambda p: ("usr/local/bin", "usr/bin", "bin").index(p.rsplit("/", 1)[0]),
    )
    contents = sbom.run_image_contents(
        {p: e.content or b"" for p, e in found.items() if sbom.is_run_image_record(p)}
    )
    glibc = next((p.version for p in contents.packages if p.name == "libc6"), "")
    match = re.match(r"^(\d+)\.(\d+)", glibc)
    if any(_MUSL.match(p) for p in found):
        wheel_platform = f"{machine}-unknown-linux-musl"
    elif match:
        minor = int(match[2])
        best = next((v for v in _UV_GLIBC if v <= minor), 17)
        wheel_platform = f"{machine}-manylinux_2_{best}"
    else:
        wheel_platform = f"{machine}-manylinux_2_28"
    return RunImageFacts(tuple(interpreters), wheel_platform, contents)


def find_runtime(image: Image, minor: str, machine: str, facts: RunImageFacts) -> Runtime:
    """The interpreter for Python ``minor`` in the run image; if there is none, a
    ``BuildError`` saying what is there."""
    for path in facts.interpreters:
        if path.endswith(f"python{minor}"):
            version = _env(image).get("PYTHON_VERSION", "")
            if not version.startswith(f"{minor}."):
                deb = facts.package_version(f"python{minor}-minimal") or facts.package_version(
                    f"python{minor}"
                )
                version = deb.split("-")[0].split("+")[0] if deb.startswith(f"{minor}.") else minor
            return Runtime("/" + path, version, minor, facts.wheel_platform)
    others = ", ".join("/" + p for p in facts.interpreters) or "no Python interpreter"
    raise BuildError(
        f"base image {image.reference} has no Python {minor} (found: {others}); "
        f"choose a base with Python {minor} or set python-version to match the base"
    )


def run_image_facts(image: Image, cache_dir: Path, machine: str) -> RunImageFacts:
    """``inspect_run_image`` of ``image``, kept under ``cache_dir`` by the digests of the
    image's layers (all the facts come from them), the machine and the code that reads
    them: the base is read once, whether by the analysis before the wheel, by the build or
    by the export's SBOM."""
    key = cache_key(
        {
            "layers": [layer.digest for layer in image.layers],
            "machine": machine,
            "code": code_key(__name__, "buildpacks.oci.rootfs", "buildpacks.sbom"),
        }
    )
    record = cache_dir / "run-images" / f"{key}.json"
    try:
        return RunImageFacts.from_json(json.loads(record.read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        facts = inspect_run_image(image, machine)
        write_atomic(record, json.dumps(facts.to_json()))
        return facts


def python_minors(facts: RunImageFacts) -> tuple[str, ...]:
    """The ``X.Y`` of each interpreter found, in the order ``find_runtime`` prefers them."""
    minors = (_INTERPRETER.match(path)[2] for path in facts.interpreters)  # type: ignore[index]
    return tuple(dict.fromkeys(minors))


class RuntimeBuildpack:
    id = ID
    version = VERSION

    def detect(self, config: BuildConfig) -> bool:
        return True

    def build(self, ctx: BuildContext) -> None:
        image = ctx.run_image
        facts = run_image_facts(image, ctx.config.cache_dir, ctx.config.platform.machine)
        ctx.runtime = find_runtime(
            image, ctx.config.python_version, ctx.config.platform.machine, facts
        )
        ctx.log(
            f"Python {ctx.runtime.version} at {ctx.runtime.interpreter}; "
            f"wheels for {ctx.runtime.wheel_platform}"
        )
        if ctx.wheel is not None:  # before any dependency is installed for it
            application.check_wheel_fits(ctx.wheel, ctx.runtime, application.this_host())


BUILDPACK = RuntimeBuildpack()
