"""The ``buildpacks`` command line as a user runs it: its help, its flags under the names pack
users know, the files it writes, and its refusals of bad flags (one ``error:`` line)."""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

import pytest

from tests import testbed

pytestmark = pytest.mark.e2e

ARCHIVE = "dist/example-service-0.1.0.tar"


def _one_error(result, pattern: str, project: Path | None = None) -> None:
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    # Ours would start a line; a backend's own, quoted in the error, is indented.
    assert not any(line.startswith("Traceback") for line in out.splitlines()), out
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, out
    assert pattern in errors[0], errors[0]
    if project is not None:
        dist = project / "dist"
        assert not dist.exists() or not any(dist.iterdir()), list(dist.iterdir())


def test_help_says_what_the_tool_does_in_plain_words(hatch_env):
    result = testbed.cli("--help", env=hatch_env)
    assert result.returncode == 0, result.stderr
    assert "Build a production OCI image of a Python project" in result.stdout
    assert "``" not in result.stdout  # no reST markup
    build_help = testbed.cli("build", "--help", env=hatch_env).stdout
    for flag in (
        "--env KEY=VALUE",
        "--process TYPE=COMMAND",
        "--publish, --no-publish",
        "--daemon, --no-daemon",
        "--run-image",
        "--tag",
        "-t",
        "-D",
        "--clear-cache",
        "--sbom-output-dir",
        "--creation-time",
    ):
        assert flag in build_help, flag


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--env", "DEBUG"], "error: --env 'DEBUG': write it as KEY=VALUE"),
        (["--env", "1X=2"], "'1X' is not an environment variable name"),
        (["--process", "web"], "error: --process 'web': write it as TYPE=COMMAND"),
        (["--creation-time", "yesterday"], "creation-time (command line) must be Unix seconds"),
        (["--publish", "yes"], "unrecognized arguments: yes"),
        (["--pull-policy"], "argument --pull-policy: expected one argument"),
    ],
)
def test_bad_flags_get_one_error_line_and_nothing_in_dist(session_dir, hatch_env, flags, message):
    slug = re.sub(r"\W+", "-", " ".join(flags))
    project = testbed.copy_example(session_dir / f"cli-bad{slug}")
    result = testbed.cli("build", str(project), *flags, env=hatch_env)
    _one_error(result, message, project)


def test_failed_wheel_build_shows_the_backends_own_error(session_dir, hatch_env):
    project = session_dir / "cli-broken-backend"
    project.mkdir()
    (project / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=68"]\nbuild-backend = "setuptools.build_meta"\n'
    )
    (project / "setup.py").write_text('raise RuntimeError("custom failure: missing foo.h")\n')
    result = testbed.cli("build", str(project), env=hatch_env)
    _one_error(
        result,
        "with its build backend failed: RuntimeError: custom failure: missing foo.h",
        project,
    )
    out = result.stdout + result.stderr
    assert "  | RuntimeError: custom failure: missing foo.h" in out  # the whole output, above
    assert '  |   File "<string>", line 1, in <module>' in out


def test_build_with_pack_style_flags(session_dir, hatch_env, registry, debootstrap_base, podman):
    """--run-image, --env, --process, -D, --creation-time, --publish with -t, and
    --sbom-output-dir, all on one build; then the image is run. Its shell process runs on
    the debootstrap base, which has a shell."""
    project = testbed.copy_example(session_dir / "cli-flags")
    image = f"{registry.host}/cli/flags:1"
    extra = f"{registry.host}/cli/flags:extra"
    sboms = session_dir / "cli-flags-sbom"
    env = {k: v for k, v in hatch_env.items() if k != "BP_BASE_IMAGE"}
    old_umask = os.umask(0o022)
    try:
        result = testbed.cli(
            "build",
            str(project),
            "--run-image",
            debootstrap_base,
            "--image",
            image,
            "--publish",
            "-t",
            extra,
            "--env",
            "GREETING=hello there",
            "--env",
            "EQUATION=a=b",
            "--process",
            "shout=echo $GREETING; echo $EQUATION",
            "-D",
            "shout",
            "--creation-time",
            "1700000000",
            "--sbom-output-dir",
            str(sboms),
            env=env,
        )
    finally:
        os.umask(old_umask)
    assert result.returncode == 0, result.stdout + result.stderr
    archive = project / "dist/flags-1.tar"
    assert stat.S_IMODE(archive.stat().st_mode) == 0o644
    digest, _, config = testbed.read_archive_manifest(archive)
    assert config["created"] == "2023-11-14T22:13:20Z"
    assert "GREETING=hello there" in config["config"]["Env"]
    assert "EQUATION=a=b" in config["config"]["Env"]
    assert config["config"]["Entrypoint"] == ["/cnb/process/shout"]  # -D shout
    assert testbed.registry_digest(image) == digest
    assert testbed.registry_digest(extra) == digest
    assert sorted(p.name for p in sboms.iterdir()) == ["sbom.cdx.json", "sbom.spdx.json"]
    cdx = json.loads((sboms / "sbom.cdx.json").read_text())
    assert cdx["metadata"]["timestamp"] == "2023-11-14T22:13:20Z"
    assert f"SBOM: {sboms / 'sbom.cdx.json'}" in result.stdout
    loaded = podman("load", "-i", str(archive), check=False)
    assert loaded.returncode == 0, loaded.stdout + loaded.stderr
    ran = podman.attempt(image)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert ran.stdout.splitlines() == ["hello there", "a=b"]


def test_clear_cache_rebuilds_every_layer_to_the_same_digest(session_dir, hatch_env):
    project = testbed.copy_example(session_dir / "cli-clear-cache")
    first = testbed.cli("build", str(project), env=hatch_env)
    assert first.returncode == 0, first.stdout + first.stderr
    with (project / "src" / "example_service" / "server.py").open("a") as f:
        f.write("# an edit: the next build is not up to date\n")
    warm = testbed.cli("build", str(project), env=hatch_env)
    assert "Reusing cached dependencies layer" in warm.stdout, warm.stdout + warm.stderr
    before = testbed.read_archive_manifest(project / ARCHIVE)[0]
    cleared = testbed.cli("build", str(project), "--clear-cache", env=hatch_env)
    out = cleared.stdout + cleared.stderr
    assert cleared.returncode == 0, out
    assert "Cache cleared: every layer is built afresh" in out
    for reuse in ("Reusing cached", "(cached)", "Restored", "reusable layer"):
        assert reuse not in out, out
    assert testbed.read_archive_manifest(project / ARCHIVE)[0] == before


def test_sbom_command_writes_flat_file_names(example_build, hatch_env, session_dir):
    project, _ = example_build
    out = session_dir / "cli-sbom-out"
    result = testbed.cli("sbom", f"oci-archive:{project / ARCHIVE}", "-o", str(out), env=hatch_env)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["sbom.cdx.json", "sbom.spdx.json"]
    spdx = json.loads((out / "sbom.spdx.json").read_text())
    assert spdx["spdxVersion"] == "SPDX-2.3"


def test_unreachable_base_names_the_setting_and_the_offline_transports(session_dir, hatch_env):
    """What a machine without Docker Hub meets with the default base: a closed port here."""
    project = testbed.copy_example(session_dir / "cli-unreachable-base")
    result = testbed.cli(
        "build", str(project), "--base-image", "127.0.0.1:1/python:3.11-slim", env=hatch_env
    )
    _one_error(result, "cannot reach registry 127.0.0.1:1", project)
    for named in ("base-image", "BP_BASE_IMAGE", "oci-layout:PATH", "oci-archive:PATH"):
        assert named in result.stderr, named
