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
