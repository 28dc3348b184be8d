"""A corpus of real open-source projects from PyPI, none written here (``tests/corpus.py``):
each built by the route its backend's users take, loaded into podman and run as uid 1000.

| project | build backend | route |
|---|---|---|
| black | hatchling + hatch-vcs + hatch-fancy-pypi-readme | ``hatch build -t image`` |
| pyflakes | setuptools, ``setup.py`` only | ``python -m build -C image=true`` |
| yamllint | setuptools, PEP 621 | ``python -m build -C image=true`` |
| isort | poetry-core | ``buildpacks build`` |
| typer | pdm-backend with a build hook (``pdm_build.py``) | ``buildpacks build`` |
| docutils | flit-core, dynamic version | ``buildpacks build`` |
| markupsafe | setuptools with a C extension | ``buildpacks build`` |
| radicale | setuptools ``setup.py``, a web service, an extra | ``buildpacks build``, HTTP |
| pypiserver | an application: only a Procfile and requirements.txt | ``buildpacks build``, HTTP |
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import testbed
from tests.corpus import CASES, PYFLAKES

pytestmark = pytest.mark.e2e


def built(name: str, session_dir: Path, hatch_env: dict[str, str], podman) -> str:
    """Build the corpus project ``name`` by its route and load its image; the output."""
    case = CASES[name]
    root = case.make(session_dir / f"corpus-{name}")
    result = case.build(root, hatch_env)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "Traceback" not in out, out
    assert case.archive(root).is_file(), out
    podman("load", "-i", str(case.archive(root)))
    return out


def run_version(podman, image: str, *args: str) -> str:
    """The image run as a user would, as uid 1000, with ``args`` given to its process."""
    result = podman.attempt(image, *args)
    assert result.returncode == 0, result.stdout + result.stderr
    # The default base has no coreutils: the image's Python tells the uid.
    user = podman.attempt(image, "-c", "import os; print(os.getuid())", entrypoint="python")
    assert user.stdout.strip() == "1000", user.stdout + user.stderr
    return result.stdout + result.stderr


def serving(podman, image: str, name: str, *args: str, path: str) -> bytes:
    """The body the image answers at ``path`` when run with ``args`` (``PORT`` set)."""
    port = testbed.free_port()
    podman("rm", "-f", name, check=False)
    podman(
        "run", "-d", "--name", name, *testbed.RUN_FLAGS, "-e", f"PORT={port}", image,
        *(arg.replace("{port}", str(port)) for arg in args),
    )  # fmt: skip
    try:
        status, body = testbed.wait_for_http(f"http://127.0.0.1:{port}{path}")
        assert status == 200
        return body
    finally:
        podman("rm", "-f", "-t", "2", name, check=False)


def test_black_hatchling_with_vcs_and_readme_plugins(session_dir, hatch_env, podman):
    out = built("black", session_dir, hatch_env, podman)
    assert "Python 3.11 (from base image debian-packages:bookworm)" in out, out  # the suite's
    assert "black, 24.10.0" in run_version(podman, "black:24.10.0", "--version")


def test_pyflakes_setuptools_setup_py_only(session_dir, hatch_env, podman):
    built("pyflakes", session_dir, hatch_env, podman)
    assert "3.2.0" in run_version(podman, "pyflakes:3.2.0", "--version")


def test_yamllint_setuptools_pep621(session_dir, hatch_env, podman):
    built("yamllint", session_dir, hatch_env, podman)
    assert "yamllint 1.35.1" in run_version(podman, "yamllint:1.35.1", "--version")
    # It lints a file, through its C-accelerated PyYAML dependency installed for the image.
    check = podman.attempt("yamllint:1.35.1", "-d", "relaxed", "/etc/os-release")
    assert check.returncode in (0, 1), check.stdout + check.stderr


def test_isort_poetry_core(session_dir, hatch_env, podman):
    out = built("isort", session_dir, hatch_env, podman)
    assert "Python 3.11 (from base image debian-packages:bookworm)" in out, out  # the suite's
    assert "VERSION 5.13.2" in run_version(podman, "isort:5.13.2", "--version")


def test_typer_pdm_backend_with_build_hook(session_dir, hatch_env, podman):
    built("typer", session_dir, hatch_env, podman)
    assert "0.16.0" in run_version(podman, "typer:0.16.0", "--version")


def test_docutils_flit_core_dynamic_version(session_dir, hatch_env, podman):
    built("docutils", session_dir, hatch_env, podman)
    assert "0.21.2" in run_version(podman, "docutils:0.21.2", "--version")


def test_markupsafe_c_extension(session_dir, hatch_env, debootstrap_base, podman):
    # Its process (python -c '...<b>...') is a shell command: built on the debootstrap base.
    env = {**hatch_env, "BP_BASE_IMAGE": debootstrap_base}
    built("markupsafe", session_dir, env, podman)
    out = run_version(podman, "markupsafe:3.0.2")
    assert "_speedups.cpython-311-x86_64-linux-gnu.so" in out, out
    assert "&lt;b&gt;" in out, out


def test_radicale_web_service_with_an_extra(session_dir, hatch_env, podman):
    """A CalDAV server, with its ``bcrypt`` extra asked for by ``BP_EXTRAS``: it serves HTTP
    as uid 1000 and has bcrypt's compiled module."""
    built("radicale", session_dir, hatch_env, podman)
    assert "3.2.3" in run_version(podman, "radicale:3.2.3", "--version")
    check = podman.attempt(
        "radicale:3.2.3", "-c", "import bcrypt; print(bcrypt.__version__)", entrypoint="python"
    )
    assert check.returncode == 0, check.stdout + check.stderr
    body = serving(
        podman, "radicale:3.2.3", "corpus-radicale",
        "--server-hosts", "127.0.0.1:{port}", "--auth-type", "none",
        "--storage-filesystem-folder", "/tmp/collections",
        path="/.web/",
    )  # fmt: skip
    assert b"Radicale" in body


def test_pypiserver_procfile_application(session_dir, hatch_env, debootstrap_base, podman):
    # Its Procfile's ${PORT:-8080} needs a shell: built on the debootstrap base, which has one.
    env = {**hatch_env, "BP_BASE_IMAGE": debootstrap_base}
    out = built("pypiserver", session_dir, env, podman)
    assert "not pinned" in out, out  # pypiserver's own dependencies are resolved at build time
    body = serving(
        podman, "corpus-pypiserver:latest", "corpus-pypiserver", path="/simple/pyflakes/"
    )
    assert PYFLAKES.filename in body.decode()
