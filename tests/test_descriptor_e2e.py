"""A source application described by project.toml, built with the command line: its name,
version, authors and license reach the image; its exclude patterns keep files out."""

from __future__ import annotations

import shutil
import tarfile

import pytest

from buildpacks import cnb
from tests import testbed

pytestmark = pytest.mark.e2e

PROJECT_TOML = """
[_]
schema-version = "0.2"
name = "shop"
version = "2.0.0"
authors = ["Ada <ada@example.invalid>"]
[[_.licenses]]
type = "MIT"
[_.metadata]
team = "payments"

[io.buildpacks]
exclude = ["notes/", "*.md"]

[[io.buildpacks.build.env]]
name = "BP_DEFAULT_PROCESS"
value = "web"
"""


def test_source_app_described_by_project_toml(session_dir, hatch_env):
    project = session_dir / "described-app"
    shutil.copytree(testbed.REPO / "tests" / "projects" / "plain-app", project)
    (project / "project.toml").write_text(PROJECT_TOML)
    (project / "README.md").write_text("not shipped\n")
    (project / "notes").mkdir()
    (project / "notes" / "todo.txt").write_text("not shipped\n")
    result = testbed.cli("build", str(project), env=hatch_env)
    assert result.returncode == 0, result.stdout + result.stderr
    archive = project / "dist" / "shop-2.0.0.tar"
    _, manifest, config = testbed.read_archive_manifest(archive)
    labels = config["config"]["Labels"]
    assert labels["org.opencontainers.image.title"] == "shop"
    assert labels["org.opencontainers.image.version"] == "2.0.0"
    assert labels["org.opencontainers.image.licenses"] == "MIT"
    assert labels["org.opencontainers.image.authors"] == "Ada <ada@example.invalid>"
    meta = cnb.decode(cnb.LayersMetadata, labels[cnb.LIFECYCLE], strict=True)
    index = config["rootfs"]["diff_ids"].index(meta.app[0].sha)
    with tarfile.open(archive) as tar:
        blob = tar.extractfile("blobs/" + manifest["layers"][index]["digest"].replace(":", "/"))
        with tarfile.open(fileobj=blob, mode="r:gz") as layer:
            files = sorted(m.name.lstrip("./") for m in layer.getmembers() if m.isfile())
    assert files == [
        "workspace/.python-version",
        "workspace/Procfile",
        "workspace/app.py",
        "workspace/project.toml",
        "workspace/requirements.txt",
    ]
    shown = testbed.cli("config", str(project), env=hatch_env)
    line = next(x for x in shown.stdout.splitlines() if x.lstrip().startswith("default-process"))
    assert "web" in line and "project.toml BP_DEFAULT_PROCESS" in line
