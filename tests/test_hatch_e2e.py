"""End to end with the real Hatch CLI: build the example project's image, load it into
podman, run it and talk to it over HTTP; reproducibility and layer-by-change-rate."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests import testbed

pytestmark = pytest.mark.e2e

ARCHIVE = "dist/example-service-0.1.0.tar"
APP_LAYER = "/layers/python-buildpacks_application/app"
VENV = "/layers/python-buildpacks_dependencies/venv"


def test_build_prints_phases_plan_reference_and_digest(example_build):
    project, result = example_build
    out = result.stdout + result.stderr
    for phase in ("DETECTING", "ANALYZING", "BUILDING", "EXPORTING"):
        assert f"===> {phase}" in out
    assert "python-buildpacks/dependencies" in out
    assert "Python 3.11 (from base image)" in out
    digest, _, _ = testbed.read_archive_manifest(project / ARCHIVE)
    assert "Image: example-service:0.1.0" in out
    assert f"Digest: {digest}" in out
    assert sorted(p.name for p in (project / "dist").iterdir()) == ["example-service-0.1.0.tar"]


def test_image_runs_in_podman_and_answers_http(example_build, podman):
    project, _ = example_build
    loaded = podman("load", "-i", str(project / ARCHIVE))
    assert "example-service:0.1.0" in loaded.stdout + loaded.stderr
    port = testbed.free_port()
    podman("rm", "-f", "example-http", check=False)
    podman.serve("example-service:0.1.0", port, "example-http")
    try:
        status, body = testbed.wait_for_http(f"http://127.0.0.1:{port}/")
        assert status == 200
        assert json.loads(body) == {"name": "example-service", "version": "0.1.0"}
    finally:
        podman("rm", "-f", "-t", "2", "example-http", check=False)


def test_image_config_is_production_shaped(example_build):
    project, _ = example_build
    _, manifest, config = testbed.read_archive_manifest(project / ARCHIVE)
    container = config["config"]
    assert container["User"] == "1000:1000"
    assert container["WorkingDir"] == "/workspace"
    assert container["Entrypoint"] == ["/cnb/process/example-service"]
    assert "Cmd" not in container
    env = dict(item.split("=", 1) for item in container["Env"])
    assert env["PATH"].startswith(f"/cnb/process:{VENV}/bin:{APP_LAYER}/bin:")
    assert env["VIRTUAL_ENV"] == VENV
    labels = container["Labels"]
    assert labels["org.opencontainers.image.title"] == "example-service"
    assert labels["org.opencontainers.image.version"] == "0.1.0"
    assert labels["org.opencontainers.image.licenses"] == "MIT"
    assert labels["org.opencontainers.image.source"] == "https://example.invalid/example-service"
    assert labels["org.opencontainers.image.description"].startswith("A small web service")
    # the base's (core, libraries, Python, data, written files), dependencies, application,
    # process-types, config, SBOM
    assert testbed.first_own_layer(config) == 5
    assert len(manifest["layers"]) == len(config["rootfs"]["diff_ids"]) == 5 + 5


def test_venv_uses_the_base_interpreter_and_has_no_host_traces(example_build, podman):
    project, _ = example_build
    podman("load", "-i", str(project / ARCHIVE))
    out = podman.run(
        "example-service:0.1.0",
        "-c",
        "import sys, flask, example_service, markupsafe._speedups as s;"
        "print(sys.prefix); print(sys.base_prefix); print(s.__file__)",
        entrypoint="python",
    )
    prefix, base_prefix, speedups = out.split()
    assert prefix == VENV
    assert base_prefix == "/usr"
    assert speedups.startswith(f"{VENV}/lib/python3.11/site-packages/markupsafe/")
    # The compiled extension is the one for the image's Python, not the host's.
    assert speedups.endswith("cpython-311-x86_64-linux-gnu.so")
    host_paths = (str(Path.home()), "/tmp/", os.path.realpath(testbed.REPO))
    user_owned = ("workspace", f"{APP_LAYER[1:]}/var", "home/cnb")
    with tarfile.open(project / ARCHIVE) as tar:
        _, manifest, config = testbed.read_archive_manifest(project / ARCHIVE)
        for layer in manifest["layers"][testbed.first_own_layer(config) :]:  # ours
            blob = tar.extractfile("blobs/" + layer["digest"].replace(":", "/"))
            with tarfile.open(fileobj=blob, mode="r:gz") as inner:
                for member in inner:
                    assert not member.name.endswith(".pyc"), member.name
                    # The image user owns where apps write; code and the venv stay root's.
                    owned = member.name.startswith(user_owned)
                    owner = (1000, 1000) if owned else (0, 0)
                    assert (member.uid, member.gid) == owner, member.name
                    assert not member.uname and not member.gname
                    if member.isfile() and "/bin/" in member.name:
                        head = inner.extractfile(member).read(200)  # type: ignore[union-attr]
                        if head.startswith(b"#!"):
                            shebang = head.split(b"\n")[0].decode()
                            assert shebang == f"#!{VENV}/bin/python", (member.name, shebang)
                    if member.name.endswith(("pyvenv.cfg", ".pth")):
                        text = inner.extractfile(member).read().decode()  # type: ignore[union-attr]
                        assert not any(p in text for p in host_paths), (member.name, text)


def test_process_links_start_the_process(example_build, podman):
    project, _ = example_build
    podman("load", "-i", str(project / ARCHIVE))
    out = podman.run(
        "example-service:0.1.0",
        "-c",
        "import os; print(os.readlink('/cnb/process/example-service'))",
        entrypoint="python",
    )
    assert out.strip() == f"{APP_LAYER}/bin/example-service"


def _layers(project: Path) -> list[str]:
    _, manifest, _ = testbed.read_archive_manifest(project / ARCHIVE)
    return [layer["digest"] for layer in manifest["layers"]]


def test_two_copies_with_different_mtimes_give_the_same_digest(session_dir, hatch_env):
    first = testbed.copy_example(session_dir / "repro-a")
    second = testbed.copy_example(session_dir / "repro-b")
    for i, path in enumerate(sorted(second.rglob("*"))):
        os.utime(path, (1_000_000_000 + i, 1_000_000_000 + i))
    digests = []
    for n, project in enumerate((first, second)):
        # Separate caches (each with the base as a first build left it): the second build
        # really reinstalls and recompresses every layer of its own.
        env = {**hatch_env, "BP_CACHE_DIR": testbed.seeded_cache(session_dir / f"repro-{n}")}
        result = testbed.hatch_build(project, env)
        assert result.returncode == 0, result.stdout + result.stderr
        digests.append(testbed.read_archive_manifest(project / ARCHIVE)[0])
    assert digests[0] == digests[1]
    assert (first / ARCHIVE).read_bytes() == (second / ARCHIVE).read_bytes()


def test_source_edit_changes_only_the_application_layer(session_dir, hatch_env):
    project = testbed.copy_example(session_dir / "edit")
    assert testbed.hatch_build(project, hatch_env).returncode == 0
    before = _layers(project)
    app = testbed.first_own_layer(testbed.read_archive_manifest(project / ARCHIVE)[2]) + 1
    server = project / "src" / "example_service" / "server.py"
    server.write_text(server.read_text().replace('return "ok"', 'return "ok!"'))
    result = testbed.hatch_build(project, hatch_env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Reusing cached dependencies layer" in result.stdout + result.stderr
    after = _layers(project)
    changed = [i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b]
    assert changed == [app]  # base's, dependencies, *application*, processes


def test_base_image_pulled_from_a_registry(session_dir, hatch_env, registry, base_layout, podman):
    testbed.push_layout(base_layout, registry, "base/debian-python:bookworm")
    project = testbed.copy_example(session_dir / "from-registry")
    env = {
        **hatch_env,
        "BP_BASE_IMAGE": f"{registry.host}/base/debian-python:bookworm",
        "BP_CACHE_DIR": str(session_dir / "registry-cache"),
    }
    result = testbed.hatch_build(project, env)
    assert result.returncode == 0, result.stdout + result.stderr
    log = registry.log.read_text()
    assert re.search(r'"GET /v2/base/debian-python/blobs/sha256:', log)
    podman("load", "-i", str(project / ARCHIVE))
    out = podman.run(
        "example-service:0.1.0", "-c", "import flask; print(flask.__name__)", entrypoint="python"
    )
    assert out.strip() == "flask"


def test_unchanged_project_is_up_to_date_and_each_input_change_rebuilds(
    session_dir, hatch_env, base_layout
):
    project = testbed.copy_example(session_dir / "uptodate")
    layout, tag = base_layout.removeprefix("oci-layout:").rsplit(":", 1)
    base = session_dir / "uptodate-base"  # a copy of the base, to rewrite
    shutil.copytree(layout, base)
    env = {
        **hatch_env,
        "BP_BASE_IMAGE": f"oci-layout:{base}:{tag}",
        "BP_CACHE_DIR": str(session_dir / "uptodate-cache"),
    }
    archive = project / ARCHIVE

    def build(**extra: str) -> tuple[bool, str]:
        """(skipped as up to date, the image digest) of one ``hatch build -t image``."""
        result = testbed.hatch_build(project, env, extra)
        out = result.stdout + result.stderr
        assert result.returncode == 0, out
        skipped = "is up to date" in out
        assert skipped != ("===> DETECTING" in out), out
        assert archive.is_file()
        digest = testbed.read_archive_manifest(archive)[0]
        assert f"Digest: {digest}" in out
        return skipped, digest

    def git(*args: str) -> str:
        command = ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args]
        return subprocess.run(
            command, cwd=project, check=True, capture_output=True, text=True
        ).stdout

    skipped, first = build()
    assert not skipped
    written = archive.stat().st_mtime_ns
    assert build() == (True, first)
    assert archive.stat().st_mtime_ns == written  # not even rewritten

    server = project / "src" / "example_service" / "server.py"
    server.write_text(server.read_text() + "# edited\n")
    skipped, edited = build()
    assert not skipped and edited != first
    assert build() == (True, edited)

    assert build(BP_PULL_POLICY="never") == (False, edited)  # a setting changed: checked
    assert build(BP_PULL_POLICY="never") == (True, edited)

    git("init", "-q", "-b", "main")
    git("add", "-A")
    git("commit", "-q", "-m", "first")
    skipped, committed = build()
    assert not skipped and committed != edited  # the revision label
    assert build() == (True, committed)
    git("commit", "-q", "--allow-empty", "-m", "second")
    skipped, recommitted = build()
    revision = testbed.read_archive_manifest(archive)[2]["config"]["Labels"][
        "org.opencontainers.image.revision"
    ]
    assert not skipped and revision == git("rev-parse", "HEAD").strip()

    index = base / "index.json"
    index.write_text(index.read_text())  # the base's layout rewritten: looked at again
    assert build() == (False, recommitted)

    archive.unlink()
    assert build() == (False, recommitted)
    assert build() == (True, recommitted)
