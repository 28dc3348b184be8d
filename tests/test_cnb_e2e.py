"""CNB compatibility checked against the platform spec's label and layer contract: lifecycle,
build and project metadata, the SBOM layer, process types, and the layer cache."""

from __future__ import annotations

import json
import subprocess
import tarfile

import pytest

from buildpacks import cnb
from tests import testbed

pytestmark = pytest.mark.e2e

ARCHIVE = "dist/example-service-0.1.0.tar"
SBOM_DIR = "layers/sbom/launch/python-buildpacks_dependencies/venv"


def labels_of(config: dict) -> dict:
    return config["config"]["Labels"]


def test_labels_decode_strictly_and_name_every_layer_once(example_build, debian_cache):
    project, _ = example_build
    base = len(debian_cache.layers)  # the assembled base's layers come first
    _, _, config = testbed.read_archive_manifest(project / ARCHIVE)
    diff_ids = config["rootfs"]["diff_ids"]
    labels = labels_of(config)
    # As strict as Go's encoding/json with DisallowUnknownFields, and every field Go
    # always writes present.
    meta = cnb.decode(cnb.LayersMetadata, labels[cnb.LIFECYCLE], strict=True)
    build = cnb.decode(cnb.BuildMetadata, labels[cnb.BUILD], strict=True)
    project_md = cnb.decode(cnb.ProjectMetadata, labels[cnb.PROJECT], strict=True)
    assert diff_ids[:base] == [layer.diff_id for layer in debian_cache.layers]
    assert meta.run_image.top_layer == diff_ids[base - 1]
    base_digest = config["config"]["Labels"]["org.opencontainers.image.base.digest"]
    assert base_digest == debian_cache.digest()
    assert meta.run_image.image == "debian-packages:bookworm"  # its recipe, no host path
    assert meta.run_image.reference == f"debian-packages@{base_digest}"
    assert meta.stack == cnb.Stack(cnb.RunImageForExport("debian-packages:bookworm"))
    layers = {bp.key: bp.layers for bp in meta.buildpacks}
    assert layers["python-buildpacks/dependencies"]["venv"].sha == diff_ids[base]
    assert layers["python-buildpacks/application"] == {}  # its layer is the app's
    assert meta.app == [cnb.LayerMetadata(diff_ids[base + 1])]
    assert meta.process_types.sha == diff_ids[base + 2]
    assert meta.config.sha == diff_ids[base + 3]
    assert meta.sbom == cnb.LayerMetadata(diff_ids[-1])
    named = [
        *(layer.sha for bp in meta.buildpacks for layer in bp.layers.values()),
        *(app.sha for app in meta.app),
        *(x.sha for x in (meta.config, meta.launcher, meta.process_types, meta.sbom) if x.sha),
    ]
    assert sorted(named) == sorted(diff_ids[base:])  # each of ours named once
    assert {b.homepage for b in build.buildpacks} == {cnb.HOMEPAGE}
    # A web type too, for `--entrypoint web`, with the default's command.
    assert [p.type for p in build.processes] == ["example-service", "web"]
    assert build.processes[0].command == build.processes[1].command
    assert build.buildpack_default_process_type == "example-service"
    assert all(p.direct and not p.default for p in build.processes)
    assert "bom" not in json.loads(labels[cnb.BUILD])  # platform API >= 0.9
    assert project_md == cnb.ProjectMetadata()  # the example is not a git checkout
    assert labels[cnb.PROJECT] == "{}"
    env = dict(e.split("=", 1) for e in config["config"]["Env"])
    assert env["CNB_PLATFORM_API"] == "0.13"
    assert env["PATH"].split(":")[0] == "/cnb/process"


# The assembled base records its packages as distroless does: one file each in status.d.
IN_IMAGE = """
import importlib.metadata as m, json, pathlib
dists = sorted({(d.metadata["Name"].lower(), d.version) for d in m.distributions()})
debs = []
for record in pathlib.Path("/var/lib/dpkg/status.d").glob("*"):
    if record.suffix == ".md5sums":
        continue
    fields = dict(l.split(": ", 1) for l in record.read_text().splitlines() if ": " in l)
    if fields.get("Status", "").endswith(" installed"):
        debs.append((fields["Package"], fields["Version"]))
print(json.dumps({"dists": dists, "debs": sorted(debs)}))
"""


def test_sbom_is_valid_and_lists_everything_the_image_holds(example_build, podman, tmp_path):
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    project, _ = example_build
    podman("load", "-i", str(project / ARCHIVE))
    held = json.loads(podman.run("example-service:0.1.0", "-c", IN_IMAGE, entrypoint="python"))
    in_image = {tuple(x) for x in held["dists"]}
    _, manifest, config = testbed.read_archive_manifest(project / ARCHIVE)
    with tarfile.open(project / ARCHIVE) as tar:
        blob = tar.extractfile("blobs/" + manifest["layers"][-1]["digest"].replace(":", "/"))
        with tarfile.open(fileobj=blob, mode="r:gz") as sbom_layer:
            cdx_text = sbom_layer.extractfile(f"{SBOM_DIR}/sbom.cdx.json").read()
            spdx_text = sbom_layer.extractfile(f"{SBOM_DIR}/sbom.spdx.json").read()
    cdx, spdx = json.loads(cdx_text), json.loads(spdx_text)

    assert cdx["specVersion"] == "1.5"
    assert JsonStrictValidator(SchemaVersion.V1_5).validate_str(cdx_text.decode()) is None
    (tmp_path / "sbom.spdx.json").write_bytes(spdx_text)
    checked = subprocess.run(
        [str(testbed.BIN / "pyspdxtools"), "-i", str(tmp_path / "sbom.spdx.json")],
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr

    by_purl_type: dict[str, set] = {}
    for c in cdx["components"]:
        kind = c.get("purl", "none:").split("/", 1)[0]
        by_purl_type.setdefault(kind, set()).add((c["name"].lower(), c["version"]))
    app = ("example-service", "0.1.0")
    assert by_purl_type["pkg:pypi"] | {app} == in_image  # venv and app layers, all of them
    assert by_purl_type["pkg:deb"] == {tuple(x) for x in held["debs"]}  # the base's packages
    assert len(held["debs"]) > 30
    assert cdx["metadata"]["component"]["purl"] == "pkg:pypi/example-service@0.1.0"
    assert {"pkg:pypi/flask@3.1.3", "pkg:pypi/markupsafe@3.0.4"} <= {
        c.get("purl") for c in cdx["components"]
    }
    base = next(c for c in cdx["components"] if c["type"] == "container")
    labels = labels_of(config)
    assert base["name"] == "debian-packages:bookworm"  # the recipe, no host path
    assert base["version"] == labels["org.opencontainers.image.base.digest"]
    python = next(c for c in cdx["components"] if c["type"] == "platform")
    assert python["version"].startswith("3.11.")
    assert next(c for c in cdx["components"] if c["type"] == "operating-system")["name"] == "debian"
    libc = next(c for c in cdx["components"] if c["name"] == "libc6")
    assert libc["purl"].startswith("pkg:deb/debian/libc6@") and "distro=debian-12" in libc["purl"]
    flask = next(c for c in cdx["components"] if c["name"].lower() == "flask")
    assert flask["licenses"] == [{"expression": "BSD-3-Clause"}]

    graph = {d["ref"]: d["dependsOn"] for d in cdx["dependencies"]}
    assert "pkg:pypi/flask@3.1.3" in graph[cdx["metadata"]["component"]["bom-ref"]]
    assert any(ref.startswith("pkg:pypi/werkzeug@") for ref in graph["pkg:pypi/flask@3.1.3"])
    refs = {c["bom-ref"] for c in cdx["components"]} | {cdx["metadata"]["component"]["bom-ref"]}
    assert set(graph) <= refs and all(set(deps) <= refs for deps in graph.values())

    assert {(p["name"].lower(), p["versionInfo"]) for p in spdx["packages"]} >= in_image
    assert sum(
        ref["referenceLocator"].startswith("pkg:deb/")
        for p in spdx["packages"]
        for ref in p.get("externalRefs", [])
    ) == len(held["debs"])


def test_entrypoint_by_process_type(example_build, podman):
    project, _ = example_build
    podman("load", "-i", str(project / ARCHIVE))
    # `--entrypoint <type>` finds /cnb/process/<type> on PATH, as with CNB images.
    out = podman.attempt("example-service:0.1.0", entrypoint="example-service", env={"PORT": "x"})
    assert "invalid literal for int()" in out.stderr  # our main() ran and parsed PORT


def test_procfile_processes_table_env_and_git_metadata(
    session_dir, hatch_env, debootstrap_base, podman
):
    # Shell processes ($GREETING): built on the debootstrap base, which has a shell.
    env = {**hatch_env, "BP_BASE_IMAGE": debootstrap_base}
    project = testbed.copy_example(session_dir / "procfile")
    (project / "Procfile").write_text("web: example-service\nworker: echo working $GREETING\n")
    pyproject = project / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text().replace(
            "[tool.buildpacks]",
            '[tool.buildpacks]\nprocesses = { hello = "echo hello from $GREETING" }\n'
            'env = { GREETING = "the image" }',
        )
    )
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    subprocess.run(
        ["git", "remote", "add", "origin", "https://user:token@example.invalid/x.git"],
        cwd=project,
        check=True,
    )
    subprocess.run(
        [
            "git",
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            "x",
        ],
        cwd=project,
        check=True,
    )
    result = testbed.hatch_build(project, env)
    assert result.returncode == 0, result.stdout + result.stderr
    _, _, config = testbed.read_archive_manifest(project / ARCHIVE)
    assert config["config"]["Entrypoint"] == ["/cnb/process/web"]  # web is the default
    labels = labels_of(config)
    branch = subprocess.run(
        ["git", "branch", "--show-current"], cwd=project, capture_output=True, text=True
    ).stdout.strip()
    source = json.loads(labels["io.buildpacks.project.metadata"])["source"]
    assert source["type"] == "git" and len(source["version"]["commit"]) == 40
    assert source["metadata"] == {"refs": [branch], "url": "https://example.invalid/x.git"}
    assert source["version"]["describe"] == source["version"]["commit"][:7]  # no tags
    assert "token" not in json.dumps(config)
    podman("load", "-i", str(project / ARCHIVE))
    assert podman.run("example-service:0.1.0", entrypoint="hello").strip() == "hello from the image"
    assert podman.run("example-service:0.1.0", entrypoint="worker").strip() == "working the image"


def test_corrupt_cache_entries_are_detected_and_rebuilt(session_dir, hatch_env, podman):
    cache = session_dir / "corrupt-cache"
    env = {**hatch_env, "BP_CACHE_DIR": testbed.seeded_cache(cache)}
    project = testbed.copy_example(session_dir / "corrupt")
    assert testbed.hatch_build(project, env).returncode == 0
    good = testbed.read_archive_manifest(project / ARCHIVE)[0]
    records = [json.loads(p.read_text()) for p in (cache / "layers").glob("*.json")]
    blobs = [cache / "blobs" / "sha256" / r["descriptor"]["digest"].split(":")[1] for r in records]
    big = max(blobs, key=lambda p: p.stat().st_size)
    big.write_bytes(big.read_bytes()[: big.stat().st_size // 2])  # truncated
    small = min(blobs, key=lambda p: p.stat().st_size)
    data = bytearray(small.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, wrong content
    small.write_bytes(bytes(data))
    # With its archive intact and nothing changed, the image would be up to date: no build.
    (project / ARCHIVE).unlink()
    result = testbed.hatch_build(project, env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (result.stdout + result.stderr).count("is corrupt: rebuilding it") == 2
    assert testbed.read_archive_manifest(project / ARCHIVE)[0] == good
    podman("load", "-i", str(project / ARCHIVE))
    assert podman.run("example-service:0.1.0", "-c", "import flask", entrypoint="python") == ""


def test_previous_archive_and_cache_image_restore_layers_without_reinstalling(
    session_dir, hatch_env, registry
):
    cache_image = f"{registry.host}/team/app-cache:latest"
    first = testbed.copy_example(session_dir / "cache-image-a")
    env_a = {**hatch_env, "BP_CACHE_DIR": testbed.seeded_cache(session_dir / "cache-a")}
    env_a["BP_CACHE_IMAGE"] = cache_image
    built = testbed.hatch_build(first, env_a)
    assert built.returncode == 0, built.stdout + built.stderr
    assert "Installing dependencies from uv.lock" in built.stdout + built.stderr
    digest = testbed.read_archive_manifest(first / ARCHIVE)[0]

    # Another machine: no local cache (the base is assembled there too), no dist/, only the
    # cache image in the registry.
    second = testbed.copy_example(session_dir / "cache-image-b")
    env_b = {**env_a, "BP_CACHE_DIR": str(session_dir / "cache-b")}
    again = testbed.hatch_build(second, env_b)
    out = again.stdout + again.stderr
    assert again.returncode == 0, out
    assert "Installing" not in out
    assert "Restored python-buildpacks/dependencies venv layer" in out
    assert testbed.read_archive_manifest(second / ARCHIVE)[0] == digest

    # The archive left in dist/ by the last build serves too, with an empty layer cache.
    env_c = {**hatch_env, "BP_CACHE_DIR": testbed.seeded_cache(session_dir / "cache-c")}
    third = testbed.hatch_build(second, env_c)
    assert third.returncode == 0 and "Installing" not in third.stdout + third.stderr
    assert "Previous image oci-archive:" in third.stdout + third.stderr
    assert "Restored python-buildpacks/application app layer" in third.stdout + third.stderr
    assert testbed.read_archive_manifest(second / ARCHIVE)[0] == digest
