"""Session fixtures for the end-to-end tests: each starts its real part once."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from buildpacks.oci.model import Image
from tests import testbed


@pytest.fixture(scope="session")
def session_dir() -> Iterator[Path]:
    path = testbed.temp_dir("bp-tests-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def debian_cache(session_dir: Path) -> Image:
    """The default base assembled once for the session, into a cache that
    ``testbed.seeded_cache`` copies from: the archive is resolved and the packages
    unpacked once, not by every test that starts from an empty cache."""
    return testbed.warm_debian_cache(session_dir / "debian-warm")


@pytest.fixture(scope="session")
def base_image(debian_cache: Image) -> str:
    """The default base of the suite's builds: ``debian-packages:bookworm``."""
    return testbed.DEBIAN_BASE


@pytest.fixture(scope="session")
def base_layout(session_dir: Path, debian_cache: Image) -> str:
    """The default base as an OCI layout on disk, for tests that push a base to a registry
    or change a copy of one: the same image, layer for layer."""
    return testbed.write_layout(debian_cache, session_dir / "debian-assembled", "bookworm")


@pytest.fixture(scope="session")
def debootstrap_base() -> str:
    """The "foreign" base made by debootstrap (scripts/make-base-image.sh): one layer, a
    dpkg database, a shell."""
    return testbed.debootstrap_base()


@pytest.fixture(scope="session")
def hatch_env(session_dir: Path, base_image: str) -> dict[str, str]:
    """Environment for the real ``hatch``: our wheel findable, fresh Hatch data, the
    default base (its cache seeded, as after a first build)."""
    wheelhouse = testbed.build_wheelhouse(session_dir / "wheelhouse")
    return testbed.clean_env(
        **testbed.plugin_env(wheelhouse),
        HATCH_DATA_DIR=str(session_dir / "hatch-data"),
        BP_BASE_IMAGE=base_image,
        BP_CACHE_DIR=testbed.seeded_cache(session_dir / "cache"),
    )


@pytest.fixture(scope="session")
def podman() -> Iterator[testbed.Podman]:
    # Directly under /tmp whatever TMPDIR says: podman refuses a runroot over 50 characters.
    root = Path(tempfile.mkdtemp(prefix="bp-podman-", dir="/tmp"))
    pm = testbed.Podman(root)
    yield pm
    pm.remove()


@pytest.fixture(scope="session")
def registry(session_dir: Path) -> Iterator[testbed.Registry]:
    (session_dir / "registry").mkdir()
    reg = testbed.Registry(session_dir / "registry")
    yield reg
    reg.stop()


@pytest.fixture(scope="session")
def example_build(session_dir: Path, hatch_env: dict[str, str]):
    """The example project, built once with ``hatch build -t image``: (project, result)."""
    project = testbed.copy_example(session_dir / "example")
    result = testbed.hatch_build(project, hatch_env)
    assert result.returncode == 0, result.stdout + result.stderr
    return project, result


def pytest_sessionfinish(session: pytest.Session) -> None:
    """The build servers the suite's commands started are stopped with it, not left to
    their idle timeout (a CI job's processes end with the job)."""
    testbed.stop_build_servers()
