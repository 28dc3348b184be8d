"""Lock-file readers: markers evaluated for the image, extras and groups selected, hashes kept,
malformed files named with their line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from buildpacks.errors import BuildError
from buildpacks.locks import Target, find_lock, read_lock

PY311 = Target("3.11.2", "x86_64")


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def names(text: str) -> list[str]:
    return [line.split("==")[0].strip() for line in text.splitlines() if "==" in line]


def test_preference_order(tmp_path):
    for name in ("Pipfile.lock", "requirements.txt", "poetry.lock", "pylock.toml", "uv.lock"):
        write(tmp_path, name, "")
        assert find_lock(tmp_path).name == name


PYLOCK = """
lock-version = "1.0"
created-by = "test"
[[packages]]
name = "waitress"
version = "3.0.2"
wheels = [{ name = "waitress-3.0.2-py3-none-any.whl", hashes = { sha256 = "aa" } }]
[[packages]]
name = "colorama"
version = "0.4.6"
marker = "sys_platform == 'win32'"
[[packages]]
name = "pytest"
version = "8.0.0"
marker = "'dev' in dependency_groups"
[[packages]]
name = "ujson"
version = "5.0.0"
marker = "'fast' in extras and python_version >= '3.11'"
"""


def test_pylock_markers_extras_and_groups(tmp_path):
    path = write(tmp_path, "pylock.toml", PYLOCK)
    plain = read_lock(path, PY311)
    assert names(plain.text) == ["waitress"] and plain.complete
    assert "--hash=sha256:aa" in plain.text
    full = read_lock(path, Target("3.11.2", "x86_64", frozenset({"fast"}), frozenset({"dev"})))
    assert names(full.text) == ["waitress", "pytest", "ujson"]


POETRY = """
[[package]]
name = "flask"
version = "3.1.3"
optional = false
groups = ["main"]
files = [{file = "flask-3.1.3-py3-none-any.whl", hash = "sha256:bb"}]
[[package]]
name = "pytest"
version = "8.0.0"
optional = false
groups = ["dev"]
files = []
[[package]]
name = "uvloop"
version = "0.21.0"
optional = true
groups = ["main"]
markers = "sys_platform != 'win32'"
files = []
[[package]]
name = "tomli"
version = "2.0.0"
optional = false
groups = ["main"]
markers = "python_version < '3.11'"
files = []
[extras]
speed = ["uvloop"]
[metadata]
lock-version = "2.1"
"""


def test_poetry_lock_groups_optional_extras_and_markers(tmp_path):
    path = write(tmp_path, "poetry.lock", POETRY)
    assert names(read_lock(path, PY311).text) == ["flask"]
    assert "--hash=sha256:bb" in read_lock(path, PY311).text
    wide = Target("3.11.2", "x86_64", frozenset({"speed"}), frozenset({"dev"}))
    assert names(read_lock(path, wide).text) == ["flask", "pytest", "uvloop"]
    assert names(read_lock(path, Target("3.10.4", "x86_64")).text) == ["flask", "tomli"]


def test_pipfile_lock(tmp_path):
    path = write(
        tmp_path,
        "Pipfile.lock",
        """{
  "default": {"waitress": {"version": "==3.0.2", "hashes": ["sha256:cc"]},
              "pywin32": {"version": "==306", "markers": "sys_platform == 'win32'"}},
  "develop": {"pytest": {"version": "==8.0.0"}}
}""",
    )
    assert names(read_lock(path, PY311).text) == ["waitress"]
    assert names(read_lock(path, Target("3.11", "x86_64", groups=frozenset({"dev"}))).text) == [
        "waitress",
        "pytest",
    ]


def test_requirements_with_hashes_continuations_and_markers(tmp_path):
    path = write(
        tmp_path,
        "requirements.txt",
        (
            "# pinned\nwaitress==3.0.2 \\\n    --hash=sha256:dd\n"
            "pywin32==306 ; sys_platform == 'win32'\nflask>=3  # comment\n"
        ),
    )
    locked = read_lock(path, PY311)
    assert not locked.complete
    assert "waitress==3.0.2" in locked.text and "--hash=sha256:dd" in locked.text
    assert "pywin32" not in locked.text and "flask>=3" in locked.text


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        (
            "requirements.txt",
            "flask==3\nwaitress=3.0\n",
            r"requirements.txt: line 2: invalid requirement",
        ),
        (
            "requirements.txt",
            "flask\n-r other.txt\n",
            r"requirements.txt: line 2: -r is not supported",
        ),
        (
            "pylock.toml",
            'lock-version = "1.0"\n[[packages]\nname = "x"\n',
            r"pylock.toml: invalid TOML: .*line 2",
        ),
        (
            "poetry.lock",
            '[[package]]\nname = "x"\nversion = \n',
            r"poetry.lock: invalid TOML: .*line 3",
        ),
        ("Pipfile.lock", '{\n "default": {\n  "x": }\n}', r"Pipfile.lock: line 3: invalid JSON"),
        ("Pipfile.lock", '{"default": {"x": {"version": "*"}}}', r"only pinned versions"),
        ("uv.lock", "version = 1\n[[package]\n", r"uv.lock: invalid TOML: .*line 2"),
        ("pylock.toml", 'lock-version = "2.0"\n', r"lock-version '2.0' is not supported"),
    ],
)
def test_malformed_lock_files_name_the_file_and_line(tmp_path, name, text, message):
    with pytest.raises(BuildError, match=message):
        read_lock(write(tmp_path, name, text), PY311)


def test_uv_lock_through_uv_export(tmp_path):
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "app"\nversion = "1"\nrequires-python = ">=3.11"\n'
        'dependencies = ["waitress==3.0.2"]\n'
        '[project.optional-dependencies]\nfast = ["markupsafe==3.0.4"]\n'
    )
    uv = Path(sys.executable).parent / "uv"
    subprocess.run([str(uv), "lock", "-q", "--project", str(tmp_path)], check=True)
    plain = read_lock(tmp_path / "uv.lock", PY311)
    assert names(plain.text) == ["waitress"] and "--hash=sha256:" in plain.text
    fast = read_lock(tmp_path / "uv.lock", Target("3.11.2", "x86_64", frozenset({"fast"})))
    assert names(fast.text) == ["markupsafe", "waitress"]


def test_a_requirements_file_that_installs_the_project_is_not_a_lock(tmp_path):
    """typer's requirements.txt (``-e .`` then ``-r`` of test tools) sets up a developer's
    environment; the image's dependencies come from the project's metadata instead."""
    (tmp_path / "requirements.txt").write_text("-e .[all]\n\n-r requirements-tests.txt\n")
    assert find_lock(tmp_path) is None
    (tmp_path / "Pipfile.lock").write_text("{}")
    assert find_lock(tmp_path) == tmp_path / "Pipfile.lock"
    (tmp_path / "requirements.txt").write_text("flask==3.0.0  # not .e nor -e .\n")
    assert find_lock(tmp_path) == tmp_path / "requirements.txt"


def test_requirements_lines_not_pinned_to_one_version_are_named(tmp_path):
    path = write(
        tmp_path,
        "requirements.txt",
        "flask==3.1.3\nwaitress>=3\nclick\njinja2==3.*\nmarkupsafe===3.0.4\n"
        'tomli>=2; python_version < "3.11"\n',
    )
    locked = read_lock(path, PY311)
    assert locked.unpinned == ("waitress", "click", "jinja2")  # tomli's marker is false here
