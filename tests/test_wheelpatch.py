"""The last wheel patched (``buildpacks.wheelpatch``) against hatchling's own wheel builder,
in this process: the fingerprint the Hatch route takes, the wheel hatchling builds, and
every way the patch must decline (None: the caller builds in full)."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest
from hatchling.builders.wheel import WheelBuilder

from buildpacks import uptodate, wheelpatch
from hatch_buildpacks.builder import ImageBuilder


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A package with a subpackage and data files, one with a comma in its name (quoted in
    ``RECORD``)."""
    root = tmp_path / "app"
    pkg = root / "src" / "app"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("X = 1\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "mod.py").write_text("Y = 2\n")
    (pkg / "a,b.txt").write_text("comma\n")
    (root / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["hatchling"]\nbuild-backend = "hatchling.build"\n\n'
        '[project]\nname = "app"\nversion = "1.0"\n\n'
        '[tool.hatch.build.targets.wheel]\npackages = ["src/app"]\n'
    )
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000001")  # an odd second: zip keeps even
    return root


def fingerprint(root: Path) -> uptodate.Fingerprint:
    return uptodate.fingerprint(root, os.environ, ImageBuilder(str(root)).wheel_inputs())


def hatchling_wheel(root: Path, out: Path) -> Path:
    return Path(next(WheelBuilder(str(root)).build(directory=str(out), versions=["standard"])))


def kept_after_full_build(root: Path, tmp_path: Path) -> Path:
    """The record a full build leaves its wheel beside."""
    record = tmp_path / "cache" / "uptodate" / "key.json"
    record.parent.mkdir(parents=True)
    wheelpatch.keep(record, fingerprint(root), hatchling_wheel(root, tmp_path / "first"))
    return record


def rewrite(path: Path, text: str) -> None:
    """New content, and a modification time surely not the old one's."""
    before = path.stat().st_mtime_ns
    path.write_text(text)
    os.utime(path, ns=(before + 10**9, before + 10**9))


def test_the_patched_wheel_is_the_one_hatchling_builds(project: Path, tmp_path: Path):
    record = kept_after_full_build(project, tmp_path)
    rewrite(project / "src/app/sub/mod.py", "Y = 3  # edited\n")
    rewrite(project / "src/app/a,b.txt", "comma, edited\n")
    (tmp_path / "patched").mkdir()
    patched = wheelpatch.patch(record, fingerprint(project), tmp_path / "patched", print)
    assert patched is not None
    wheel, replaced = patched
    assert replaced >= 2
    full = hatchling_wheel(project, tmp_path / "full")
    assert wheel.name == full.name
    assert wheel.read_bytes() == full.read_bytes()


def test_a_racy_file_is_read_again_though_its_stats_match(project: Path, tmp_path: Path):
    record = kept_after_full_build(project, tmp_path)
    current = fingerprint(project)
    quiet = dataclasses.replace(current, recent={})
    path = str(project / "src/app/sub/mod.py")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    # The kept wheel's files were written just before it: all racy then, all read again.
    assert wheelpatch.patch(record, quiet, tmp_path / "a", print)[1] == len(current.contents)  # type: ignore[index]
    wheelpatch.keep(record, quiet, hatchling_wheel(project, tmp_path / "again"))
    racy = dataclasses.replace(current, recent={path: "sha256:0"})
    assert wheelpatch.patch(record, racy, tmp_path / "b", print)[1] == 1  # type: ignore[index]


@pytest.mark.parametrize(
    "damage", ["missing", "header", "wheel", "truncated", "shape", "mode", "recent"]
)
def test_the_patch_declines_and_leaves_nothing(damage: str, project: Path, tmp_path: Path):
    record = kept_after_full_build(project, tmp_path)
    kept = wheelpatch.kept_file(record)
    header, wheel = kept.read_bytes().split(b"\n", 1)
    module = project / "src/app/sub/mod.py"
    rewrite(module, "Y = 3\n")
    current = fingerprint(project)
    if damage == "missing":
        kept.unlink()
    elif damage == "header":
        kept.write_bytes(b"{not json\n" + wheel)
    elif damage == "wheel":  # inside RECORD's deflated bytes, which are always read
        at = wheel.rindex(b"PK\x03\x04") + 30 + len("app-1.0.dist-info/RECORD") + 4
        kept.write_bytes(header + b"\n" + wheel[:at] + b"\xff" * 8 + wheel[at + 8 :])
    elif damage == "truncated":
        kept.write_bytes(header + b"\n" + wheel[: len(wheel) // 2])
    elif damage == "shape":
        current = dataclasses.replace(current, shape="0" * 64)
    elif damage == "mode":
        module.chmod(0o755)
        current = fingerprint(project)
    elif damage == "recent":  # pyproject.toml changed within the tick: its content differs
        data = json.loads(header)
        data["recent"] = {str(project / "pyproject.toml"): "sha256:0"}
        kept.write_bytes(json.dumps(data).encode() + b"\n" + wheel)
    out = tmp_path / "out"
    out.mkdir()
    assert wheelpatch.patch(record, current, out, print) is None
    assert list(out.iterdir()) == []


def test_no_verbatim_files_without_a_reproducible_build(project: Path):
    with (project / "pyproject.toml").open("a") as f:
        f.write("reproducible = false\n")
    assert fingerprint(project).contents == {}


def test_a_version_file_and_shared_data_are_not_verbatim(project: Path):
    pyproject = project / "pyproject.toml"
    (project / "share.txt").write_text("shared\n")
    (project / "src/app/__about__.py").write_text('__version__ = "1.0"\n')
    pyproject.write_text(
        pyproject.read_text().replace('version = "1.0"', 'dynamic = ["version"]')
        + '\n[tool.hatch.build.targets.wheel.force-include]\n"share.txt" = "app/share.txt"\n'
        + '[tool.hatch.build.targets.wheel.shared-data]\n"src/app/sub/mod.py" = "mod.py"\n'
        + '[tool.hatch.version]\npath = "src/app/__about__.py"\n'
    )
    names = fingerprint(project).names
    assert names[str(project / "src/app/__init__.py")] == "app/__init__.py"
    assert names[str(project / "share.txt")] == "app/share.txt"  # forced: copied as it is
    assert str(project / "src/app/__about__.py") not in names
    assert str(project / "src/app/sub/mod.py") not in names  # also shared data


def test_no_kept_wheel_without_a_fingerprint(project: Path, tmp_path: Path):
    record = kept_after_full_build(project, tmp_path)
    assert wheelpatch.kept_shape(record) == fingerprint(project).shape
    wheelpatch.keep(record, None, tmp_path / "nowhere.whl")
    assert not wheelpatch.kept_file(record).exists()
    assert wheelpatch.kept_shape(record) is None
