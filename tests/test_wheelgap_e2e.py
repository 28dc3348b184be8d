"""The wheel-gap check in real builds: an arm64 image on an assembled Debian base whose pinned
dependency has no arm64 wheel fails with one line naming the nearest version, and nothing in
dist/; on the host's platform the same pins build, the check runs when the dependencies
layer is built and never on a warm edit."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests import testbed

pytestmark = pytest.mark.e2e

REQUIREMENTS = "lxml==4.9.1\nsix==1.17.0\n"


def plain_app(directory: Path, requirements: str) -> Path:
    directory.mkdir(parents=True)
    (directory / "Procfile").write_text("web: python3 app.py\n")
    (directory / "app.py").write_text("import lxml.etree\nprint(lxml.etree.LXML_VERSION)\n")
    (directory / ".python-version").write_text("3.11\n")
    (directory / "requirements.txt").write_text(requirements)
    return directory


def error_lines(result) -> list[str]:
    out = result.stdout + result.stderr
    assert "Traceback" not in out, out
    return [line for line in out.splitlines() if line.startswith("error:")]


def test_arm64_pin_without_an_arm64_wheel_fails_naming_the_nearest(session_dir):
    project = plain_app(session_dir / "wheelgap-arm64", REQUIREMENTS)
    cache = session_dir / "wheelgap-arm64-cache"
    env = testbed.clean_env(
        BP_CACHE_DIR=str(cache),
        BP_BASE_IMAGE="debian-packages:bookworm",
        BP_PLATFORM="linux/arm64",
    )
    result = testbed.cli("build", str(project), env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert error_lines(result) == [
        "error: no wheel for linux/arm64 (CPython 3.11, aarch64-manylinux_2_36): lxml 4.9.1 "
        "(nearest with one: 4.9.2); dependencies are installed from wheels only, never built "
        "from source: pin versions that ship wheels for every platform of the image, or choose "
        "another base"
    ]
    assert list((project / "dist").glob("*")) == []
    assert list(cache.rglob("*.partial")) == []
    assert list((cache / "layers").glob("*.json")) == []  # no layer built, none recorded


def test_host_platform_builds_and_a_warm_edit_never_runs_the_check(session_dir, base_image):
    project = plain_app(session_dir / "wheelgap-amd64", REQUIREMENTS)
    cache = session_dir / "wheelgap-amd64-cache"
    env = testbed.clean_env(BP_CACHE_DIR=testbed.seeded_cache(cache), BP_BASE_IMAGE=base_image)
    cold = testbed.cli("build", str(project), env=env)
    assert cold.returncode == 0, cold.stdout + cold.stderr
    pages = cache / "index-pages"
    assert len(list(pages.glob("*.json"))) == 2  # lxml's and six's pages: the check ran
    shutil.rmtree(pages)
    (project / "app.py").write_text("print('edited')\n")
    # Offline and with no page cached: a check would say so; the cached layer needs none.
    warm = testbed.cli("build", str(project), "--pull-policy", "never", env=env)
    out = warm.stdout + warm.stderr
    assert warm.returncode == 0, out
    assert "Reusing cached dependencies layer" in out
    assert "not checked" not in out and not pages.exists(), out
    assert error_lines(warm) == []
