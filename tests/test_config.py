"""Inference and validation of the build configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from buildpacks.config import resolve, resolve_python_version
from buildpacks.errors import BuildError
from buildpacks.oci.model import Platform
from buildpacks.project import Project


def project(**kw) -> Project:
    defaults = {"root": Path("/p"), "name": "My_Service", "version": "1.2.0+local.1"}
    return Project(**{**defaults, **kw})


@pytest.mark.parametrize(
    ("requires", "expected"),
    [
        (">=3.11", "3.14"),
        (">=3.9,<3.13", "3.12"),
        ("~=3.10.0", "3.10"),
        ("==3.12.*", "3.12"),
        (">=3.11.4,<3.12", "3.11"),  # 3.11.4+ satisfies, so 3.11 is allowed
        ("<3.13,!=3.12.*", "3.11"),
        (None, "3.14"),
    ],
)
def test_highest_minor_allowed_by_requires_python(requires, expected):
    assert resolve_python_version(None, "", None, requires)[0] == expected


def test_precedence_setting_over_file_over_requires_python():
    assert resolve_python_version("3.12", "BP_PYTHON_VERSION", "3.11", ">=3.10") == (
        "3.12",
        "BP_PYTHON_VERSION",
    )
    assert resolve_python_version(None, "", "3.11.9", ">=3.10") == ("3.11", ".python-version")
    assert resolve_python_version(None, "", "cpython-3.13", None) == ("3.13", ".python-version")


@pytest.mark.parametrize(
    ("explicit", "file", "requires", "message"),
    [
        (None, None, ">=4", "allows none of the Python versions"),
        (None, None, "<3.0", "allows none of the Python versions"),
        ("3.9", None, ">=3.10", "Python 3.9 (from BP_PYTHON_VERSION) is outside requires-python"),
        (None, "3.9", ">=3.10", "Python 3.9 (from .python-version) is outside requires-python"),
        ("three", None, None, "is not a Python version"),
        (None, None, ">=3.x", "not a valid version specifier"),
    ],
)
def test_python_version_errors(explicit, file, requires, message):
    with pytest.raises(BuildError, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolve_python_version(explicit, "BP_PYTHON_VERSION", file, requires)


def test_defaults_image_and_base_from_project():
    config = resolve(project(requires_python=">=3.11,<3.13"), Path("/out"), env={})
    assert config.image == "my-service:1.2.0-local.1"
    assert config.base_image == "python:3.12-slim"
    assert config.platforms == (config.platform,) == (Platform.host(),)
    assert config.origins["image"] == "project name and version"


def test_environment_overrides_pyproject_and_flags_override_environment():
    p = project(tool_config={"image": "a:1", "base-image": "b:1"})
    config = resolve(p, Path("/out"), env={"BP_IMAGE": "env:2"}, overrides={"image": "flag:3"})
    assert config.image == "flag:3"
    assert config.origins["image"] == "command line"
    assert config.base_image == "b:1"
    assert resolve(p, Path("/out"), env={"BP_IMAGE": "env:2"}).image == "env:2"


def test_unknown_key_suggests_the_nearest():
    with pytest.raises(BuildError, match="'python_version'; did you mean 'python-version'"):
        resolve(project(tool_config={"python_version": "3.11"}), Path("/out"), env={})


def test_invalid_image_reference_is_named():
    with pytest.raises(BuildError, match=r"image \(BP_IMAGE\).*must be lowercase"):
        resolve(project(), Path("/out"), env={"BP_IMAGE": "Bad/Name:1"})


def test_readme_documents_every_key():
    from buildpacks.config import OPTIONS

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    for option in OPTIONS:
        assert f"| `{option.key}` |" in readme, option.key
        if option.env:
            assert f"`{option.env}`" in readme, option.env


def test_the_default_process_is_the_one_named_after_the_project():
    from buildpacks.builtin.processes import choose_default

    assert choose_default(["black", "blackd"], None, "black") == "black"
    assert choose_default(["Is_Sort", "isort-identify-imports"], None, "is-sort") == "Is_Sort"
    assert choose_default(["web", "worker", "app"], None, "app") == "web"
    with pytest.raises(BuildError, match="none is called web nor named after the project"):
        choose_default(["rst2html", "rst2man"], None, "docutils")


def test_run_image_is_another_name_for_base_image():
    p = project(tool_config={"run-image": "b:1"})
    config = resolve(p, Path("/out"), env={})
    assert config.base_image == "b:1"
    assert config.origins["base-image"] == "pyproject.toml [tool.buildpacks]"
    assert resolve(p, Path("/out"), env={}, overrides={"run-image": "c:2"}).base_image == "c:2"
    with pytest.raises(BuildError, match="run-image and base-image are the same setting"):
        resolve(project(tool_config={"run-image": "b:1", "base-image": "b:2"}), Path("/o"), env={})


def test_creation_time_setting_then_source_date_epoch_then_default():
    assert resolve(project(), Path("/o"), env={}).creation_time == 315532801
    env = {"SOURCE_DATE_EPOCH": "1700000000"}
    assert resolve(project(), Path("/o"), env=env).creation_time == 1700000000
    flag = {"creation-time": "1600000000"}
    assert resolve(project(), Path("/o"), env=env, overrides=flag).creation_time == 1600000000
    import time

    before = int(time.time())
    now = resolve(project(), Path("/o"), env={"BP_CREATION_TIME": "now"}).creation_time
    assert before <= now <= int(time.time())
    with pytest.raises(BuildError, match=r"creation-time \(command line\) must be Unix seconds"):
        resolve(project(), Path("/o"), env={}, overrides={"creation-time": "yesterday"})


BASE = "oci-layout:/images/base:1"


def test_explicit_base_decides_the_python_version():
    p = project(requires_python=">=3.10", python_version_file="3.12")
    pending = resolve(p, Path("/out"), env={"BP_BASE_IMAGE": BASE})
    assert pending.needs_base_python  # to be read from the base before any wheel is built
    config = resolve(p, Path("/out"), env={"BP_BASE_IMAGE": BASE}, base_pythons=("3.11",))
    assert (config.python_version, config.origins["python-version"]) == ("3.11", "base image")
    assert not config.needs_base_python
    assert any(".python-version asks for Python 3.12" in w for w in config.warnings)


def test_base_python_precedence():
    p = project(requires_python=">=3.10", python_version_file="3.12")
    env = {"BP_BASE_IMAGE": BASE, "BP_PYTHON_VERSION": "3.13"}
    # python-version beats the base (the runtime check then asks the base for it)
    assert resolve(p, Path("/out"), env=env, base_pythons=("3.11",)).python_version == "3.13"
    # the default base does not decide: it is named after the version
    config = resolve(p, Path("/out"), env={}, base_pythons=("3.11",))
    assert (config.python_version, config.base_image) == ("3.12", "python:3.12-slim")
    # the base's interpreters in preference order; the first one requires-python allows
    config = resolve(
        project(requires_python=">=3.12"), Path("/out"), env={"BP_BASE_IMAGE": BASE},
        base_pythons=("3.11", "3.12"),
    )  # fmt: skip
    assert config.python_version == "3.12"


def test_base_python_outside_requires_python_is_refused():
    with pytest.raises(
        BuildError, match=r"base image .*base:1 has Python 3.11, outside requires-python '>=3.12'"
    ):
        resolve(
            project(requires_python=">=3.12"), Path("/out"), env={"BP_BASE_IMAGE": BASE},
            base_pythons=("3.11",),
        )  # fmt: skip
    with pytest.raises(BuildError, match="has no Python interpreter"):
        resolve(project(), Path("/out"), env={"BP_BASE_IMAGE": BASE}, base_pythons=())


def test_poetry_alternatives_are_read_as_or():
    from buildpacks.project import poetry_constraint

    either = poetry_constraint("^3.11 || ^3.12")
    assert resolve_python_version("3.11", "BP_PYTHON_VERSION", None, either)[0] == "3.11"
    assert resolve_python_version(None, "", None, poetry_constraint(">=3.9 || <3"))[0] == "3.14"
    assert resolve_python_version(None, "", None, poetry_constraint("~3.10 | ~3.12"))[0] == "3.12"
    with pytest.raises(BuildError, match="outside requires-python"):
        resolve_python_version("3.13", "BP_PYTHON_VERSION", None, poetry_constraint("~3.10|~3.12"))


def test_misspelled_environment_variable_is_warned_about():
    config = resolve(project(), Path("/out"), env={"BP_PYTHON_VERISON": "3.12", "BP_OTHER": "x"})
    assert config.warnings == (
        "BP_PYTHON_VERISON is not a setting and is ignored; did you mean BP_PYTHON_VERSION?",
    )


def test_buildpacks_keys_in_another_table_are_refused():
    from buildpacks.config import check_misplaced

    check_misplaced({"dependencies": ["python-buildpacks"]}, "tool.hatch.build.targets.image")
    with pytest.raises(
        BuildError,
        match=r"'base-image' under \[tool.hatch.build.targets.image\] .* read from "
        r"\[tool.buildpacks\]: move it there",
    ):
        check_misplaced({"base-image": "x"}, "tool.hatch.build.targets.image")


def test_optional_dependencies_keep_their_own_markers(tmp_path):
    from buildpacks.project import static_project

    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "a"\nversion = "1"\n'
        '[project.optional-dependencies]\nd = ["x>=1; python_version < \'3.12\'", "y"]\n'
    )
    assert static_project(tmp_path).requires_dist == (
        "x>=1; (python_version < '3.12') and extra == 'd'",
        "y; extra == 'd'",
    )


def test_layer_compression_is_gzip_or_zstd():
    assert resolve(project(), Path("/out"), env={}).layer_compression == "gzip"
    chosen = resolve(project(), Path("/out"), env={"BP_LAYER_COMPRESSION": "zstd"})
    assert chosen.layer_compression == "zstd"
    with pytest.raises(
        BuildError,
        match=r"layer-compression \(BP_LAYER_COMPRESSION\) must be one of gzip, zstd, not 'xz'",
    ):
        resolve(project(), Path("/out"), env={"BP_LAYER_COMPRESSION": "xz"})
