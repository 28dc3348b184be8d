"""A warm rebuild reuses what an edit does not touch (the dependencies layer, the SBOM
layer) and must give the very image a build from empty caches gives (the first cold build
assembles the base too; the others start with it, as after any first build)."""

from __future__ import annotations

from tests import testbed


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
    server = project / "src/example_service/server.py"
    server.write_text(server.read_text().replace('return "ok"', 'return "ok, warm"'))
    warm, warm_layers = build("warm-cache")
    assert warm != first
    assert warm_layers[-1] == first_layers[-1]  # the SBOM lists no application code
    cold, _ = build("cold-cache", seeded=False)
    assert cold == warm

    pyproject = project / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('version = "0.1.0"', 'version = "0.2.0"'))
    archive = project / "dist/example-service-0.2.0.tar"
    bumped, bumped_layers = build("warm-cache")
    assert bumped_layers[-1] != warm_layers[-1]  # the SBOM names the application's version
    assert build("cold-cache-2")[0] == bumped


def test_a_warm_rebuild_stages_nothing_and_frees_the_replaced_archive_in_the_background(
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
    second = build_after_edit(2)
    # The first archive is the trash's now (the same file, renamed), not freed by the build.
    assert first in in_trash()[0]
    third = build_after_edit(3)
    # The next build emptied the trash while it ran, files first: the first archive is
    # gone, the second waits there. A warm build made no scratch directory of its own (what
    # is left of the first build's, thousands of files, is removed over the next builds).
    files, directories = in_trash()
    assert files == {second} and directories <= scratch
    # (The first archive's inode number is free again, and may be the third's.)
    assert third != second
