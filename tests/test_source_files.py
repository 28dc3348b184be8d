"""What of a plain application's directory goes into its image: ignore files as users know
them, secrets never, symbolic links as links. The end-to-end test plants secrets and scans
every layer, every label and every output line of a real build for them."""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from buildpacks.builtin.application import source_files
from tests import testbed

TOKEN = "PLANTED-SECRET-7f3a"
SECRETS = [
    ".env",
    ".env.production",
    ".envrc",
    ".netrc",
    ".npmrc",
    ".pypirc",
    "server.pem",
    "tls/private.key",
    "id_rsa",
    "deploy/id_ed25519",
    ".aws/credentials",
    ".ssh/config",
    "sub/.ssh/known_hosts",
    "git-ignored.txt",
    "logs/debug.log",
    "docker-ignored.cfg",
    ".git/config",
    ".venv/pyvenv.cfg",
]


def plant(root: Path) -> Path:
    """A plain application with secrets, ignore files and links; returns a host file outside
    it that holds a secret and that a link inside points at."""
    for name in SECRETS:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{TOKEN} {name}\n")
    (root / "Procfile").write_text("web: python3 app.py\n")
    (root / "app.py").write_text("print('hi')\n")
    (root / ".python-version").write_text("3.11\n")
    (root / "static").mkdir()
    (root / "static" / "site.css").write_text("body {}\n")
    (root / "keep.log").write_text("kept by a ! line\n")
    (root / ".gitignore").write_text("git-ignored.txt\n*.log\n!keep.log\n")
    (root / ".dockerignore").write_text("# comment\ndocker-ignored.cfg\n")
    outside = root.parent / f"{root.name}-host-secret.txt"
    outside.write_text(f"{TOKEN} host file\n")
    (root / "host-link").symlink_to(outside)
    (root / "static-link").symlink_to("static")
    (root / "loop-a").symlink_to("loop-b")
    (root / "loop-b").symlink_to("loop-a")
    return outside


def test_source_files_follow_ignore_files_and_keep_secrets_out(tmp_path: Path) -> None:
    root = tmp_path / "app"
    root.mkdir()
    plant(root)
    (root / "dist").mkdir()
    (root / "dist" / "old.tar").write_text("x")
    assert source_files(root) == [
        ".dockerignore",
        ".gitignore",
        ".python-version",
        "Procfile",
        "app.py",
        "host-link",
        "keep.log",
        "loop-a",
        "loop-b",
        "static-link",
        "static/site.css",
    ]


def test_ignore_files_cannot_bring_secrets_back(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("x")
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "id").write_text("x")
    (tmp_path / "venv").mkdir()
    (tmp_path / "venv" / "kept.py").write_text("x")
    (tmp_path / ".gitignore").write_text("!.env\n!.ssh/\n!venv/\n")
    assert source_files(tmp_path) == [".gitignore", "venv/kept.py"]


def test_dockerignore_patterns_are_anchored_at_the_root(tmp_path: Path) -> None:
    for name in ("notes.md", "docs/notes.md", "docs/a.tmp", "a.tmp"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    (tmp_path / ".dockerignore").write_text("notes.md\n**/*.tmp\n")
    assert source_files(tmp_path) == [".dockerignore", "docs/notes.md"]


def _layer_members(archive: Path) -> dict[str, tuple[tarfile.TarInfo, bytes]]:
    """Every entry of every layer of the image in ``archive``, with its content."""
    _, manifest, _ = testbed.read_archive_manifest(archive)
    found = {}
    with tarfile.open(archive) as outer:
        for layer in manifest["layers"]:
            blob = outer.extractfile("blobs/" + layer["digest"].replace(":", "/"))
            data = gzip.decompress(blob.read())  # type: ignore[union-attr]
            with tarfile.open(fileobj=io.BytesIO(data)) as tar:
                for info in tar:
                    stream = tar.extractfile(info) if info.isfile() else None
                    found[info.name] = (info, stream.read() if stream else b"")
    return found


@pytest.mark.e2e
def test_no_planted_secret_reaches_a_layer_a_label_or_the_output(session_dir, base_image):
    root = session_dir / "secrets-app"
    root.mkdir()
    plant(root)
    (root / ("caf\udce9.txt")).write_text("a file name that is not UTF-8\n")  # latin-1 é
    env = testbed.clean_env(
        BP_BASE_IMAGE=base_image, BP_CACHE_DIR=testbed.seeded_cache(session_dir / "cache")
    )
    result = testbed.cli("build", str(root), env=env)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert TOKEN not in out

    archive = root / "dist" / "secrets-app-latest.tar"
    _, _, config = testbed.read_archive_manifest(archive)
    assert TOKEN not in json.dumps(config)
    members = _layer_members(archive)
    leaked = [name for name, (_, data) in members.items() if TOKEN.encode() in data]
    assert leaked == []
    workspace = {n.removeprefix("workspace/") for n in members if n.startswith("workspace/")}
    assert {"app.py", "Procfile", "keep.log", "static/site.css"} <= workspace
    assert not {Path(s).parts[0] for s in SECRETS} & {Path(w).parts[0] for w in workspace}
    link = members["workspace/host-link"][0]
    assert link.issym() and link.linkname == str(root.parent / "secrets-app-host-secret.txt")
    assert members["workspace/static-link"][0].linkname == "static"
    assert members["workspace/loop-a"][0].issym()
    assert os.fsencode("caf\udce9.txt").decode("utf-8", "surrogateescape") in {
        n.removeprefix("workspace/") for n in members
    }
