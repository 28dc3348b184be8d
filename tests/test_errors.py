"""How any failure becomes one ``error:`` line: ``buildpacks.errors.report``."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from buildpacks import cli
from buildpacks.errors import INTERRUPTED, BuildError, describe, report


def _raised(error: BaseException) -> BaseException:
    try:
        raise error
    except BaseException as e:  # kept with its traceback
        return e


def test_a_build_error_is_its_own_words_on_one_line() -> None:
    assert describe(BuildError("pyproject.toml: bad\n  key")) == "pyproject.toml: bad key"


def test_a_full_disk_names_the_file_an_unfinished_temp_file_stood_for(tmp_path: Path) -> None:
    temp = tmp_path / ".app-1.0.tar.x1y2z3.partial"
    error = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(temp))
    assert describe(error) == f"{tmp_path}/app-1.0.tar: no space left on the device"


def test_a_file_where_a_directory_goes_is_named(tmp_path: Path) -> None:
    (tmp_path / "dist").write_text("x")
    exists = FileExistsError(errno.EEXIST, "File exists", str(tmp_path / "dist"))
    assert describe(exists) == f"{tmp_path}/dist: a file is where a directory is needed"
    below = NotADirectoryError(errno.ENOTDIR, "Not a directory", str(tmp_path / "dist/a/b"))
    assert describe(below) == f"{tmp_path}/dist: a file is where a directory is needed"


def test_an_unexpected_error_says_what_and_where_and_how_to_see_more() -> None:
    line = describe(_raised(KeyError("manifests")))
    assert line.startswith("unexpected KeyError: 'manifests' (in _raised, tests/test_errors.py:")
    assert line.endswith("run with BP_DEBUG=1 for the traceback")


def test_report_prints_one_line_and_the_traceback_only_with_bp_debug() -> None:
    lines: list[str] = []
    assert report(_raised(ValueError("boom")), lines.append, {}) == 1
    assert len(lines) == 1 and lines[0].startswith("error: unexpected ValueError: boom")
    lines.clear()
    assert report(_raised(ValueError("boom")), lines.append, {"BP_DEBUG": "1"}) == 1
    assert lines[0].startswith("Traceback (most recent call last):")
    assert lines[-1].startswith("error: unexpected ValueError: boom")


def test_ctrl_c_is_one_line_and_status_130() -> None:
    lines: list[str] = []
    assert report(KeyboardInterrupt(), lines.append, {}) == INTERRUPTED == 130
    assert lines == ["error: interrupted"]


def test_cli_turns_an_unexpected_error_into_one_line(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("BP_DEBUG", raising=False)
    (tmp_path / "index.json").write_text("{}")
    assert cli.main(["inspect", f"oci-layout:{tmp_path}"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert "index.json: not an OCI image index" in err


def test_cli_usage_mistakes_are_one_line_with_status_2(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["build", "--no-such-flag"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err == (
        "error: buildpacks: unrecognized arguments: --no-such-flag (see buildpacks --help)\n"
    )
