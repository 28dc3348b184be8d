"""Every common project shape builds and runs: setuptools with setup.cfg and a dynamic
version (``python -m build -C image=true``), poetry-core with poetry.lock and a plain
requirements.txt application with a Procfile (``buildpacks build``); ``buildpacks config``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests import testbed

pytestmark = pytest.mark.e2e

PROJECTS = Path(__file__).parent / "projects"


def copy_project(name: str, destination: Path) -> Path:
    shutil.copytree(PROJECTS / name, destination)
    return destination


def serve_and_get(podman, image: str, name: str) -> dict:
    port = testbed.free_port()
    podman("rm", "-f", name, check=False)
    podman.serve(image, port, name)
    try:
        status, body = testbed.wait_for_http(f"http://127.0.0.1:{port}/")
        assert status == 200
        return json.loads(body)
    finally:
        podman("rm", "-f", "-t", "2", name, check=False)


def test_setuptools_project_with_python_m_build(session_dir, hatch_env, podman):
    project = copy_project("setuptools-app", session_dir / "setuptools-app")
    wheelhouse = Path(hatch_env["PIP_FIND_LINKS"])
    env = {**hatch_env, "PIP_FIND_LINKS": str(wheelhouse)}
    plain = subprocess.run(
        [sys.executable, "-m", "build", str(project)], env=env, capture_output=True, text=True
    )
    assert plain.returncode == 0, plain.stdout + plain.stderr
    assert sorted(p.name for p in (project / "dist").iterdir()) == [
        "setup_app-2.4.1-py3-none-any.whl",
        "setup_app-2.4.1.tar.gz",
    ]  # setuptools, unchanged
    shutil.rmtree(project / "dist")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "build",
            "-C",
            "image=true",
            "-C",
            "image-image=setup-app:2.4.1",
            str(project),
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "Python 3.11 (from base image)" in out  # BP_BASE_IMAGE: the base decides
    assert (project / "dist" / "setup-app-2.4.1.tar").is_file()
    podman("load", "-i", str(project / "dist" / "setup-app-2.4.1.tar"))
    assert serve_and_get(podman, "setup-app:2.4.1", "setuptools-app") == {
        "name": "setup-app",
        "version": "2.4.1",
    }


def test_setuptools_backend_reports_a_bad_setting(session_dir, hatch_env):
    project = copy_project("setuptools-app", session_dir / "setuptools-bad")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "build",
            "--wheel",
            "-C",
            "image=true",
            "-C",
            "image-base-imag=x",
            str(project),
        ],
        env=hatch_env,
        capture_output=True,
        text=True,
    )
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert "error: unknown setting 'base-imag'; did you mean 'base-image'?" in out
    assert "Traceback" not in out
    assert not list((project / "dist").glob("*.tar"))


def test_poetry_project_with_poetry_lock(session_dir, hatch_env, podman):
    project = copy_project("poetry-app", session_dir / "poetry-app")
    result = testbed.cli("build", str(project), env=hatch_env)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    # The default base's suite decides, allowed by Poetry's python = "~3.11".
    assert "Python 3.11 (from base image debian-packages:bookworm)" in out
    assert "Dependencies locked by poetry.lock" in out
    podman("load", "-i", str(project / "dist" / "poetry-app-0.3.0.tar"))
    assert serve_and_get(podman, "poetry-app:0.3.0", "poetry-app") == {
        "name": "poetry-app",
        "version": "0.3.0",
    }


def test_requirements_app_with_a_procfile_and_no_pyproject(
    session_dir, hatch_env, debootstrap_base, podman
):
    project = copy_project("plain-app", session_dir / "plain-app")
    (project / ".env").write_text("SECRET=do-not-ship\n")
    (project / ".git").mkdir()
    (project / ".git" / "config").write_text("[core]\n")
    # Its Procfile's $PORT needs a shell: built on the debootstrap base, which has one.
    env = {**hatch_env, "BP_BASE_IMAGE": debootstrap_base}
    result = testbed.cli("build", str(project), env=env)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "Dependencies locked by requirements.txt" in out
    podman("load", "-i", str(project / "dist" / "plain-app-latest.tar"))
    assert serve_and_get(podman, "plain-app:latest", "plain-app") == {
        "name": "plain-app",
        "cwd": "/workspace",
    }
    listing = podman.run("plain-app:latest", "-c", "ls -A /workspace", entrypoint="/bin/sh").split()
    assert sorted(listing) == [".python-version", "Procfile", "app.py", "requirements.txt"]


def test_config_command_shows_values_and_origins(session_dir, hatch_env):
    project = copy_project("poetry-app", session_dir / "poetry-config")
    pyproject = project / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text() + '\n[tool.buildpacks]\nimage = "from-pyproject:1"\n'
        'index-url = "https://user:s3cret@pypi.example.invalid/simple"\n'
    )
    env = {**hatch_env, "BP_PULL_POLICY": "never", "BP_IMAGE": "from-env:2"}
    result = testbed.cli("config", str(project), "--image", "from-flag:3", env=env)
    assert result.returncode == 0, result.stderr
    lines = {line.split("=")[0].strip(): line for line in result.stdout.splitlines()}
    assert lines["image"].endswith("'from-flag:3'  (command line)")
    assert lines["pull-policy"].endswith("'never'  (BP_PULL_POLICY)")
    assert "(pyproject.toml [tool.buildpacks])" in lines["index-url"]
    assert "s3cret" not in result.stdout
    # BP_BASE_IMAGE: the default base's suite decides.
    assert lines["python-version"].endswith("'3.11'  (base image debian-packages:bookworm)")


def test_setuptools_project_with_uv_build(session_dir, hatch_env):
    project = copy_project("setuptools-app", session_dir / "setuptools-uv")
    # uv takes the build backend from the wheelhouse; its own cache is fresh, since uv keys
    # find-links wheels by file name and a rebuilt wheel of the same version would be missed.
    env = {**hatch_env, "UV_CACHE_DIR": str(session_dir / "uv-build-cache")}
    wheelhouse = hatch_env["PIP_FIND_LINKS"]
    uv = str(testbed.BIN / "uv")
    result = subprocess.run(
        [uv, "build", "--find-links", wheelhouse, "-C", "image=true", str(project)],
        env=env,
        capture_output=True,
        text=True,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    names = sorted(p.name for p in (project / "dist").iterdir() if p.name != ".gitignore")
    assert names == [
        "setup-app-2.4.1.tar",
        "setup_app-2.4.1-py3-none-any.whl",
        "setup_app-2.4.1.tar.gz",
    ]
    _, _, config = testbed.read_archive_manifest(project / "dist" / "setup-app-2.4.1.tar")
    assert config["config"]["Entrypoint"] == ["/cnb/process/setup-app"]
