"""A warm edit's wheel patched from the last one (``buildpacks.wheelpatch``), with real
parts: the command line in a subprocess and ``hatch build -t image``, hatchling installed in
this environment, the image read from the archive's layers. The proof: the patched wheel and
image are byte for byte those of a full hatchling build of the same tree; every change the
patch cannot take builds in full, and the image holds what the tree holds."""

from __future__ import annotations

import io
import json
import os
import tarfile
import zipfile
from pathlib import Path

import pytest

from tests import testbed

pytestmark = pytest.mark.e2e

# A file changed within the file system clock's tick before a build is always re-read (a
# copied tree's files are, at its first build): at least the files edited are replaced.
PATCHED = "Building the wheel from the last one, "
FULL = "Building the wheel in this process with hatchling.build (hatchling "
HATCH_FULL = "Building image "  # the Hatch route says nothing more of a full wheel
UP_TO_DATE = "is up to date: nothing it is built from has changed"
SITE = "layers/python-buildpacks_application/app/lib/python3.11/site-packages/"


def _env(hatch_env: dict[str, str], base_layout: str, cache: Path) -> dict[str, str]:
    return {**hatch_env, "BP_CACHE_DIR": testbed.seeded_cache(cache), "BP_BASE_IMAGE": base_layout}


def _build(project: Path, env: dict[str, str]) -> str:
    result = testbed.cli("build", str(project), env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _archive(project: Path) -> Path:
    """The archive the last build wrote (a new version writes another)."""
    return max((project / "dist").glob("*.tar"), key=lambda p: p.stat().st_mtime_ns)


def _digest(project: Path) -> str:
    return testbed.read_archive_manifest(_archive(project))[0]


def _kept(cache: Path) -> bytes:
    """The wheel kept by the last build (after its header line)."""
    (kept,) = (cache / "uptodate").glob("*.wheel")
    return kept.read_bytes().split(b"\n", 1)[1]


def _forget(cache: Path) -> None:
    """Remove the up-to-date records and kept wheels: the next build is a full one."""
    for path in (cache / "uptodate").iterdir():
        path.unlink()


def _image_files(project: Path) -> dict[str, tarfile.TarInfo | bytes]:
    """Every regular file of the image's layers under the application's site-packages:
    its content, the last layer's winning."""
    archive = _archive(project)
    found: dict[str, tarfile.TarInfo | bytes] = {}
    with tarfile.open(archive) as outer:
        index = json.load(outer.extractfile("index.json"))  # type: ignore[arg-type]

        def blob(digest: str) -> bytes:
            return outer.extractfile("blobs/" + digest.replace(":", "/")).read()  # type: ignore[union-attr]

        manifest = json.loads(blob(index["manifests"][0]["digest"]))
        for layer in manifest["layers"]:
            with tarfile.open(fileobj=io.BytesIO(blob(layer["digest"])), mode="r:*") as tar:
                for member in tar:
                    if member.isfile() and member.name.lstrip("/").startswith(SITE):
                        name = member.name.lstrip("/").removeprefix(SITE)
                        found[name] = tar.extractfile(member).read()  # type: ignore[union-attr]
                        found[name + ":mode"] = member
    return found


def _src_data_project(path: Path) -> Path:
    """A package under ``src/`` with a subpackage, package data and shared data."""
    pkg = path / "src" / "data_app"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "data").mkdir()
    (path / "share").mkdir()
    (pkg / "__init__.py").write_text('"""A data app."""\n\n\ndef main():\n    print("hi")\n')
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "mod.py").write_text("VALUE = 1\n")
    (pkg / "data" / "table.csv").write_text("a,b\n1,2\n")
    (path / "share" / "notes.txt").write_text("shared\n")
    (path / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["hatchling"]\nbuild-backend = "hatchling.build"\n\n'
        '[project]\nname = "data-app"\nversion = "0.1.0"\ndescription = "A data app"\n'
        'requires-python = ">=3.11"\ndependencies = []\n\n'
        '[project.scripts]\ndata-app = "data_app:main"\n\n'
        '[tool.hatch.build.targets.wheel]\npackages = ["src/data_app"]\n\n'
        '[tool.hatch.build.targets.wheel.shared-data]\n"share/notes.txt" = "share/notes.txt"\n'
    )
    return path


def _edit(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


@pytest.mark.parametrize("kind", ["example", "src-data"])
def test_a_patched_wheel_and_image_are_those_of_a_full_build(
    kind, session_dir, hatch_env, base_layout
):
    where = session_dir / f"patch-proof-{kind}"
    if kind == "example":
        project = testbed.copy_example(where)
        edited = [project / "src/example_service/server.py"]
        package = "example_service"
    else:
        project = _src_data_project(where)
        edited = [project / "src/data_app/sub/mod.py", project / "src/data_app/data/table.csv"]
        package = "data_app"
    cache = session_dir / f"patch-proof-{kind}-cache"
    env = _env(hatch_env, base_layout, cache)
    assert FULL in _build(project, env)
    for path in edited:
        _edit(path, "# edited\n" if path.suffix == ".py" else "3,4\n")
    out = _build(project, env)
    assert PATCHED in out and FULL not in out, out
    patched_wheel, patched_digest = _kept(cache), _digest(project)
    files = _image_files(project)
    for path in edited:
        name = f"{package}/{path.relative_to(project / 'src' / package)}"
        assert files[name] == path.read_bytes(), name
    # The same tree built in full by hatchling: the same wheel, byte for byte, and image.
    _forget(cache)
    out = _build(project, env)
    assert FULL in out and PATCHED not in out, out
    assert _kept(cache) == patched_wheel
    assert _digest(project) == patched_digest
    # Shared data is copied by hatchling as it is too, but under another name: not patched.
    if kind == "src-data":
        _edit(project / "share/notes.txt", "more\n")
        out = _build(project, env)
        assert FULL in out, out


def test_changes_the_patch_cannot_take_build_in_full(session_dir, hatch_env, base_layout):
    project = testbed.copy_example(session_dir / "patch-full")
    cache = session_dir / "patch-full-cache"
    env = _env(hatch_env, base_layout, cache)
    pkg = project / "src/example_service"
    assert FULL in _build(project, env)

    def full_build() -> dict[str, tarfile.TarInfo | bytes]:
        out = _build(project, env)
        assert FULL in out and PATCHED not in out, out
        return _image_files(project)

    (pkg / "extra.py").write_text("X = 1\n")  # an added file
    assert full_build()["example_service/extra.py"] == b"X = 1\n"
    (pkg / "extra.py").rename(pkg / "renamed.py")  # a renamed file
    files = full_build()
    assert files["example_service/renamed.py"] == b"X = 1\n"
    assert "example_service/extra.py" not in files
    (pkg / "renamed.py").unlink()  # a removed file
    assert "example_service/renamed.py" not in full_build()
    pyproject = project / "pyproject.toml"  # pyproject.toml edited
    pyproject.write_text(pyproject.read_text().replace("A small web service", "A web service"))
    files = full_build()
    (metadata,) = [v for k, v in files.items() if k.endswith(".dist-info/METADATA")]
    assert b"Summary: A web service, shipped" in metadata  # type: ignore[operator]
    server = pkg / "server.py"  # a mode changed
    server.chmod(0o755)
    files = full_build()
    assert files["example_service/server.py:mode"].mode & 0o111  # type: ignore[union-attr]
    with zipfile.ZipFile(io.BytesIO(_kept(cache))) as wheel:
        assert wheel.getinfo("example_service/server.py").external_attr >> 16 == 0o100755
    # The kept wheel missing, then damaged: a full build, the right image.
    _edit(server, "# one\n")
    assert PATCHED in _build(project, env)
    (kept,) = (cache / "uptodate").glob("*.wheel")
    kept.unlink()
    _edit(server, "# two\n")
    assert full_build()["example_service/server.py"] == server.read_bytes()
    data = bytearray(kept.read_bytes())
    at = data.index(b"PK\x03\x04") + 60  # inside the first entry's compressed bytes
    data[at : at + 8] = b"\xff" * 8
    kept.write_bytes(bytes(data))
    _edit(server, "# three\n")
    assert full_build()["example_service/server.py"] == server.read_bytes()
    kept.write_bytes(b"not json\n" + data)
    _edit(server, "# four\n")
    assert full_build()["example_service/server.py"] == server.read_bytes()


def test_a_version_file_is_read_not_patched(session_dir, hatch_env, base_layout):
    """``[tool.hatch.version] path``: that file's content decides the metadata, so an edit of
    it builds in full, version changed or not; an edit of another module is patched."""
    project = _src_data_project(session_dir / "patch-version")
    pyproject = project / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text().replace('version = "0.1.0"', 'dynamic = ["version"]')
        + '\n[tool.hatch.version]\npath = "src/data_app/__about__.py"\n'
    )
    about = project / "src/data_app/__about__.py"
    about.write_text('__version__ = "0.1.0"\n')
    env = _env(hatch_env, base_layout, session_dir / "patch-version-cache")
    assert FULL in _build(project, env)
    _edit(project / "src/data_app/sub/mod.py", "# edited\n")
    assert PATCHED in _build(project, env)
    about.write_text('__version__ = "0.2.0"\n')
    out = _build(project, env)
    assert FULL in out and "data-app:0.2.0" in out, out
    files = _image_files(project)
    assert files["data_app/__about__.py"] == about.read_bytes()
    assert "data_app-0.2.0.dist-info/METADATA" in files
    _edit(about, "# same version\n")
    out = _build(project, env)
    assert FULL in out, out
    assert _image_files(project)["data_app/__about__.py"] == about.read_bytes()


def test_the_hatch_route_patches_the_same_wheel_as_a_full_build(session_dir, hatch_env):
    project = testbed.copy_example(session_dir / "patch-hatch")
    cache = session_dir / "patch-hatch-cache"
    env = {**hatch_env, "BP_CACHE_DIR": testbed.seeded_cache(cache)}
    first = testbed.hatch_build(project, env)
    assert first.returncode == 0, first.stdout + first.stderr
    _edit(project / "src/example_service/server.py", "# edited\n")
    patched = testbed.hatch_build(project, env)
    assert patched.returncode == 0, patched.stdout + patched.stderr
    assert PATCHED in patched.stdout + patched.stderr, patched.stdout
    wheel, digest = _kept(cache), _digest(project)
    _forget(cache)
    full = testbed.hatch_build(project, env)
    assert full.returncode == 0, full.stdout + full.stderr
    assert PATCHED not in full.stdout + full.stderr, full.stdout
    assert _kept(cache) == wheel
    assert _digest(project) == digest
    assert os.listdir(cache / "uptodate")  # the record and the wheel are back


def test_alternating_hatch_and_the_command_line_keeps_each_routes_record(session_dir, hatch_env):
    """A developer who runs ``hatch build -t image`` and ``buildpacks build`` by turns: each
    route keeps its own record and last wheel, so a warm edit by either is patched after the
    other's build (one shared record would be the other route's every time)."""
    project = testbed.copy_example(session_dir / "patch-routes")
    cache = session_dir / "patch-routes-cache"
    env = {**hatch_env, "BP_CACHE_DIR": testbed.seeded_cache(cache)}
    server = project / "src/example_service/server.py"

    def hatch() -> str:
        result = testbed.hatch_build(project, env)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout + result.stderr

    hatch()
    assert FULL in _build(project, env)  # the command line's first build
    for n in range(2):
        _edit(server, f"# edit {n}\n")
        assert PATCHED in hatch()
        _edit(server, f"# edit {n}, again\n")
        out = _build(project, env)
        assert PATCHED in out and UP_TO_DATE not in out, out
    assert len(list((cache / "uptodate").glob("*.json"))) == 2
    assert len(list((cache / "uptodate").glob("*.wheel"))) == 2
    # Nothing edited since the command line's build: Hatch builds once (its record is of the
    # tree before that edit), the same image, which the archive holds already; then both
    # routes are up to date.
    digest = _digest(project)
    out = hatch()
    assert UP_TO_DATE not in out and "Archive unchanged" in out, out
    assert _digest(project) == digest
    assert UP_TO_DATE in hatch()
    assert UP_TO_DATE in _build(project, env)
