"""Several platforms from one build, the parts that need no image: the ``platforms`` setting
(with ``platform`` as its one-entry form, the host's platform as the default), the manifest
a base index gives each platform, the pure-wheel rule and the naming of each platform's
log lines and failures."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from buildpacks import frontend
from buildpacks.builtin.application import check_pure
from buildpacks.config import resolve
from buildpacks.errors import BuildError
from buildpacks.lifecycle import platforms
from buildpacks.oci.manifest import select_platform
from buildpacks.oci.model import Platform
from buildpacks.project import Project

AMD64 = Platform("linux", "amd64")
ARM64 = Platform("linux", "arm64")


def project(**tool_config) -> Project:
    return Project(root=Path("/p"), name="svc", version="1.0", tool_config=tool_config)


def configure(tool_config=None, env=None, overrides=None):
    return resolve(project(**(tool_config or {})), Path("/out"), env=env or {}, overrides=overrides)


@pytest.mark.parametrize(
    ("machine", "expected"),
    [
        ("x86_64", "linux/amd64"),
        ("aarch64", "linux/arm64/v8"),
        ("arm64", "linux/arm64/v8"),  # macOS spells it so
        ("armv7l", "linux/arm"),
        ("i686", "linux/386"),
        ("ppc64le", "linux/ppc64le"),
    ],
)
def test_default_is_this_machine(machine, expected, monkeypatch):
    monkeypatch.setattr("platform.machine", lambda: machine)
    monkeypatch.setattr("buildpacks.oci.model.host_machine", lambda: machine)
    config = configure()
    assert [str(p) for p in config.platforms] == [expected] and str(config.platform) == expected
    assert config.origins["platforms"] == f"this machine ({machine})"


def test_platforms_from_pyproject_environment_and_flags():
    config = configure({"platforms": ["linux/amd64", "linux/arm64"]})
    assert config.platforms == (AMD64, ARM64) and config.platform == AMD64
    assert config.origins["platforms"] == "pyproject.toml [tool.buildpacks]"
    config = configure(env={"BP_PLATFORMS": "linux/arm64, linux/amd64"})
    assert config.platforms == (ARM64, AMD64)
    assert config.origins["platforms"] == "BP_PLATFORMS"
    # A -C image-platforms=... setting arrives as text, a --platform flag as a list.
    config = configure(overrides={"platforms": "linux/arm64/v8,linux/amd64"})
    assert config.platforms == (Platform("linux", "arm64", "v8"), AMD64)
    assert config.origins["platforms"] == "command line"


def test_platform_is_a_one_entry_platforms():
    config = configure({"platform": "linux/arm64"})
    assert config.platforms == (ARM64,)
    assert config.origins["platforms"] == "platform, pyproject.toml [tool.buildpacks]"
    config = configure(env={"BP_PLATFORM": "linux/amd64"})
    assert config.platforms == (AMD64,)


def test_platform_and_platforms_together_are_refused():
    with pytest.raises(BuildError) as e:
        configure({"platforms": ["linux/amd64"]}, env={"BP_PLATFORM": "linux/arm64"})
    assert str(e.value) == (
        "platform (BP_PLATFORM) and platforms (pyproject.toml [tool.buildpacks]) are the same "
        "setting (platform is a one-entry platforms); give one"
    )


@pytest.mark.parametrize(
    "text", ["linux", "linux/amd46", "windows/amd64", "linux/arm64/v7", "linux/amd64/", "amd64"]
)
def test_unknown_platform_lists_the_accepted_form(text):
    with pytest.raises(BuildError) as e:
        configure(env={"BP_PLATFORMS": f"linux/amd64,{text}"})
    message = str(e.value)
    assert message.startswith(f"platforms (BP_PLATFORMS): {text!r} is not a platform; ")
    assert "write os/arch[/variant], one of linux/amd64[/v1|v2|v3|v4], linux/arm64[/v8]" in message
    assert "\n" not in message


def test_a_platform_given_twice_or_none_is_refused():
    with pytest.raises(BuildError, match=r"platforms \(BP_PLATFORMS\): linux/arm64 is given twice"):
        configure(env={"BP_PLATFORMS": "linux/arm64,linux/amd64,linux/arm64"})
    with pytest.raises(BuildError, match="give at least one platform"):
        configure({"platforms": []})


def test_config_command_shows_platforms_with_origin():
    lines = frontend.describe(configure({"platforms": ["linux/amd64", "linux/arm64"]}))
    shown = [line for line in lines if line.startswith("platform")]
    assert len(shown) == 1
    assert re.fullmatch(
        r"platforms +=\s\['linux/amd64', 'linux/arm64'\]  \(pyproject.toml \[tool.buildpacks\]\)",
        shown[0],
    )


def entry(arch: str, variant: str | None = None, digest: str = "") -> dict:
    spec = {"os": "linux", "architecture": arch, **({"variant": variant} if variant else {})}
    return {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": digest or f"sha256:{arch}{variant or ''}",
        "size": 1,
        "platform": spec,
    }


def test_arm64_takes_the_v8_manifest_where_the_index_has_it():
    index = {"manifests": [entry("amd64"), entry("arm64", "v9"), entry("arm64", "v8")]}
    assert select_platform(index, ARM64, "base").digest == "sha256:arm64v8"
    assert select_platform(index, AMD64, "base").digest == "sha256:amd64"
    # No v8 entry: any arm64 one serves.
    only = {"manifests": [entry("amd64"), entry("arm64")]}
    assert select_platform(only, ARM64, "base").digest == "sha256:arm64"


def test_a_platform_the_base_index_lacks_lists_those_it_has():
    index = {"manifests": [entry("amd64"), entry("s390x")]}
    with pytest.raises(BuildError) as e:
        select_platform(index, ARM64, "base image oci-layout:/b")
    assert str(e.value) == (
        "base image oci-layout:/b has no image for linux/arm64 (it has: linux/amd64, linux/s390x)"
    )


def test_only_a_pure_wheel_serves_several_platforms():
    check_pure(Path("svc-1.0-py3-none-any.whl"), (AMD64, ARM64))
    check_pure(Path("svc-1.0-py2.py3-none-any.whl"), (AMD64, ARM64))
    with pytest.raises(BuildError) as e:
        check_pure(Path("svc-1.0-cp311-cp311-manylinux_2_28_x86_64.whl"), (AMD64, ARM64))
    message = str(e.value)
    assert "svc-1.0-cp311-cp311-manylinux_2_28_x86_64.whl is not pure Python" in message
    assert "cannot serve the platforms linux/amd64,linux/arm64" in message
    assert "it must be built per platform; build one platform per run" in message
    assert "BP_PLATFORMS=linux/amd64" in message


def test_each_platform_names_its_lines_and_failures():
    lines: list[str] = []
    config = configure({"platforms": ["linux/amd64", "linux/arm64"]})
    targets = platforms.targets(config, lines.append)
    assert [t.config.platform for t in targets] == [AMD64, ARM64]
    assert all(t.config.platforms == (t.config.platform,) for t in targets)
    targets[1].log("Installing")
    assert lines == ["[linux/arm64] Installing"]
    with pytest.raises(BuildError, match=r"^\[linux/arm64\] no wheel$"), targets[1].naming():
        raise BuildError("no wheel")
    # An error about every platform is not pinned on the one being built when it arose.
    both = "no wheel for linux/amd64; no wheel for linux/arm64"
    with pytest.raises(BuildError, match=f"^{both}$"), targets[0].naming():
        raise platforms.AcrossPlatforms(both)


def test_one_platform_reads_as_before():
    lines: list[str] = []
    config = configure({"platforms": ["linux/arm64"]})
    (target,) = platforms.targets(config, lines.append)
    assert target.config is config
    target.log("Installing")
    assert lines == ["Installing"]
    with pytest.raises(BuildError, match=r"^no wheel$"), target.naming():
        raise BuildError("no wheel")
