"""A warm rebuild reuses what an edit does not touch (the dependencies layer, the SBOM
layer) and must give the very image a build from empty caches gives (the first cold build
assembles the base too; the others start with it, as after any first build)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import tarfile
from pathlib import Path

from tests import testbed


def verify_blobs(archive: Path) -> None:
    """Every blob in ``archive`` has the digest it is named by."""
    with tarfile.open(archive) as tar:
        blobs = [m for m in tar.getmembers() if m.name.startswith("blobs/sha256/")]
        assert blobs
        for member in blobs:
            f = tar.extractfile(member)
            assert f is not None
            digest = hashlib.file_digest(f, "sha256").hexdigest()
            assert member.name == f"blobs/sha256/{digest}"


def test_warm_rebuild_after_an_edit_equals_a_cold_build(session_dir, hatch_env):
    project = testbed.copy_example(session_dir / "warm")
    archive = project / "dist/example-service-0.1.0.tar"

    def build(cache: str, seeded: bool = True) -> tuple[str, list[str]]:
        path = session_dir / cache
        env = {**hatch_env, "BP_CACHE_DIR": testbed.seeded_cache(path) if seeded else str(path)}
        result = testbed.cli("build", str(project), env=env)
        assert result.returncode == 0, result.stdout + result.stderr
        digest, manifest, _ = testbed.read_archive_manifest(archive)
        return digest, [layer["digest"] for layer in manifest["layers"]]

    first, first_layers = build("warm-cache")
    inode = archive.stat().st_ino
    server = project / "src/example_service/server.py"
    server.write_text(server.read_text().replace('return "ok"', 'return "ok, warm"'))
    warm, warm_layers = build("warm-cache")
    assert warm != first
    assert warm_layers[-1] == first_layers[-1]  # the SBOM lists no application code
    # The archive was written on from the entries it kept (the same file), and holds every
    # blob whole, as skopeo reads it.
    assert archive.stat().st_ino == inode
    verify_blobs(archive)
    inspected = subprocess.run(
        ["skopeo", "inspect", f"oci-archive:{archive}"], capture_output=True, text=True
    )
    assert inspected.returncode == 0, inspected.stderr
    assert json.loads(inspected.stdout)["Digest"] == warm
    cold, _ = build("cold-cache", seeded=False)
    assert cold == warm

    pyproject = project / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('version = "0.1.0"', 'version = "0.2.0"'))
    archive = project / "dist/example-service-0.2.0.tar"
    bumped, bumped_layers = build("warm-cache")
    assert bumped_layers[-1] != warm_layers[-1]  # the SBOM names the application's version
    assert build("cold-cache-2")[0] == bumped


def test_a_warm_rebuild_writes_on_the_archive_and_frees_a_replaced_one_in_the_background(
    session_dir, hatch_env
):
    project = testbed.copy_example(session_dir / "trash")
    archive = project / "dist/example-service-0.1.0.tar"
    cache = session_dir / "trash-cache"
    env = {**hatch_env, "BP_CACHE_DIR": testbed.seeded_cache(cache)}
    trash = cache / "tmp" / "trash"
    server = project / "src/example_service/server.py"

    def build_after_edit(n: int) -> int:
        server.write_text(server.read_text() + f"# edit {n}\n")
        result = testbed.cli("build", str(project), env=env)
        assert result.returncode == 0, result.stdout + result.stderr
        assert sorted(p.name for p in (project / "dist").iterdir()) == [archive.name]
        assert not list(cache.glob("tmp/work-*"))
        return archive.stat().st_ino

    def in_trash() -> tuple[set[int], set[str]]:
        files = {p.stat().st_ino for p in trash.iterdir() if p.is_file()}
        return files, {p.name for p in trash.iterdir() if p.is_dir()}

    first = build_after_edit(1)  # installs the dependencies: a scratch directory is used
    scratch = in_trash()[1]
    assert len(scratch) == 1 and next(iter(scratch)).startswith("work-")
    # A warm rebuild writes on the archive in place: no archive is replaced.
    assert build_after_edit(2) == first
    assert in_trash()[0] == set()
    # Without its ledger, the archive in place is not trusted: a new one is written whole,
    # and the old one goes to the trash (the same file, renamed), not freed by the build.
    (ledger,) = (cache / "archives").iterdir()
    ledger.unlink()
    third = build_after_edit(3)
    assert third != first and first in in_trash()[0]
    verify_blobs(archive)
    # The next build emptied the trash while it ran, and wrote on the third archive. A
    # warm build made no scratch directory of its own (what is left of the first build's,
    # thousands of files, is removed over the next builds).
    assert build_after_edit(4) == third
    files, directories = in_trash()
    assert files == set() and directories <= scratch
