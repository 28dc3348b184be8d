"""A corpus of real open-source projects from PyPI, none written here: each is downloaded as
its released sdist (pinned by version and SHA-256, cached between runs), given only what its
users would add to use us, built by the route its backend's users take, loaded into podman
and run.

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
| pypiserver | an application: only a Procfile and requirements.txt | ``buildpacks build`` |
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import testbed

pytestmark = pytest.mark.e2e

SDIST_CACHE = Path(
    os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"), "python-buildpacks-testbed", "sdists"
)
FILES = "https://files.pythonhosted.org/packages/"
SETUPTOOLS_WRAPPER = (
    '[build-system]\nrequires = ["setuptools>=68", "python-buildpacks"]\n'
    'build-backend = "setuptools_buildpacks.build_meta"\n'
)


@dataclass(frozen=True)
class Sdist:
    name: str
    version: str
    path: str  # under files.pythonhosted.org/packages/
    sha256: str

    @property
    def filename(self) -> str:
        return self.path.rsplit("/", 1)[-1]


def fetch(sdist: Sdist) -> Path:
    """The sdist, downloaded once and checked against its pinned SHA-256."""
    target = SDIST_CACHE / sdist.filename
    if not target.exists() or hashlib.sha256(target.read_bytes()).hexdigest() != sdist.sha256:
        SDIST_CACHE.mkdir(parents=True, exist_ok=True)
        with urllib.request.urlopen(FILES + sdist.path, timeout=60) as response:
            data = response.read()
        assert hashlib.sha256(data).hexdigest() == sdist.sha256, f"{sdist.filename}: bad hash"
        partial = target.with_suffix(f".{os.getpid()}.part")
        partial.write_bytes(data)
        partial.replace(target)
    return target


def unpack(sdist: Sdist, directory: Path) -> Path:
    """The sdist's source tree in ``directory`` (as a user's checkout of the release)."""
    with tarfile.open(fetch(sdist)) as tar:
        tar.extractall(directory, filter="data")
    (root,) = directory.iterdir()
    return root


BLACK = Sdist(
    "black",
    "24.10.0",
    "d8/0d/cc2fb42b8c50d80143221515dd7e4766995bd07c56c9a3ed30baf080b6dc/black-24.10.0.tar.gz",
    "846ea64c97afe3bc677b761787993be4991810ecc7a4a937816dd6bddedc4875",
)
PYFLAKES = Sdist(
    "pyflakes",
    "3.2.0",
    "57/f9/669d8c9c86613c9d568757c7f5824bd3197d7b1c6c27553bc5618a27cce2/pyflakes-3.2.0.tar.gz",
    "1c61603ff154621fb2a9172037d84dca3500def8c8b630657d1701f026f8af3f",
)
YAMLLINT = Sdist(
    "yamllint",
    "1.35.1",
    "da/06/d8cee5c3dfd550cc0a466ead8b321138198485d1034130ac1393cc49d63e/yamllint-1.35.1.tar.gz",
    "7a003809f88324fd2c877734f2d575ee7881dd9043360657cc8049c809eba6cd",
)
ISORT = Sdist(
    "isort",
    "5.13.2",
    "87/f9/c1eb8635a24e87ade2efce21e3ce8cd6b8630bb685ddc9cdaca1349b2eb5/isort-5.13.2.tar.gz",
    "48fdfcb9face5d58a4f6dde2e72a1fb8dcaf8ab26f95ab49fab84c2ddefb0109",
)
TYPER = Sdist(
    "typer",
    "0.16.0",
    "c5/8c/7d682431efca5fd290017663ea4588bf6f2c6aad085c7f108c5dbc316e70/typer-0.16.0.tar.gz",
    "af377ffaee1dbe37ae9440cb4e8f11686ea5ce4e9bae01b84ae7c63b87f1dd3b",
)
DOCUTILS = Sdist(
    "docutils",
    "0.21.2",
    "ae/ed/aefcc8cd0ba62a0560c3c18c33925362d46c6075480bfa4df87b28e169a9/docutils-0.21.2.tar.gz",
    "3a6b18732edf182daa3cd12775bbb338cf5691468f91eeeb109deff6ebfa986f",
)
MARKUPSAFE = Sdist(
    "markupsafe",
    "3.0.2",
    "b2/97/5d42485e71dfc078108a86d6de8fa46db44a1a9295e89c5d6d4a06e23a62/markupsafe-3.0.2.tar.gz",
    "ee55d3edf80167e48ea11a923c7386f4669df67d7994554387f84e7d8b0a2bf0",
)
RADICALE = Sdist(
    "radicale",
    "3.2.3",
    "08/c9/4c5beb7d6fc8d8dce2fd07d9c4209388270337a80be4c3907e513bec88c2/radicale-3.2.3.tar.gz",
    "12414266520b958e709165579654969c434909b6fa644b9e18e613400ca5fd1e",
)


@pytest.fixture
def corpus_env(hatch_env: dict[str, str]) -> dict[str, str]:
    """What a user pins for repeatable builds: uv resolves the dependencies these releases
    leave unpinned as of a fixed date, so a later release of one cannot break the corpus."""
    return {**hatch_env, "UV_EXCLUDE_NEWER": "2025-07-01T00:00:00Z"}


def built(result: subprocess.CompletedProcess[str]) -> str:
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "Traceback" not in out, out
    return out


def load(podman, archive: Path) -> None:
    assert archive.is_file(), archive
    podman("load", "-i", str(archive))


def run_version(podman, image: str, *args: str) -> str:
    """The image run as a user would, as uid 1000, with ``args`` given to its process."""
    result = podman.attempt(image, *args)
    assert result.returncode == 0, result.stdout + result.stderr
    user = podman.attempt(image, "-u", entrypoint="id")
    assert user.stdout.strip() == "1000", user.stdout + user.stderr
    return result.stdout + result.stderr


def python_m_build(project: Path, env: dict[str, str]) -> str:
    return built(
        subprocess.run(
            [sys.executable, "-m", "build", "-C", "image=true", str(project)],
            env=env,
            capture_output=True,
            text=True,
        )
    )


def test_black_hatchling_with_vcs_and_readme_plugins(session_dir, corpus_env, podman):
    root = unpack(BLACK, session_dir / "corpus-black")
    with (root / "pyproject.toml").open("a") as f:
        f.write('\n[tool.hatch.build.targets.image]\ndependencies = ["python-buildpacks"]\n')
    out = built(testbed.hatch_build(root, corpus_env))
    assert "Python 3.11 (from base image)" in out, out
    load(podman, root / "dist" / "black-24.10.0.tar")
    assert "black, 24.10.0" in run_version(podman, "black:24.10.0", "--version")


def test_pyflakes_setuptools_setup_py_only(session_dir, corpus_env, podman):
    root = unpack(PYFLAKES, session_dir / "corpus-pyflakes")
    assert not (root / "pyproject.toml").exists()
    (root / "pyproject.toml").write_text(SETUPTOOLS_WRAPPER)
    python_m_build(root, corpus_env)
    load(podman, root / "dist" / "pyflakes-3.2.0.tar")
    assert "3.2.0" in run_version(podman, "pyflakes:3.2.0", "--version")


def test_yamllint_setuptools_pep621(session_dir, corpus_env, podman):
    root = unpack(YAMLLINT, session_dir / "corpus-yamllint")
    pyproject = (root / "pyproject.toml").read_text()
    backend = 'build-backend = "setuptools.build_meta"'
    assert backend in pyproject
    pyproject = pyproject.replace(backend, 'build-backend = "setuptools_buildpacks.build_meta"')
    (root / "pyproject.toml").write_text(
        pyproject.replace(
            'requires = ["setuptools >= 61"]',
            'requires = ["setuptools >= 61", "python-buildpacks"]',
        )
    )
    python_m_build(root, corpus_env)
    load(podman, root / "dist" / "yamllint-1.35.1.tar")
    assert "yamllint 1.35.1" in run_version(podman, "yamllint:1.35.1", "--version")
    # It lints a file, through its C-accelerated PyYAML dependency installed for the image.
    check = podman.attempt("yamllint:1.35.1", "-d", "relaxed", "/etc/os-release")
    assert check.returncode in (0, 1), check.stdout + check.stderr


def test_isort_poetry_core(session_dir, corpus_env, podman):
    root = unpack(ISORT, session_dir / "corpus-isort")
    out = built(testbed.cli("build", str(root), env=corpus_env))
    assert "Python 3.11 (from base image)" in out, out
    load(podman, root / "dist" / "isort-5.13.2.tar")
    assert "VERSION 5.13.2" in run_version(podman, "isort:5.13.2", "--version")


def test_typer_pdm_backend_with_build_hook(session_dir, corpus_env, podman):
    root = unpack(TYPER, session_dir / "corpus-typer")
    built(testbed.cli("build", str(root), env=corpus_env))
    load(podman, root / "dist" / "typer-0.16.0.tar")
    assert "0.16.0" in run_version(podman, "typer:0.16.0", "--version")


def test_docutils_flit_core_dynamic_version(session_dir, corpus_env, podman):
    root = unpack(DOCUTILS, session_dir / "corpus-docutils")
    built(testbed.cli("build", str(root), env=corpus_env))
    load(podman, root / "dist" / "docutils-0.21.2.tar")
    assert "0.21.2" in run_version(podman, "docutils:0.21.2", "--version")


def test_markupsafe_c_extension(session_dir, corpus_env, podman):
    root = unpack(MARKUPSAFE, session_dir / "corpus-markupsafe")
    # A library has no entry point of its own: its user names the process to run.
    with (root / "pyproject.toml").open("a") as f:
        f.write(
            "\n[tool.buildpacks.processes]\n"
            "check = \"python -c 'import markupsafe._speedups as s, markupsafe as m; "
            'print(s.__file__, m.escape(\\"<b>\\"))\'"\n'
        )
    built(testbed.cli("build", str(root), env=corpus_env))
    load(podman, root / "dist" / "markupsafe-3.0.2.tar")
    out = run_version(podman, "markupsafe:3.0.2")
    assert "_speedups.cpython-311-x86_64-linux-gnu.so" in out, out
    assert "&lt;b&gt;" in out, out


def test_radicale_web_service_with_an_extra(session_dir, corpus_env, podman):
    """A CalDAV server (setuptools, ``setup.py``), with its ``bcrypt`` extra asked for by
    ``BP_EXTRAS``: it serves HTTP as uid 1000 and has bcrypt's compiled module."""
    root = unpack(RADICALE, session_dir / "corpus-radicale")
    built(testbed.cli("build", str(root), env={**corpus_env, "BP_EXTRAS": "bcrypt"}))
    load(podman, root / "dist" / "radicale-3.2.3.tar")
    assert "3.2.3" in run_version(podman, "radicale:3.2.3", "--version")
    check = podman.attempt(
        "radicale:3.2.3", "-c", "import bcrypt; print(bcrypt.__version__)", entrypoint="python"
    )
    assert check.returncode == 0, check.stdout + check.stderr
    port = testbed.free_port()
    name = "corpus-radicale"
    podman("rm", "-f", name, check=False)
    podman(
        "run", "-d", "--name", name, *testbed.RUN_FLAGS, "radicale:3.2.3",
        "--server-hosts", f"127.0.0.1:{port}", "--auth-type", "none",
        "--storage-filesystem-folder", "/tmp/collections",
    )  # fmt: skip
    try:
        status, body = testbed.wait_for_http(f"http://127.0.0.1:{port}/.web/")
        assert status == 200
        assert b"Radicale" in body
    finally:
        podman("rm", "-f", "-t", "2", name, check=False)


def test_pypiserver_procfile_application(session_dir, corpus_env, podman):
    """A deployment directory with no pyproject.toml: the service pinned in
    requirements.txt, started by its Procfile, serving the packages beside it."""
    root = session_dir / "corpus-pypiserver"
    (root / "packages").mkdir(parents=True)
    (root / "packages" / PYFLAKES.filename).write_bytes(fetch(PYFLAKES).read_bytes())
    (root / "requirements.txt").write_text("pypiserver==2.3.2\n")
    (root / "Procfile").write_text(
        "web: pypi-server run --host 127.0.0.1 --port ${PORT:-8080} /workspace/packages\n"
    )
    out = built(testbed.cli("build", str(root), env=corpus_env))
    assert "not pinned" in out, out  # pypiserver's own dependencies are resolved at build time
    load(podman, root / "dist" / "corpus-pypiserver-latest.tar")
    port = testbed.free_port()
    name = "corpus-pypiserver"
    podman("rm", "-f", name, check=False)
    podman.serve("corpus-pypiserver:latest", port, name)
    try:
        status, body = testbed.wait_for_http(f"http://127.0.0.1:{port}/simple/pyflakes/")
        assert status == 200
        assert PYFLAKES.filename in body.decode()
    finally:
        podman("rm", "-f", "-t", "2", name, check=False)
