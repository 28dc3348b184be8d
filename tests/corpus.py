"""The corpus of real open-source projects from PyPI that the end-to-end tests build and
``bench/corpus.py`` times: each released sdist pinned by version and SHA-256 (cached between
runs), given only what its users would add to use us, built by the route its backend's users
take."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests import testbed

SDIST_CACHE = Path(
    os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"), "python-buildpacks-testbed", "sdists"
)
FILES = "https://files.pythonhosted.org/packages/"
SETUPTOOLS_WRAPPER = (
    '[build-system]\nrequires = ["setuptools>=68", "python-buildpacks"]\n'
    'build-backend = "setuptools_buildpacks.build_meta"\n'
)
# What a user pins for repeatable builds: uv resolves the dependencies these releases leave
# unpinned as of a fixed date, so a later release of one cannot break the corpus.
ENV = {"UV_EXCLUDE_NEWER": "2025-07-01T00:00:00Z"}


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


def _append(path: Path, text: str) -> None:
    with path.open("a") as f:
        f.write(text)


def _hatch_target(root: Path) -> None:
    _append(
        root / "pyproject.toml",
        '\n[tool.hatch.build.targets.image]\ndependencies = ["python-buildpacks"]\n',
    )


def _setup_py_wrapper(root: Path) -> None:
    assert not (root / "pyproject.toml").exists()
    (root / "pyproject.toml").write_text(SETUPTOOLS_WRAPPER)


def _pep621_wrapper(root: Path) -> None:
    pyproject = (root / "pyproject.toml").read_text()
    backend = 'build-backend = "setuptools.build_meta"'
    requires = 'requires = ["setuptools >= 61"]'
    assert backend in pyproject and requires in pyproject
    pyproject = pyproject.replace(backend, 'build-backend = "setuptools_buildpacks.build_meta"')
    pyproject = pyproject.replace(requires, 'requires = ["setuptools >= 61", "python-buildpacks"]')
    (root / "pyproject.toml").write_text(pyproject)


def _library_process(root: Path) -> None:
    # A library has no entry point of its own: its user names the process to run.
    _append(
        root / "pyproject.toml",
        "\n[tool.buildpacks.processes]\n"
        "check = \"python -c 'import markupsafe._speedups as s, markupsafe as m; "
        'print(s.__file__, m.escape(\\"<b>\\"))\'"\n',
    )


def _procfile_app(root: Path) -> None:
    """A deployment directory with no pyproject.toml: the service pinned in
    requirements.txt, started by its Procfile, serving the packages beside it."""
    (root / "packages").mkdir(parents=True)
    (root / "packages" / PYFLAKES.filename).write_bytes(fetch(PYFLAKES).read_bytes())
    (root / "requirements.txt").write_text("pypiserver==2.3.2\n")
    (root / "Procfile").write_text(
        "web: pypi-server run --host 127.0.0.1 --port ${PORT:-8080} /workspace/packages\n"
    )


@dataclass(frozen=True)
class Case:
    """One project of the corpus: where it comes from, what its user adds, how it is built."""

    name: str
    backend: str
    route: str  # "hatch", "setuptools" (python -m build -C image=true) or "cli"
    sdist: Sdist | None  # None: a directory ``prepare`` makes
    prepare: Callable[[Path], None] = lambda root: None
    edit: str = ""  # a source file a warm build changes
    env: tuple[tuple[str, str], ...] = ()
    image: str = ""

    def make(self, directory: Path) -> Path:
        """The project's tree under ``directory``, ready to build."""
        if self.sdist is None:
            root = directory / f"corpus-{self.name}"
        else:
            directory.mkdir(parents=True, exist_ok=True)
            root = unpack(self.sdist, directory)
        self.prepare(root)
        return root

    def build(self, root: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        env = {**env, **ENV, **dict(self.env)}
        if self.route == "hatch":
            return testbed.hatch_build(root, env)
        if self.route == "setuptools":
            command = [sys.executable, "-m", "build", "-C", "image=true", str(root)]
            return subprocess.run(command, env=env, capture_output=True, text=True)
        return testbed.cli("build", str(root), env=env)

    def archive(self, root: Path) -> Path:
        return root / "dist" / f"{self.image.replace(':', '-')}.tar"


CASES = {
    case.name: case
    for case in (
        Case("black", "hatchling + hatch-vcs + hatch-fancy-pypi-readme", "hatch", BLACK,
             _hatch_target, "src/black/__init__.py", image="black:24.10.0"),
        Case("pyflakes", "setuptools, setup.py only", "setuptools", PYFLAKES,
             _setup_py_wrapper, "pyflakes/__init__.py", image="pyflakes:3.2.0"),
        Case("yamllint", "setuptools, PEP 621", "setuptools", YAMLLINT,
             _pep621_wrapper, "yamllint/__init__.py", image="yamllint:1.35.1"),
        Case("isort", "poetry-core", "cli", ISORT, edit="isort/__init__.py",
             image="isort:5.13.2"),
        Case("typer", "pdm-backend with a build hook", "cli", TYPER, edit="typer/__init__.py",
             image="typer:0.16.0"),
        Case("docutils", "flit-core, dynamic version", "cli", DOCUTILS,
             edit="docutils/__init__.py", image="docutils:0.21.2"),
        Case("markupsafe", "setuptools with a C extension", "cli", MARKUPSAFE,
             _library_process, "src/markupsafe/__init__.py", image="markupsafe:3.0.2"),
        Case("radicale", "setuptools setup.py, a web service, an extra", "cli", RADICALE,
             edit="radicale/__init__.py", env=(("BP_EXTRAS", "bcrypt"),),
             image="radicale:3.2.3"),
        Case("pypiserver", "an application: Procfile and requirements.txt", "cli", None,
             _procfile_app, "Procfile", image="corpus-pypiserver:latest"),
    )
}  # fmt: skip
