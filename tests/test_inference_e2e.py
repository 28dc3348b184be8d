"""What the build infers and checks, through the real tools: the explicit base image decides
the Python version, read before any wheel is built; extras reach the image on Hatch's route;
the project's wheel must fit the image; setuptools builds are reproducible; mistakes users
make are caught (misplaced keys, misspelled variables, unpinned requirements)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import testbed
from tests.test_bad_input import _assert_clean_failure

pytestmark = pytest.mark.e2e

PROJECTS = Path(__file__).parent / "projects"
BASE_311 = r"base image oci-layout:\S+ has Python 3\.11, outside requires-python '>=3\.12'"
NO_312 = r"base image oci-layout:\S+ has no Python 3\.12 \(found: /usr/bin/python3\.11\)"
# A wheel hook giving the wheel the tag a test asks for, as a compiled project's would have.
TAG_HOOK = """
from hatchling.builders.hooks.plugin.interface import BuildHookInterface


class TagHook(BuildHookInterface):
    def initialize(self, version, build_data):
        build_data["tag"] = {tag!r}
"""


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new))


def _example(session_dir: Path, name: str) -> Path:
    project = testbed.copy_example(session_dir / name)
    (project / ".python-version").unlink()
    return project


def _unbuildable(project: Path) -> None:
    """A backend that cannot build a wheel: if the build fails for another reason, that
    reason was found before any wheel was built."""
    _edit(project / "pyproject.toml", '"hatchling.build"', '"no_such_backend.build"')


def _python_m_build(project: Path, env: dict[str, str], *settings: str):
    args = [sys.executable, "-m", "build", "--wheel", "-C", "image=true"]
    for setting in settings:
        args += ["-C", setting]
    return subprocess.run([*args, str(project)], env=env, capture_output=True, text=True)


@pytest.fixture(scope="module")
def layout_env(hatch_env, base_layout) -> dict[str, str]:
    """Builds on a stored base (the default one, as an OCI layout), whose Python is known only
    by reading it: a debian-packages: base's Python follows from its suite, before any read."""
    return {**hatch_env, "BP_BASE_IMAGE": base_layout}


def test_explicit_base_decides_the_python_version(session_dir, layout_env):
    # requires-python >=3.11 alone would ask for 3.14, which the base (3.11) does not have.
    project = _example(session_dir, "base-decides")
    result = testbed.hatch_build(project, layout_env)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "Python 3.11 (from base image)" in out
    assert out.index("Run image ") < out.index("Building image")  # analyzed before the wheel
    config = testbed.cli("config", str(project), env={**layout_env, "BP_PYTHON_VERISON": "3.12"})
    assert config.returncode == 0, config.stderr
    assert re.search(r"^python-version += '3\.11'  \(base image\)$", config.stdout, re.M)
    assert (
        "warning: BP_PYTHON_VERISON is not a setting and is ignored; "
        "did you mean BP_PYTHON_VERSION?" in config.stdout
    )


def test_base_outside_requires_python_fails_before_the_wheel(session_dir, layout_env):
    project = _example(session_dir, "base-outside-hatch")
    _edit(project / "pyproject.toml", '">=3.11"', '">=3.12"')
    result = testbed.hatch_build(project, layout_env)
    _assert_clean_failure(result, BASE_311, project)
    assert "Building image" not in result.stdout + result.stderr  # logged after the wheel

    project = _example(session_dir, "base-outside-cli")
    _edit(project / "pyproject.toml", '">=3.11"', '">=3.12"')
    _unbuildable(project)
    start = time.perf_counter()
    result = testbed.cli("build", str(project), env=layout_env)
    elapsed = time.perf_counter() - start
    _assert_clean_failure(result, BASE_311, project)
    print(f"buildpacks build refused the base in {elapsed:.2f} s")

    project = shutil.copytree(PROJECTS / "setuptools-app", session_dir / "base-outside-setup")
    _edit(project / "setup.cfg", "python_requires = >=3.11", "python_requires = >=3.12")
    (project / ".python-version").unlink()
    result = _python_m_build(project, layout_env)
    _assert_clean_failure(result, BASE_311, project)  # setuptools wrote no wheel to dist/

    # The command line reads setup.cfg's python_requires before asking the backend for a wheel.
    _edit(project / "pyproject.toml", '"setuptools_buildpacks.build_meta"', '"no_such_backend"')
    _assert_clean_failure(testbed.cli("build", str(project), env=layout_env), BASE_311, project)


def test_python_version_the_base_lacks_fails_before_the_wheel(session_dir, layout_env):
    project = _example(session_dir, "lacks-cli")
    _unbuildable(project)
    result = testbed.cli("build", str(project), "--python-version", "3.12", env=layout_env)
    _assert_clean_failure(result, NO_312, project)

    project = shutil.copytree(PROJECTS / "setuptools-app", session_dir / "lacks-setup")
    result = _python_m_build(project, layout_env, "image-python-version=3.12")
    _assert_clean_failure(result, NO_312, project)
    _edit(project / "pyproject.toml", '"setuptools_buildpacks.build_meta"', '"no_such_backend"')
    result = testbed.cli("build", str(project), "--python-version", "3.12", env=layout_env)
    _assert_clean_failure(result, NO_312, project)  # dynamic metadata: checked before the wheel

    project = _example(session_dir, "lacks-hatch")
    result = testbed.hatch_build(project, layout_env, {"BP_PYTHON_VERSION": "3.12"})
    _assert_clean_failure(result, NO_312, project)
    assert "Building image" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("tag", "message"),
    [
        ("cp312-cp312-manylinux_2_17_x86_64", r"build the wheel with Python 3\.11"),
        # This machine's own linux_x86_64 wheels fit (same glibc); another machine's do not.
        ("py3-none-linux_aarch64", r"a linux_\* wheel is built against the C library of the"),
    ],
)
def test_wheel_the_image_cannot_load_is_refused(tag, message, session_dir, hatch_env):
    pattern = (
        rf"the project's wheel example_service-0\.1\.0-{tag}\.whl cannot be loaded by the image "
        rf"\(CPython 3\.11, cp311, x86_64-manylinux_2_36; wheel tags: {tag}\): {message}"
    )
    for route in ("hatch", "cli"):
        project = testbed.copy_example(session_dir / f"tag-{tag}-{route}")
        (project / "hatch_build.py").write_text(TAG_HOOK.format(tag=tag))
        _edit(
            project / "pyproject.toml",
            "[tool.hatch.build.targets.image]",
            "[tool.hatch.build.targets.wheel.hooks.custom]\n\n[tool.hatch.build.targets.image]",
        )
        if route == "hatch":
            result = testbed.hatch_build(project, hatch_env)
        else:
            result = testbed.cli("build", str(project), env=hatch_env)
        _assert_clean_failure(result, pattern, project)
        assert "Installing dependencies" not in result.stdout + result.stderr  # checked first


@pytest.mark.parametrize("route", ["hatch", "cli", "setuptools"])
def test_selected_extras_are_installed_on_every_route(route, session_dir, hatch_env, podman):
    image = f"extras-{route}:1"
    if route == "setuptools":
        project = shutil.copytree(PROJECTS / "setuptools-app", session_dir / f"extras-{route}")
        _edit(project / "setup.cfg", "[options.packages.find]", "[options.extras_require]\n"
              "six = six==1.17.0\n\n[options.packages.find]")  # fmt: skip
        result = _python_m_build(project, hatch_env, f"image-image={image}", "image-extras=six")
    else:
        project = testbed.copy_example(session_dir / f"extras-{route}")
        (project / "uv.lock").unlink()  # unlocked: the project's own optional dependencies
        _edit(
            project / "pyproject.toml",
            "[project.scripts]",
            '[project.optional-dependencies]\nsix = ["six==1.17.0"]\n\n[project.scripts]',
        )
        env = {**hatch_env, "BP_EXTRAS": "six", "BP_IMAGE": image}
        if route == "hatch":
            result = testbed.hatch_build(project, env)
        else:
            result = testbed.cli("build", str(project), env=env)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    loaded = podman("load", "-i", str(next((project / "dist").glob("*.tar"))), check=False)
    assert loaded.returncode == 0, loaded.stderr[-800:]
    ran = podman.attempt(image, "-c", "import six; print(six.__version__)", entrypoint="python")
    assert ran.returncode == 0, ran.stderr[-800:]
    assert ran.stdout.strip() == "1.17.0"


def test_two_setuptools_builds_give_one_digest(session_dir, hatch_env):
    project = shutil.copytree(PROJECTS / "setuptools-app", session_dir / "reproducible-setup")
    env = {k: v for k, v in hatch_env.items() if k != "SOURCE_DATE_EPOCH"}
    (project / ".python-version").write_text("3.12\n")  # not in the sdist: read from the project
    builds = []
    for attempt in range(2):
        if attempt:
            time.sleep(2.1)  # zip timestamps have a resolution of two seconds
            for path in project.rglob("*.py"):
                path.touch()
        result = _python_m_build(project, env)
        out = result.stdout + result.stderr
        assert result.returncode == 0, out
        assert ".python-version asks for Python 3.12; the base image has 3.11, which is used" in out
        wheel = next((project / "dist").glob("*.whl"))
        digest = testbed.read_archive_manifest(next((project / "dist").glob("*.tar")))[0]
        builds.append((wheel.read_bytes(), digest))
        shutil.rmtree(project / "dist")
    assert builds[0][0] == builds[1][0]  # SOURCE_DATE_EPOCH: the same wheel
    assert builds[0][1] == builds[1][1]


def test_buildpacks_key_in_hatch_target_table_is_refused(session_dir, hatch_env):
    project = testbed.copy_example(session_dir / "misplaced")
    _edit(
        project / "pyproject.toml",
        'dependencies = ["python-buildpacks"]',
        'dependencies = ["python-buildpacks"]\nbase-image = "python:3.12-slim"',
    )
    result = testbed.hatch_build(project, hatch_env)
    _assert_clean_failure(
        result,
        r"pyproject.toml: 'base-image' under \[tool.hatch.build.targets.image\] is a "
        r"python-buildpacks setting, which is read from \[tool.buildpacks\]: move it there",
        project,
    )


def test_unpinned_requirements_are_warned_about(session_dir, hatch_env):
    project = shutil.copytree(PROJECTS / "plain-app", session_dir / "unpinned")
    (project / "requirements.txt").write_text("waitress>=3\n")
    result = testbed.cli("build", str(project), env=hatch_env)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert (
        "warning: requirements.txt does not pin waitress to one version (name==X.Y.Z): "
        "they are resolved now, so the image is not pinned" in out
    )


def test_command_line_finds_the_images_python_on_this_machine():
    from buildpacks.wheels import host_python

    found = host_python("3.11")  # Debian's python3.11, which the test bed installs
    assert found is not None
    version = subprocess.run([found, "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.startswith("Python 3.11.")
    assert host_python("3.2") is None  # never downloaded
