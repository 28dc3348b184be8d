"""The up-to-date check against forced full builds: after every change to real projects, the
image an up-to-date-checked build gives (skipped or built) has the digest a forced full
build of the same tree gives.

Two real Hatch projects live in one git repository (a monorepo): ``app1`` takes its version
from ``../../VERSION.py``, outside its root, and ``app2`` from a ``code`` version source
that reads an environment variable. Both are built in-process by the real ``image`` target
(hatchling's wheel builder, the core lifecycle, the local Debian base); the forced build is
``hatch build --clean``'s path, which never consults the check.

``UPTODATE_SEED=<n>`` replays a run of the randomised test; each run prints its seed.
"""

from __future__ import annotations

import gzip
import io
import os
import random
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from buildpacks import uptodate
from hatch_buildpacks.builder import ImageBuilder
from tests import testbed

pytestmark = pytest.mark.e2e

STEPS = 200
TOKEN = "tok-3f9a1c77e2b54d"
PADDING = "# padding: "
PYPROJECT = """\
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "{name}"
dynamic = ["version"]
description = "{description}"
readme = "README.md"
requires-python = ">=3.11"

[project.scripts]
{name} = "{name}:main"

[tool.hatch.version]
{version}

[tool.hatch.build.targets.wheel]
packages = ["src/{name}"]
"""
VERSIONS = {
    "app1": 'path = "../../VERSION.py"',
    "app2": 'source = "code"\npath = "src/app2/_version.py"',
}


class Counted(ImageBuilder):
    """The ``image`` target, noting whether it ran the full build, and whether its wheel
    was the last one patched (``buildpacks.wheelpatch``)."""

    built = False
    patched = False

    def _build(self, directory: Path) -> Path:
        self.built = True
        info = self.app.display_info

        def note(message: str = "", **kwargs: object) -> None:
            self.patched |= message.startswith("Building the wheel from the last one")
            info(message, **kwargs)

        self.app.display_info = note  # type: ignore[method-assign]
        return super()._build(directory)


@dataclass
class Bed:
    """A git repository holding the two projects, and the environment builds see."""

    repo: Path
    env: dict[str, str]
    added: list[Path] = field(default_factory=list)
    counter: int = 0
    patched: int = 0

    def root(self, name: str) -> Path:
        return self.repo / "services" / name

    def git(self, *args: str) -> None:
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
            cwd=self.repo,
            check=True,
            capture_output=True,
        )

    def build(self, name: str, *, forced: bool = False) -> tuple[bool, str]:
        """(ran the full build, image digest) of one build of ``name``: checked into
        ``dist``, or forced (``--clean``) into ``forced``. Counts patched wheels."""
        root = self.root(name)
        out = root / ("forced" if forced else "dist")
        saved = dict(os.environ)
        os.environ.clear()
        os.environ.update(self.env)
        try:
            builder = Counted(str(root))
            options = {"clean": True} if forced else {}
            [archive] = builder.build(directory=str(out), versions=["standard"], **options)
        finally:
            os.environ.clear()
            os.environ.update(saved)
        digest = testbed.read_archive_manifest(Path(archive))[0]
        self.patched += builder.patched
        return builder.built, digest

    def same_as_forced(self, name: str) -> tuple[bool, str]:
        """Build ``name`` checked, then forced; assert both give one image."""
        built, digest = self.build(name)
        forced_built, forced = self.build(name, forced=True)
        assert forced_built
        assert digest == forced, f"{name}: checked build gave {digest}, a full build {forced}"
        return built, digest


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def private_base(base_layout: str, directory: Path) -> str:
    """The session's base layout as a layout of this test's own, its blobs shared: the check
    watches a layout's index.json, which other processes on the machine may touch."""
    layout, tag = base_layout.removeprefix("oci-layout:").rsplit(":", 1)
    directory.mkdir()
    for name in ("index.json", "oci-layout"):
        shutil.copyfile(Path(layout) / name, directory / name)
    (directory / "blobs").symlink_to(Path(layout) / "blobs")
    return f"oci-layout:{directory}:{tag}"


def make_bed(tmp_path: Path, base_layout: str) -> Bed:
    repo = tmp_path / "repo"
    write(repo / ".gitignore", "*.log\nforced/\ndist/\n")
    write(repo / "VERSION.py", '__version__ = "1.0.0"\n')
    for name, version in VERSIONS.items():
        root = repo / "services" / name
        write(
            root / "pyproject.toml",
            PYPROJECT.format(name=name, version=version, description="first"),
        )
        write(root / "README.md", f"# {name}\n")
        write(root / ".python-version", "3.11\n")  # the local base's
        write(
            root / "src" / name / "__init__.py",
            f"def main():\n    print('hello')\n\n{PADDING}aaaaaaaa\n",
        )
        write(root / "src" / name / "data.txt", f"data\n{PADDING}aaaaaaaa\n")
        write(root / "src" / name / "secret.txt", TOKEN + "\n")
    write(
        repo / "services" / "app2" / "src" / "app2" / "_version.py",
        'import os\n\n__version__ = "2.0." + os.environ.get("APP2_LOCAL", "0")\n'
        f"{PADDING}aaaaaaaa\n",
    )
    bed = Bed(
        repo,
        testbed.clean_env(
            BP_BASE_IMAGE=private_base(base_layout, tmp_path / "base"),
            BP_CACHE_DIR=str(tmp_path / "cache"),
        ),
    )
    bed.git("init", "-q", "-b", "main")
    bed.git("add", "-A")
    bed.git("commit", "-q", "-m", "first")
    return bed


@pytest.fixture
def bed(tmp_path: Path, base_layout: str) -> Iterator[Bed]:
    yield make_bed(tmp_path, base_layout)


def image_text(archive: Path) -> bytes:
    """Every file's content in every layer of the image in ``archive``, concatenated."""
    _, manifest, _ = testbed.read_archive_manifest(archive)
    found = []
    with tarfile.open(archive) as outer:
        for layer in manifest["layers"]:
            blob = outer.extractfile("blobs/" + layer["digest"].replace(":", "/"))
            assert blob is not None
            with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob.read()))) as inner:
                for member in inner:
                    if member.isfile():
                        found.append(inner.extractfile(member).read())  # type: ignore[union-attr]
    return b"".join(found)


def archive_of(bed: Bed, name: str) -> Path:
    return next((bed.root(name) / "dist").glob("*.tar"))


# The four cases of issue 11, each once, explicitly.


def test_a_version_file_outside_the_root_is_watched(bed):
    assert bed.same_as_forced("app1")[0]
    _, first = bed.same_as_forced("app1")
    write(bed.repo / "VERSION.py", '__version__ = "1.0.1"\n')
    built, bumped = bed.same_as_forced("app1")
    assert built and bumped != first


def test_a_file_an_ancestor_gitignore_now_excludes_leaves_the_image(bed):
    bed.same_as_forced("app1")
    assert TOKEN.encode() in image_text(archive_of(bed, "app1"))
    assert bed.build("app1")[0] is False  # up to date
    with (bed.repo / ".gitignore").open("a") as f:
        f.write("secret.txt\n")
    built, _ = bed.same_as_forced("app1")
    assert built
    assert TOKEN.encode() not in image_text(archive_of(bed, "app1"))


def test_a_code_version_source_reading_the_environment_is_watched(bed):
    _, first = bed.same_as_forced("app2")
    assert bed.build("app2")[0] is False
    bed.env["APP2_LOCAL"] = "7"
    built, changed = bed.same_as_forced("app2")
    assert built and changed != first


def rewrite_keeping_size_and_mtime(how: str, path: Path, text: str, scratch: Path) -> None:
    """Put ``text`` (as long as the file's content) in ``path`` with its old modification
    time, as ``tar`` extraction, ``rsync --inplace -t`` or ``touch -r`` leave it."""
    st = path.stat()
    assert len(text.encode()) == st.st_size
    if how == "tar":
        staged = scratch / path.name
        write(staged, text)
        os.utime(staged, ns=(st.st_atime_ns, st.st_mtime_ns))
        subprocess.run(
            ["tar", "--format=posix", "-cf", str(scratch / "t.tar"), "-C", str(scratch), path.name],
            check=True,
        )
        subprocess.run(["tar", "-xf", str(scratch / "t.tar"), "-C", str(path.parent)], check=True)
    elif how == "inplace":  # what rsync --inplace -t does: write over, then set the times
        with path.open("r+") as f:
            f.write(text)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    else:
        reference = scratch / "reference"
        write(reference, "")
        os.utime(reference, ns=(st.st_atime_ns, st.st_mtime_ns))
        path.write_text(text)
        subprocess.run(["touch", "-r", str(reference), str(path)], check=True)
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns) == (st.st_size, st.st_mtime_ns)


@pytest.mark.parametrize("racy_window", [True, False], ids=["racy-window", "ctime-only"])
@pytest.mark.parametrize("how", ["tar", "inplace", "touch-r"])
def test_a_file_rewritten_with_the_same_size_and_mtime_is_rebuilt(
    bed, tmp_path, monkeypatch, how, racy_window
):
    if not racy_window:  # no content read: the change time alone must tell
        monkeypatch.setattr(uptodate, "RACY_NS", 0)
    source = bed.root("app1") / "src" / "app1" / "__init__.py"
    _, first = bed.same_as_forced("app1")
    assert bed.build("app1")[0] is False
    text = source.read_text().replace("hello", "HELLO")
    rewrite_keeping_size_and_mtime(how, source, text, tmp_path)
    assert source.read_text() == text
    built, changed = bed.same_as_forced("app1")
    assert built and changed != first


# The randomised sequence.


def mutations(bed: Bed) -> dict[str, Callable[[random.Random], None]]:
    """Changes a developer makes, each a function of the random source."""

    def source(rng: random.Random) -> Path:
        name = rng.choice(sorted(VERSIONS))
        package = bed.root(name) / "src" / name
        return rng.choice([*sorted(package.glob("*.py")), package / "data.txt"])

    def edit(rng: random.Random) -> None:
        path = source(rng)
        with path.open("a") as f:
            f.write(f"# edit {rng.randrange(10**6)}\n")

    def rewrite_in_place(rng: random.Random) -> None:
        # One letter of the file's padding comment changed: the code still runs.
        path = source(rng)
        data = bytearray(path.read_bytes())
        at = data.index(PADDING.encode()) + len(PADDING) + rng.randrange(8)
        data[at] = ord(rng.choice("abcdefgh"))
        st = path.stat()
        with path.open("r+b") as f:
            f.write(bytes(data))
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))

    def touch(rng: random.Random) -> None:
        os.utime(source(rng))

    def ancestor_gitignore(rng: random.Random) -> None:
        path = bed.repo / ".gitignore"
        lines = path.read_text().splitlines()
        pattern = rng.choice(["secret.txt", "data.txt", "extra_*.py"])
        lines = [x for x in lines if x != pattern] if pattern in lines else [*lines, pattern]
        path.write_text("\n".join(lines) + "\n")

    def project_gitignore(rng: random.Random) -> None:
        # A .gitignore in the project hides the repository's from hatchling.
        path = bed.root(rng.choice(sorted(VERSIONS))) / ".gitignore"
        if path.exists():
            path.unlink()
        else:
            path.write_text(rng.choice(["*.log\n", "secret.txt\n", "*.log\ndata.txt\n"]))

    def version_outside(rng: random.Random) -> None:
        write(bed.repo / "VERSION.py", f'__version__ = "1.0.{rng.randrange(4)}"\n')

    def version_inside(rng: random.Random) -> None:
        path = bed.root("app2") / "src" / "app2" / "_version.py"
        text = path.read_text()
        minor = rng.randrange(3)
        path.write_text(text.replace(text.split('"')[1], f"2.{minor}."))

    def env_version(rng: random.Random) -> None:
        if "APP2_LOCAL" in bed.env and rng.random() < 0.5:
            del bed.env["APP2_LOCAL"]
        else:
            bed.env["APP2_LOCAL"] = str(rng.randrange(3))

    def env_epoch(rng: random.Random) -> None:
        if "SOURCE_DATE_EPOCH" in bed.env:
            del bed.env["SOURCE_DATE_EPOCH"]
        else:
            bed.env["SOURCE_DATE_EPOCH"] = str(1_700_000_000 + rng.randrange(2))

    def env_unrelated(rng: random.Random) -> None:
        bed.env["UNRELATED_SETTING"] = str(rng.randrange(10**6))

    def add_file(rng: random.Random) -> None:
        name = rng.choice(sorted(VERSIONS))
        bed.counter += 1
        kind = rng.choice(["debug-{}.log", "extra_{}.py", "notes-{}.txt"])
        path = bed.root(name) / "src" / name / kind.format(bed.counter)
        path.write_text(f"# {TOKEN} {bed.counter}\n{PADDING}aaaaaaaa\n")
        bed.added.append(path)

    def remove_file(rng: random.Random) -> None:
        if bed.added:
            bed.added.pop(rng.randrange(len(bed.added))).unlink(missing_ok=True)

    def readme(rng: random.Random) -> None:
        path = bed.root(rng.choice(sorted(VERSIONS))) / "README.md"
        path.write_text(path.read_text() + f"line {rng.randrange(100)}\n")

    def description(rng: random.Random) -> None:
        name = rng.choice(sorted(VERSIONS))
        write(
            bed.root(name) / "pyproject.toml",
            PYPROJECT.format(
                name=name, version=VERSIONS[name], description=rng.choice(["first", "second"])
            ),
        )

    def procfile(rng: random.Random) -> None:
        path = bed.root(rng.choice(sorted(VERSIONS))) / "Procfile"
        if path.exists():
            path.unlink()
        else:
            path.write_text("web: python -c 'print(1)'\n")

    def commit(rng: random.Random) -> None:
        bed.git("add", "-A")
        bed.git("commit", "-q", "--allow-empty", "-m", f"step {rng.randrange(10**6)}")

    def nothing(rng: random.Random) -> None:
        pass

    return {f.__name__: f for f in [
        edit, rewrite_in_place, touch, ancestor_gitignore, project_gitignore, version_outside,
        version_inside, env_version, env_epoch, env_unrelated, add_file, remove_file, readme,
        description, procfile, commit, nothing,
    ]}  # fmt: skip


def test_checked_builds_equal_forced_full_builds_over_random_changes(tmp_path, base_layout):
    seed = int(os.environ.get("UPTODATE_SEED") or random.SystemRandom().randrange(2**32))
    print(f"UPTODATE_SEED={seed}")
    rng = random.Random(seed)
    bed = make_bed(tmp_path, base_layout)
    changes = mutations(bed)
    for name in sorted(VERSIONS):
        bed.same_as_forced(name)
    skipped_after_nothing = []
    done: list[str] = []
    ran: list[bool] = []
    for step in range(STEPS):
        change = rng.choice(sorted(changes))
        changes[change](rng)
        done.append(change)
        for name in sorted(VERSIONS):
            try:
                built, _ = bed.same_as_forced(name)
            except AssertionError as e:
                raise AssertionError(
                    f"UPTODATE_SEED={seed}, step {step}, after {done[-5:]}: {e}"
                ) from None
            ran.append(built)
            if change == "nothing":
                skipped_after_nothing.append(not built)
    print(
        f"{len(ran)} checked builds: {sum(ran)} ran ({bed.patched} of them with the last "
        f"wheel patched), {len(ran) - sum(ran)} skipped"
    )
    # The check does skip: a step that changes nothing finds every image up to date.
    assert skipped_after_nothing and all(skipped_after_nothing), f"UPTODATE_SEED={seed}"
    # And a source edit alone patches the last wheel, which gave the full build's image.
    assert bed.patched, f"UPTODATE_SEED={seed}"
    assert len(done) >= 200
    shutil.rmtree(tmp_path / "repo")


# The same check on the command line's and the setuptools backend's routes, whose backend is
# not known: keyed on the wheel it built (or a source application's files) and the config.


def cli_build(
    root: Path, out: Path, overrides: dict[str, object] | None = None
) -> tuple[bool, str]:
    """(ran the full build, image digest) of ``buildpacks build`` (its core, in-process)."""
    from buildpacks import frontend

    lines: list[str] = []
    result = frontend.build_project(root, out, overrides or {}, lines.append)
    assert testbed.read_archive_manifest(result.archive)[0] == result.digest
    return "===> DETECTING" in lines, result.digest


@pytest.mark.parametrize("shape", ["hatchling", "source-application"])
def test_the_command_line_skips_only_what_a_full_build_would_give_again(
    bed, monkeypatch, tmp_path, shape
):
    for name, value in bed.env.items():
        if name.startswith("BP_"):
            monkeypatch.setenv(name, value)
    if shape == "hatchling":
        root = bed.root("app1")
        source = root / "src" / "app1" / "__init__.py"
    else:
        root = tmp_path / "plain"
        write(root / "app.py", "print('hello')\n")
        write(root / "lib" / "helper.py", "def main():\n    print('hello')\n")
        write(root / "Procfile", "web: python app.py\n")
        write(root / ".python-version", "3.11\n")
        source = root / "lib" / "helper.py"

    def forced() -> str:
        # Outside the project: a source application's image holds every other directory.
        shutil.rmtree(tmp_path / "forced", ignore_errors=True)
        monkeypatch.setenv("BP_CACHE_DIR", str(tmp_path / "forced-cache"))  # no record
        try:
            return cli_build(root, tmp_path / "forced")[1]
        finally:
            monkeypatch.setenv("BP_CACHE_DIR", bed.env["BP_CACHE_DIR"])

    ran, first = cli_build(root, root / "dist")
    assert ran
    assert cli_build(root, root / "dist") == (False, first)
    # A command-line flag is part of the inputs.
    ran, flagged = cli_build(root, root / "dist", {"env": {"GREETING": "hi"}})
    assert ran and flagged != first
    assert cli_build(root, root / "dist", {"env": {"GREETING": "hi"}}) == (False, flagged)
    # Rewritten in place, same size and modification time.
    text = source.read_text().replace("hello", "HELLO")
    rewrite_keeping_size_and_mtime("inplace", source, text, tmp_path)
    ran, rewritten = cli_build(root, root / "dist")
    assert ran and rewritten not in (first, flagged)
    assert rewritten == forced()
    assert cli_build(root, root / "dist") == (False, rewritten)


SETUPTOOLS_PYPROJECT = """\
[build-system]
requires = ["setuptools>=65"]
build-backend = "setuptools_buildpacks.build_meta"

[project]
name = "tool-app"
version = "1.0"
requires-python = ">=3.11"

[project.scripts]
tool-app = "tool_app:main"
"""


def test_the_setuptools_backend_skips_an_up_to_date_image(tmp_path, base_layout):
    root = tmp_path / "tool-app"
    write(root / "pyproject.toml", SETUPTOOLS_PYPROJECT)
    write(root / ".python-version", "3.11\n")
    source = root / "src" / "tool_app" / "__init__.py"
    write(source, "def main():\n    print('hello')\n")
    # setuptools stamps the wheel's entries with the files' times (egg-info is rewritten on
    # every build) unless SOURCE_DATE_EPOCH is set.
    env = testbed.clean_env(
        BP_BASE_IMAGE=private_base(base_layout, tmp_path / "base"),
        BP_CACHE_DIR=str(tmp_path / "cache"),
        SOURCE_DATE_EPOCH="1700000000",
    )

    def build() -> tuple[bool, str]:
        # Without isolation: an isolated build runs in a new environment each time, whose
        # code the check cannot know to be the same, so it always runs in full.
        command = [sys.executable, "-m", "build", "--wheel", "--no-isolation", "-C", "image=true"]
        result = subprocess.run(
            [*command, str(root)], env=env, capture_output=True, text=True, check=False
        )
        out = result.stdout + result.stderr
        assert result.returncode == 0, out
        digest = testbed.read_archive_manifest(root / "dist" / "tool-app-1.0.tar")[0]
        assert f"Digest: {digest}" in out
        return "is up to date" not in out, digest

    ran, first = build()
    assert ran
    assert build() == (False, first)
    source.write_text(source.read_text().replace("hello", "HELLO"))
    ran, edited = build()
    assert ran and edited != first
    assert build() == (False, edited)
