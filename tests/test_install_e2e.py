"""The README's install instructions, followed as a newcomer would: a release build with
scripts/release.sh, then the command line installed from that wheel (and from a VCS URL), and
Hatch, ``python -m build`` and ``uv build`` finding the plugin there; each then builds an image.
Nothing of the test setup's own plugin wheel is used (no UV_OVERRIDE, no PIP_FIND_LINKS of it)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests import testbed

pytestmark = pytest.mark.e2e

VERSION = re.search(
    r'__version__ = "(.+)"', (testbed.REPO / "buildpacks" / "__init__.py").read_text()
)[1]  # type: ignore[index]
WHEEL = f"python_buildpacks-{VERSION}-py3-none-any.whl"
SETUPTOOLS_APP = Path(__file__).parent / "projects" / "setuptools-app"


@pytest.fixture(scope="module")
def wheels(session_dir) -> Path:
    """``bash scripts/release.sh DIR``, as the README says."""
    out = session_dir / "install-wheels"
    result = subprocess.run(
        ["bash", str(testbed.REPO / "scripts" / "release.sh"), str(out)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(p.name for p in out.iterdir() if p.name != ".gitignore") == [
        WHEEL,
        f"python_buildpacks-{VERSION}.tar.gz",
    ]
    assert f"python-buildpacks {VERSION}" in result.stdout
    return out


@pytest.fixture(scope="module")
def newcomer_env(session_dir, base_image) -> dict[str, str]:
    """A user's environment: no plugin wheel planted, fresh uv and Hatch data, and the
    default base assembled from Debian packages (Docker Hub is out of reach here, as the
    README's note on bases says)."""
    env = testbed.clean_env(
        UV_CACHE_DIR=str(session_dir / "install-uv-cache"),
        HATCH_DATA_DIR=str(session_dir / "install-hatch-data"),
        UV_TOOL_DIR=str(session_dir / "install-uv-tools"),
        UV_TOOL_BIN_DIR=str(session_dir / "install-bin"),
        BP_BASE_IMAGE=base_image,
        BP_CACHE_DIR=testbed.seeded_cache(session_dir / "install-cache"),
    )
    for key in ("UV_OVERRIDE", "PIP_FIND_LINKS", "UV_FIND_LINKS", "VIRTUAL_ENV"):
        env.pop(key, None)
    return env


def run(args: list[str], env: dict[str, str], cwd: Path | None = None):
    result = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_release_build_takes_its_version_from_one_place(wheels):
    import zipfile

    metadata = zipfile.ZipFile(wheels / WHEEL).read(
        f"python_buildpacks-{VERSION}.dist-info/METADATA"
    )
    assert f"\nVersion: {VERSION}\n" in metadata.decode()
    pyproject = (testbed.REPO / "pyproject.toml").read_text()
    assert "\nversion =" not in pyproject  # not written twice


def test_command_line_from_the_wheel_with_uv_tool_install(wheels, newcomer_env, session_dir):
    uv = str(testbed.BIN / "uv")
    run([uv, "tool", "install", "--find-links", str(wheels), "python-buildpacks"], newcomer_env)
    buildpacks = session_dir / "install-bin" / "buildpacks"
    assert run([str(buildpacks), "--version"], newcomer_env).stdout.strip() == (
        f"buildpacks {VERSION}"
    )
    project = testbed.copy_example(session_dir / "install-cli")
    run([str(buildpacks), "build", str(project)], newcomer_env)
    assert (project / "dist" / "example-service-0.1.0.tar").is_file()


def test_command_line_from_a_vcs_url(newcomer_env, session_dir):
    """The repository by a ``git+`` URL; a local clone stands for the remote here."""
    clone = session_dir / "install-remote"
    subprocess.run(
        ["git", "clone", "-q", "--no-local", str(testbed.REPO), str(clone)],
        check=True,
        capture_output=True,
    )
    env = {
        **newcomer_env,
        "UV_TOOL_DIR": str(session_dir / "install-vcs-tools"),
        "UV_TOOL_BIN_DIR": str(session_dir / "install-vcs-bin"),
    }
    uv = str(testbed.BIN / "uv")
    run([uv, "tool", "install", f"python-buildpacks @ git+{clone.as_uri()}"], env)
    buildpacks = session_dir / "install-vcs-bin" / "buildpacks"
    assert run([str(buildpacks), "--version"], env).stdout.strip() == f"buildpacks {VERSION}"


def test_hatch_finds_the_plugin_with_uv_find_links(wheels, newcomer_env, session_dir):
    project = testbed.copy_example(session_dir / "install-hatch")
    env = {**newcomer_env, "UV_FIND_LINKS": str(wheels)}
    result = run([str(testbed.BIN / "hatch"), "build", "-t", "image"], env, cwd=project)
    assert "Archive:" in result.stdout + result.stderr
    assert (project / "dist" / "example-service-0.1.0.tar").is_file()


def test_python_m_build_finds_the_backend_with_pip_find_links(wheels, newcomer_env, session_dir):
    project = session_dir / "install-setuptools"
    shutil.copytree(SETUPTOOLS_APP, project)
    env = {**newcomer_env, "PIP_FIND_LINKS": str(wheels)}
    run([sys.executable, "-m", "build", "-C", "image=true", str(project)], env)
    assert (project / "dist" / "setup-app-2.4.1.tar").is_file()


def test_uv_build_finds_the_backend_with_find_links(wheels, newcomer_env, session_dir):
    project = session_dir / "install-setuptools-uv"
    shutil.copytree(SETUPTOOLS_APP, project)
    uv = str(testbed.BIN / "uv")
    run([uv, "build", "--find-links", str(wheels), "-C", "image=true", str(project)], newcomer_env)
    assert (project / "dist" / "setup-app-2.4.1.tar").is_file()


def _assert_editable(python: Path, project: Path, env: dict[str, str]) -> None:
    """The installed package is the project's source: an edit shows without reinstalling."""
    code = "import setup_app; print(setup_app.__file__); print(setup_app.__version__)"
    first = run([str(python), "-c", code], env).stdout.split()
    assert first[0] == str(project / "src" / "setup_app" / "__init__.py")
    init = project / "src" / "setup_app" / "__init__.py"
    init.write_text(re.sub(r'__version__ = ".*"', '__version__ = "9.9.9"', init.read_text()))
    assert run([str(python), "-c", code], env).stdout.split()[1] == "9.9.9"


def test_pip_install_editable_through_the_setuptools_wrapper(wheels, newcomer_env, session_dir):
    project = session_dir / "editable-pip"
    shutil.copytree(SETUPTOOLS_APP, project)
    venv = session_dir / "editable-pip-venv"
    run([sys.executable, "-m", "venv", str(venv)], newcomer_env)
    env = {**newcomer_env, "PIP_FIND_LINKS": str(wheels)}
    run([str(venv / "bin" / "pip"), "install", "-q", "-e", str(project)], env)
    _assert_editable(venv / "bin" / "python", project, env)


def test_uv_pip_install_editable_through_the_setuptools_wrapper(wheels, newcomer_env, session_dir):
    project = session_dir / "editable-uv"
    shutil.copytree(SETUPTOOLS_APP, project)
    venv = session_dir / "editable-uv-venv"
    uv = str(testbed.BIN / "uv")
    run([uv, "venv", "-q", "--python", sys.executable, str(venv)], newcomer_env)
    python = venv / "bin" / "python"
    install = [uv, "pip", "install", "--python", str(python), "--find-links", str(wheels)]
    run([*install, "-e", str(project)], newcomer_env)
    _assert_editable(python, project, newcomer_env)
