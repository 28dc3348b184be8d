"""The runtime buildpack: finds the run image's Python interpreter and C library in its
layers, checks it is the Python X.Y the build asked for, and hands the facts on.
It adds no layer: the interpreter is the base image's own."""

from __future__ import annotations

import json
import re
from pathlib import Path

from buildpacks.builtin import BuildContext, Runtime, application, cache_key, code_key
from buildpacks.config import BuildConfig
from buildpacks.debian import is_dpkg_record
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


def _dpkg_versions(status: bytes) -> dict[str, str]:
    versions = {}
    for stanza in status.decode("utf-8", "replace").split("\n\n"):
        fields = dict(
            line.split(": ", 1)
            for line in stanza.splitlines()
            if ": " in line and not line.startswith(" ")
        )
        if (
            "Package" in fields
            and "Version" in fields
            and "installed" in fields.get("Status", "installed")
        ):
            versions[fields["Package"]] = fields["Version"]
    return versions


def _env(image: Image) -> dict[str, str]:
    pairs = (
        item.split("=", 1)
        for item in image.config.get("config", {}).get("Env") or []
        if "=" in item
    )
    return dict(pairs)


def inspect_run_image(image: Image, machine: str) -> dict[str, object]:
    """Interpreters, C library and version hints of an image, read from its layers."""
    found = rootfs.find(
        image,
        wanted=lambda p: bool(_INTERPRETER.match(p) or _MUSL.match(p) or is_dpkg_record(p)),
        read=is_dpkg_record,
    )
    interpreters = sorted(
        (p for p in found if _INTERPRETER.match(p)),
        key=lambda p: ("usr/local/bin", "usr/bin", "bin").index(p.rsplit("/", 1)[0]),
    )
    dpkg: dict[str, str] = {}
    for path in sorted(p for p in found if is_dpkg_record(p)):
        dpkg.update(_dpkg_versions(found[path].content or b""))
    glibc = dpkg.get("libc6", "")
    match = re.match(r"^(\d+)\.(\d+)", glibc)
    if any(_MUSL.match(p) for p in found):
        wheel_platform = f"{machine}-unknown-linux-musl"
    elif match:
        minor = int(match[2])
        best = next((v for v in _UV_GLIBC if v <= minor), 17)
        wheel_platform = f"{machine}-manylinux_2_{best}"
    else:
        wheel_platform = f"{machine}-manylinux_2_28"
    return {"interpreters": interpreters, "dpkg": dpkg, "wheel_platform": wheel_platform}


def find_runtime(image: Image, minor: str, machine: str, facts: dict) -> Runtime:
    """The interpreter for Python ``minor`` in the run image; if there is none, a
    ``BuildError`` saying what is there."""
    for path in facts["interpreters"]:
        if path.endswith(f"python{minor}"):
            version = _env(image).get("PYTHON_VERSION", "")
            if not version.startswith(f"{minor}."):
                deb = facts["dpkg"].get(f"python{minor}-minimal") or facts["dpkg"].get(
                    f"python{minor}", ""
                )
                version = deb.split("-")[0].split("+")[0] if deb.startswith(f"{minor}.") else minor
            return Runtime("/" + path, version, minor, facts["wheel_platform"])
    others = ", ".join("/" + p for p in facts["interpreters"]) or "no Python interpreter"
    raise BuildError(
        f"base image {image.reference} has no Python {minor} (found: {others}); "
        f"choose a base with Python {minor} or set python-version to match the base"
    )


def run_image_facts(image: Image, cache_dir: Path, machine: str) -> dict:
    """``inspect_run_image`` of ``image``, kept under ``cache_dir`` by the image's digest,
    the machine and the code that reads it: the base is read once, whether by the analysis
    before the wheel or by the build."""
    key = cache_key(
        {
            "image": image.manifest_digest or image.digest(),
            "machine": machine,
            "code": code_key(__name__, "buildpacks.oci.rootfs"),
        }
    )
    record = cache_dir / "run-images" / f"{key}.json"
    try:
        return json.loads(record.read_text())
    except (OSError, ValueError):
        facts = inspect_run_image(image, machine)
        write_atomic(record, json.dumps(facts))
        return facts


def python_minors(facts: dict) -> tuple[str, ...]:
    """The ``X.Y`` of each interpreter found, in the order ``find_runtime`` prefers them."""
    minors = (_INTERPRETER.match(path)[2] for path in facts["interpreters"])  # type: ignore[index]
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
