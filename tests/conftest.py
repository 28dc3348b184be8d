"""Session fixtures for the end-to-end tests: each starts its real part once."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import testbed


@pytest.fixture(scope="session")
def session_dir() -> Iterator[Path]:
    path = testbed.temp_dir("bp-tests-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def base_image() -> str:
    return testbed.base_image()


@pytest.fixture(scope="session")
def hatch_env(session_dir: Path, base_image: str) -> dict[str, str]:
    """Environment for the real ``hatch``: our wheel findable, fresh Hatch data, local base."""
    wheelhouse = testbed.build_wheelhouse(session_dir / "wheelhouse")
    return testbed.clean_env(
        **testbed.plugin_env(wheelhouse),
        HATCH_DATA_DIR=str(session_dir / "hatch-data"),
        BP_BASE_IMAGE=base_image,
        BP_CACHE_DIR=str(session_dir / "cache"),
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
