"""Crash-safe files: a real ``buildpacks build`` killed with SIGKILL at several phases leaves
a cache the next build uses to give the clean build's digest, with no stale temp file left;
two builds share one cache directory at once; a full disk is one error line."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from buildpacks.oci.blobs import file_digest
from tests import testbed
from tests.test_blobs import biggest_blob, build_env, built_digest, plain_app

pytestmark = pytest.mark.e2e

# Lines the build prints as it enters a phase, how long after them the kill lands, and
# whether the cache starts with the base assembled (testbed.seeded_cache): while the base
# is assembled into the store from an empty cache, while the run image is read, the
# archive begun, dependencies installed, the image exported.
MARKERS = [
    ("Assembling debian-packages:bookworm", 1.0, False),
    ("===> ANALYZING", 0.03, True),
    ("===> RESTORING", 0.0, True),
    ("Installing dependencies", 0.0, True),
    ("===> EXPORTING", 0.0, True),
]


def temp_files(cache: Path, project: Path) -> list[Path]:
    """Every temp file or directory a build makes: scratch dirs, blob and archive parts,
    atomic-write parts of records."""
    return [
        *cache.glob("tmp/work-*"),
        *cache.glob("blobs/tmp/blob-*"),
        *cache.rglob(".*.partial"),
        *project.glob("dist/.*.partial"),
    ]


def start(project: Path, cache: Path, base: str, seed: bool = True) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(testbed.BIN / "buildpacks"), "build", str(project)],
        env=build_env(cache, base, seed),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its uv children die with it, as when a CI job is killed
    )


def kill_at(proc: subprocess.Popen[str], marker: str, delay: float) -> bool:
    """SIGKILL the build (and its children) ``delay`` seconds after it prints ``marker``."""
    assert proc.stdout is not None
    for line in proc.stdout:
        if marker in line:
            time.sleep(delay)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
    proc.wait()
    return False


@pytest.fixture(scope="module")
def clean_digest(base_image, tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("clean")
    project = plain_app(root / "plain-app")
    return built_digest(
        testbed.cli("build", str(project), env=build_env(root / "cache", base_image))
    )


def test_killed_builds_leave_a_usable_cache_and_no_stale_files(base_image, tmp_path, clean_digest):
    left_behind = {}
    for i, (marker, delay, seed) in enumerate(MARKERS):
        cache = tmp_path / f"cache-{i}"
        project = plain_app(tmp_path / f"round-{i}" / "plain-app")
        assert kill_at(start(project, cache, base_image, seed), marker, delay), marker
        left_behind[marker] = temp_files(cache, project)
        result = testbed.cli("build", str(project), env=build_env(cache, base_image, seed))
        assert built_digest(result) == clean_digest, marker
        assert temp_files(cache, project) == [], marker
        # The cache the killed build left serves a warm build after an edit too.
        (project / "app.py").write_text((project / "app.py").read_text() + "# edited\n")
        again = testbed.cli("build", str(project), env=build_env(cache, base_image, seed))
        built_digest(again)
        assert "Reusing cached dependencies layer" in again.stdout
    # The kills landed mid-write: the cleanup above had something to remove.
    assert any(left_behind.values()), left_behind


def test_two_builds_share_one_cache_at_once(base_image, tmp_path, clean_digest):
    cache = tmp_path / "cache"
    projects = [plain_app(tmp_path / name / "plain-app") for name in ("a", "b")]
    procs = [start(project, cache, base_image) for project in projects]
    outputs = [proc.communicate(timeout=600)[0] for proc in procs]
    for proc, out in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, out
        assert f"Digest: {clean_digest}" in out
    for project in projects:
        assert temp_files(cache, project) == []


@pytest.fixture
def small_disk(tmp_path):
    """A 24 MB tmpfs: smaller than the debootstrap base's 47 MB layer."""
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_full_disk_is_one_error_line(debootstrap_base, tmp_path, small_disk):
    # A base bigger than the disk: the debootstrap one (the assembled base and an image
    # built on it fit in 24 MB). The cache on the full disk: its layer does not fit.
    base_image = debootstrap_base
    project = plain_app(tmp_path / "plain-app")
    result = testbed.cli("build", str(project), env=build_env(small_disk / "cache", base_image))
    out = result.stdout + result.stderr
    assert result.returncode == 1
    assert "Traceback" not in out
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no space left on the device" in errors[0], out
    assert temp_files(small_disk / "cache", project) == []
    for blob in (small_disk / "cache").glob("blobs/sha256/*"):  # nothing half-stored
        assert file_digest(blob) == f"sha256:{blob.name}"
    base_layer = biggest_blob(Path(base_image.removeprefix("oci-layout:").rsplit(":", 1)[0]))
    assert not (small_disk / "cache" / "blobs" / "sha256" / base_layer.name).exists()
    # The output directory on the full disk: no archive, no part of one.
    shutil.rmtree(small_disk / "cache")
    project = plain_app(small_disk / "plain-app")
    result = testbed.cli("build", str(project), env=build_env(tmp_path / "cache", base_image))
    out = result.stdout + result.stderr
    assert result.returncode == 1
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no space left on the device" in errors[0], out
    assert "plain-app-latest.tar" in errors[0]
    assert list((project / "dist").iterdir()) == []
