"""Bad input gets one clear line and a non-zero exit, no traceback, and nothing in dist/."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests import testbed

pytestmark = pytest.mark.e2e


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new))


def _no_python_version_file(project: Path) -> None:
    (project / ".python-version").unlink()


CASES = {
    "requires-python no base satisfies": (
        lambda p: (_no_python_version_file(p), _edit(p / "pyproject.toml", '">=3.11"', '">=4"')),
        {},
        # The default base's suite decides the Python: bookworm's 3.11.
        r"Python 3\.11 \(from base image debian-packages:bookworm\) is outside "
        r"requires-python '>=4'",
    ),
    "base without the Python asked for": (
        lambda p: None,
        {"BP_PYTHON_VERSION": "3.12"},
        r"has no Python 3\.12 \(found: /usr/bin/python3\.11\)",
    ),
    "dependency without a wheel for the target": (
        lambda p: (
            (p / "uv.lock").unlink(),  # unlocked: the project's dependencies are resolved
            _edit(p / "pyproject.toml", '"flask==3.1.3",', '"flask==3.1.3", "pycrypto==2.6.1",'),
        ),
        {},
        r"no wheel for linux/amd64 \(CPython 3\.11, x86_64-manylinux_2_36\): "
        r"pycrypto 2\.6\.1 \(no version has one\)",
    ),
    "no entry point": (
        lambda p: _edit(
            p / "pyproject.toml", 'example-service = "example_service.server:main"', ""
        ),
        {},
        r"no entry point: declare one as \[project.scripts\] NAME = ",
    ),
    "unknown key": (
        lambda p: _edit(
            p / "pyproject.toml", "[tool.buildpacks]", '[tool.buildpacks]\nbase-imag = "x"'
        ),
        {},
        r"unknown key \[tool.buildpacks\] 'base-imag'; did you mean 'base-image'\?",
    ),
    "project.toml not TOML": (
        lambda p: (p / "project.toml").write_text('[_\nname = "x"\n'),
        {},
        r"project.toml: invalid TOML: .*line 1",
    ),
    "project.toml of another schema": (
        lambda p: (p / "project.toml").write_text('[project]\nname = "example-service"\n'),
        {},
        r"project.toml: has no \[_\] table \(schema 0.1",
    ),
    "project.toml version contradicting pyproject": (
        lambda p: (p / "project.toml").write_text('[_]\nschema-version = "0.2"\nversion = "2.0"\n'),
        {},
        r"project.toml: \[_\] version '2.0' contradicts \[project\] version '0.1.0'",
    ),
    "key of the wrong type": (
        lambda p: _edit(
            p / "pyproject.toml", "[tool.buildpacks]", "[tool.buildpacks]\npython-version = 3.11"
        ),
        {},
        r"\[tool.buildpacks\] python-version must be a string, not float",
    ),
}


def _assert_clean_failure(
    result: subprocess.CompletedProcess[str], pattern: str, project: Path
) -> None:
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    assert "Traceback" not in out, out
    error_lines = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1, out
    assert re.search(pattern, error_lines[0]), error_lines[0]
    dist = project / "dist"
    assert not dist.exists() or not any(dist.iterdir()), list(dist.iterdir())


@pytest.mark.parametrize("case", list(CASES))
def test_hatch_reports_bad_input_in_one_line(case, session_dir, hatch_env):
    change, env, pattern = CASES[case]
    slug = re.sub(r"\W+", "-", case)
    project = testbed.copy_example(session_dir / f"bad-{slug}")
    change(project)
    result = testbed.hatch_build(project, hatch_env, env)
    _assert_clean_failure(result, pattern, project)


def test_cli_reports_unreadable_pyproject(session_dir, hatch_env):
    project = testbed.copy_example(session_dir / "bad-toml")
    (project / "pyproject.toml").write_text('[project\nname = "x"\n')
    result = subprocess.run(
        [sys.executable, "-m", "buildpacks.cli", "build", str(project)],
        env=hatch_env,
        capture_output=True,
        text=True,
    )
    _assert_clean_failure(result, r"pyproject.toml: invalid TOML: .*line 1", project)


def test_cli_reports_a_missing_base_image_file(session_dir, hatch_env):
    project = testbed.copy_example(session_dir / "bad-base")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "buildpacks.cli",
            "build",
            str(project),
            "--base-image",
            "oci-archive:/nonexistent/base.tar",
        ],
        env=hatch_env,
        capture_output=True,
        text=True,
    )
    _assert_clean_failure(
        result, r"oci-archive:/nonexistent/base.tar: /nonexistent/base.tar does not exist", project
    )
