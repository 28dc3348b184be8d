"""project.toml (CNB project descriptor, schema 0.2): read, merged with pyproject.toml and
``BP_*`` as documented, and refused with one clear error when wrong or contradictory."""

from __future__ import annotations

import pytest

from buildpacks import config
from buildpacks.descriptor import Descriptor, read_descriptor
from buildpacks.errors import BuildError
from buildpacks.project import Project

GOOD = """
[_]
schema-version = "0.2"
id = "com.example.shop"
name = "shop"
version = "2.1.0"
authors = ["Ada <ada@example.invalid>"]
documentation-url = "https://docs.example.invalid"
source-url = "https://example.invalid/shop.git"
[[_.licenses]]
type = "MIT"
[_.metadata]
team = "payments"

[io.buildpacks]
builder = "paketobuildpacks/builder-jammy-base"
exclude = ["tests/", "*.md", "/local.cfg"]

[[io.buildpacks.build.env]]
name = "BP_PYTHON_VERSION"
value = "3.11"
[[io.buildpacks.build.env]]
name = "BP_EXTRAS"
value = "web,cli"
"""


def write(tmp_path, text: str, pyproject: str | None = None):
    (tmp_path / "project.toml").write_text(text)
    if pyproject is not None:
        (tmp_path / "pyproject.toml").write_text(pyproject)
    return tmp_path


def test_descriptor_fields_are_read(tmp_path):
    d = read_descriptor(write(tmp_path, GOOD))
    assert (d.id, d.name, d.version, d.licenses) == ("com.example.shop", "shop", "2.1.0", ("MIT",))
    assert d.authors == ("Ada <ada@example.invalid>",) and d.metadata == {"team": "payments"}
    assert d.build_env == {"BP_PYTHON_VERSION": "3.11", "BP_EXTRAS": "web,cli"}
    assert [f for f in ["app.py", "tests/test_x.py", "README.md", "local.cfg", "a/local.cfg"]
            if d.selects(f)] == ["app.py", "a/local.cfg"]  # fmt: skip
    assert read_descriptor(tmp_path / "nowhere") == Descriptor()


def test_include_keeps_only_what_it_names():
    d = Descriptor(include=("src/", "app.py"))
    assert [f for f in ["app.py", "src/a/b.py", "other.py", "x/app.py"] if d.selects(f)] == [
        "app.py",
        "src/a/b.py",
        "x/app.py",
    ]


def test_source_app_takes_name_version_license_and_build_env(tmp_path):
    root = write(tmp_path, GOOD)
    project = Project(root, root.name, "latest")
    cfg = config.resolve(project, tmp_path / "dist", env={})
    assert (cfg.project.name, cfg.project.version, cfg.project.license) == ("shop", "2.1.0", "MIT")
    assert cfg.image == "shop:2.1.0"
    assert cfg.python_version == "3.11" and cfg.extras == ("web", "cli")
    assert cfg.origins["extras"] == "project.toml BP_EXTRAS"
    # The real environment and flags stand above the file.
    cfg = config.resolve(project, tmp_path / "dist", env={"BP_EXTRAS": "api"})
    assert cfg.extras == ("api",) and cfg.origins["extras"] == "BP_EXTRAS"


def test_agreeing_pyproject_is_fine(tmp_path):
    root = write(tmp_path, GOOD, "[project]\n")
    project = Project(root, "Shop", "2.1", license="MIT", tool_config={"python-version": "3.11"})
    cfg = config.resolve(project, tmp_path / "dist", env={})
    assert cfg.project.name == "Shop" and cfg.project.version == "2.1"


@pytest.mark.parametrize(
    ("text", "project", "message"),
    [
        ('[_\nname = "x"', {}, r"project.toml: invalid TOML"),
        ('[project]\nname = "x"\n', {}, r"no \[_\] table \(schema 0.1"),
        ('[_]\nschema-version = "0.1"\n', {}, r'schema-version must be "0.2", not \'0.1\''),
        ('[_]\nschema-version = "0.2"\nnmae = "x"\n', {}, r"unknown key\(s\) in \[_\]: nmae"),
        ('[_]\nschema-version = "0.2"\nversion = 2\n', {}, r"\[_\] version must be a string"),
        (
            '[_]\nschema-version = "0.2"\n[io.buildpacks]\ninclude = ["a"]\nexclude = ["b"]\n',
            {},
            "include or exclude, not both",
        ),
        (
            '[_]\nschema-version = "0.2"\n[[io.buildpacks.group]]\nid = "paketo/python"\n',
            {},
            "group: third-party buildpacks are not supported",
        ),
        (
            '[_]\nschema-version = "0.2"\nname = "other"\n',
            {},
            r"\[_\] name 'other' contradicts the project's name 'x'",
        ),
        (
            '[_]\nschema-version = "0.2"\n[[_.licenses]]\ntype = "MIT"\n',
            {"license": "Apache-2.0"},
            r"\[\[_.licenses\]\] 'MIT' contradicts the project's license 'Apache-2.0'",
        ),
        (
            '[_]\nschema-version = "0.2"\nversion = "9.9"\n',
            {"version": "1.0"},
            r"\[_\] version '9.9' contradicts \[project\] version '1.0'",
        ),
        (
            '[_]\nschema-version = "0.2"\n[[io.buildpacks.build.env]]\nname = "BP_PYTHON_VERSION"'
            '\nvalue = "3.12"\n',
            {"tool_config": {"python-version": "3.11"}},
            r"BP_PYTHON_VERSION = '3.12' contradicts \[tool.buildpacks\] python-version = '3.11'",
        ),
        (
            '[_]\nschema-version = "0.2"\n[[io.buildpacks.build.env]]\nname = "BP_CPYTHON_VERSION"'
            '\nvalue = "3.12"\n',
            {},
            "BP_CPYTHON_VERSION is not a python-buildpacks setting",
        ),
    ],
)
def test_bad_descriptors_are_refused(tmp_path, text, project, message):
    root = write(tmp_path, text, "[project]\n")
    fields = {"name": "x", "version": "1.0", **project}
    with pytest.raises(BuildError, match=message):
        config.resolve(Project(root, **fields), tmp_path / "dist", env={})
