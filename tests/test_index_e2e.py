"""Image indexes end to end: the example built for linux/amd64 and linux/arm64 (on
``debian-packages:bookworm``, assembled for either architecture without emulation), joined
into one ``Index`` and written through every sink; read back by skopeo, podman and the docker
SDK; inspected, its SBOMs read and rebased by the command line, in a registry and in an
archive. The arm64 image runs under qemu (binfmt_misc), only to check it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from buildpacks.oci.archive import ArchiveSink
from buildpacks.oci.blobs import BlobStore
from buildpacks.oci.daemon import DaemonSink
from buildpacks.oci.layer import TreeMapping, write_layer
from buildpacks.oci.model import Image, Index, Platform, RegistryOptions
from buildpacks.oci.reference import Reference
from buildpacks.oci.registry import RegistrySink
from buildpacks.oci.source import open_image
from tests import testbed

pytestmark = pytest.mark.e2e

BASE = "debian-packages:bookworm"
AMD64 = Platform("linux", "amd64")
ARM64 = Platform("linux", "arm64")
NAME = "example-service-0.1.0.tar"
MACHINE = "import platform; print(platform.machine())"


@pytest.fixture(scope="module")
def env(session_dir: Path) -> dict[str, str]:
    return testbed.clean_env(BP_CACHE_DIR=str(session_dir / "index-cache"))


@pytest.fixture(scope="module")
def store(session_dir: Path) -> BlobStore:
    return BlobStore(session_dir / "index-store")


@pytest.fixture(scope="module")
def index(session_dir: Path, env: dict[str, str], store: BlobStore) -> Index:
    """The example built once per platform with today's single-platform build, joined."""
    images = []
    for platform in (AMD64, ARM64):
        project = testbed.copy_example(session_dir / f"index-{platform.architecture}")
        built = testbed.cli(
            "build", str(project), "--base-image", BASE, "--platform", str(platform), env=env
        )
        assert built.returncode == 0, built.stdout + built.stderr
        archive = project / "dist" / NAME
        images.append(open_image(f"oci-archive:{archive}", platform, store))
    return Index(tuple(images), "example-service:0.1.0")


def skopeo(*args: str) -> str:
    return subprocess.run(["skopeo", *args], capture_output=True, text=True, check=True).stdout


def machine_in(podman: testbed.Podman, image_id: str, arch: str) -> str:
    """``platform.machine()`` as the image's own Python reports it (arm64 under qemu)."""
    out = podman(
        "run", "--rm", "--arch", arch, *testbed.RUN_FLAGS, "--entrypoint", "python",
        image_id, "-c", MACHINE,
    )  # fmt: skip
    return out.stdout.strip()


def pulled(podman: testbed.Podman, reference: str, arch: str) -> str:
    """The ID of the image podman pulls for ``arch`` from the (plain-HTTP) registry."""
    out = podman("pull", "-q", "--tls-verify=false", "--arch", arch, reference)
    return out.stdout.strip().splitlines()[-1]


def shared_layers(index: Index) -> set[str]:
    amd, arm = index.images
    return {layer.digest for layer in amd.layers} & {layer.digest for layer in arm.layers}


def test_the_two_builds_share_the_app_layer(index):
    amd, arm = index.images
    assert (amd.platform, arm.platform) == (AMD64, ARM64)
    # The app's layer, fourth from the top (app, process types, config, SBOM): one blob.
    assert amd.layers[-4].digest == arm.layers[-4].digest
    assert amd.layers[-5].digest != arm.layers[-5].digest  # the venv: wheels per platform
    assert index.manifest()["manifests"][1]["platform"] == {"os": "linux", "architecture": "arm64"}


def test_registry_sink_pushes_every_manifest_then_the_index_each_blob_once(
    index, registry, podman, tmp_path
):
    repository = "team/multi"
    targets = [Reference.parse(f"{registry.host}/{repository}:{tag}") for tag in ("0.1.0", "v1")]
    digest_file = tmp_path / f"{NAME}.digest"
    lines: list[str] = []
    digest = RegistrySink(targets, RegistryOptions(), digest_file=digest_file).write(
        index, lines.append
    )
    assert digest == index.digest()
    assert digest_file.read_text() == digest + "\n"
    for target in targets:
        assert f"Pushed {target.registry}/{repository}:{target.tag}@{digest}" in lines
        # skopeo, a client we did not write, reads back exactly the index we made.
        raw = skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{target}")
        assert json.loads(raw) == index.manifest()
    for layer in shared_layers(index):  # e.g. the app layer: uploaded once for both platforms
        assert len([x for x in registry.requests("PUT", repository) if layer in x]) == 1
    # Each platform's manifest, pulled per platform, runs on its machine.
    reference = f"{registry.host}/{repository}:0.1.0"
    assert machine_in(podman, pulled(podman, reference, "amd64"), "amd64") == "x86_64"
    assert machine_in(podman, pulled(podman, reference, "arm64"), "arm64") == "aarch64"
    # skopeo copies the whole index out again, every manifest with it.
    copied = tmp_path / "copied"
    skopeo(
        "copy", "-q", "--all", "--src-tls-verify=false", f"docker://{reference}",
        f"oci:{copied}:x",
    )  # fmt: skip
    for image in index.images:
        assert (copied / "blobs" / "sha256" / image.digest().split(":")[1]).is_file()


def test_archive_sink_holds_the_index_and_podman_loads_the_host_image(index, podman, tmp_path):
    archive = tmp_path / "dist" / NAME
    archive.parent.mkdir()
    lines: list[str] = []
    sink = ArchiveSink(archive, "example-service:multi", 0)
    assert sink.write(index, lines.append) == index.digest()
    assert lines == [f"Archive: {archive}"]
    assert json.loads(skopeo("inspect", "--raw", f"oci-archive:{archive}")) == index.manifest()
    # Written again: the archive holds it already.
    assert sink.write(index, lines.append) == index.digest()
    assert lines[1] == f"Archive unchanged: {NAME}"
    loaded = podman("load", "-i", str(archive))
    assert "example-service:multi" in loaded.stdout + loaded.stderr
    inspected = json.loads(podman("image", "inspect", "example-service:multi").stdout)[0]
    assert inspected["Architecture"] == Platform.host().architecture == "amd64"
    assert inspected["Id"] == index.host_image().config_descriptor().digest.split(":")[1]
    assert machine_in(podman, "example-service:multi", "amd64") == "x86_64"


def test_daemon_sink_loads_the_host_image_into_podmans_docker_api(
    index, podman, session_dir, tmp_path, monkeypatch
):
    import docker

    with podman.docker_api(session_dir / "index-docker.sock") as docker_host:
        monkeypatch.setenv("DOCKER_HOST", docker_host)
        archive = tmp_path / NAME
        ArchiveSink(archive, "daemon-multi:from-archive", 0).write(index, print)
        host = index.host_image()
        for reference, given in (
            ("daemon-multi:from-archive", archive),  # the archive written by the build
            ("daemon-multi:own-archive", None),  # none: the sink writes one of its own
        ):
            lines: list[str] = []
            written = DaemonSink(reference, 0, given).write(index, lines.append)
            assert written == host.digest()
            assert any("Loaded into the daemon" in line and "amd64" in line for line in lines)
            client = docker.DockerClient(base_url=docker_host)
            try:
                attrs = client.images.get(reference).attrs
            finally:
                client.close()
            assert attrs["Architecture"] == "amd64"
            assert attrs["Id"].removeprefix("sha256:") == (
                host.config_descriptor().digest.removeprefix("sha256:")
            )


@pytest.fixture(scope="module")
def pushed(index, registry) -> str:
    reference = f"{registry.host}/team/cli-multi:0.1.0"
    RegistrySink([Reference.parse(reference)], RegistryOptions()).write(index, print)
    return reference


@pytest.fixture(scope="module")
def index_archive(index, session_dir) -> Path:
    archive = session_dir / "index-archive" / "dist" / NAME
    archive.parent.mkdir(parents=True)
    ArchiveSink(archive, "example-service:0.1.0", 0).write(index, print)
    return archive


@pytest.mark.parametrize("where", ["registry", "archive"])
def test_inspect_lists_the_platforms_and_picks_one(where, request, index, env):
    ref = (
        request.getfixturevalue("pushed")
        if where == "registry"
        else f"oci-archive:{request.getfixturevalue('index_archive')}"
    )
    report = testbed.cli("inspect", ref, "--json", env=env)
    assert report.returncode == 0, report.stderr
    data = json.loads(report.stdout)
    assert data["digest"] == index.digest()
    assert data["platforms"] == [
        {"platform": str(i.platform), "digest": i.digest(), "size": len(i.manifest_bytes())}
        for i in index.images
    ]
    text = testbed.cli("inspect", ref, env=env).stdout
    assert "Platforms:" in text and "linux/arm64" in text and "--platform" in text
    one = testbed.cli("inspect", ref, "--platform", "linux/arm64", "--json", env=env)
    assert one.returncode == 0, one.stderr
    picked = json.loads(one.stdout)
    assert picked["digest"] == index.images[1].digest()
    assert picked["platform"] == "linux/arm64"
    assert picked["layers"][-1]["origin"] == "sbom"
    missing = testbed.cli("inspect", ref, "--platform", "linux/s390x", env=env)
    assert missing.returncode == 1 and missing.stdout == ""
    assert missing.stderr.strip().splitlines() == [
        f"error: {ref} has no image for linux/s390x (it has: linux/amd64, linux/arm64)"
    ]


def test_inspect_platform_of_a_single_image_that_is_for_another(index_archive, env, session_dir):
    single = session_dir / f"index-{AMD64.architecture}" / "dist" / NAME
    ref = f"oci-archive:{single}"
    plain = testbed.cli("inspect", ref, "--json", env=env)
    assert json.loads(plain.stdout)["platform"] == "linux/amd64"  # as before indexes
    same = testbed.cli("inspect", ref, "--platform", "linux/amd64", env=env)
    assert same.returncode == 0 and "Platform:  linux/amd64" in same.stdout
    other = testbed.cli("inspect", ref, "--platform", "linux/arm64", env=env)
    assert other.returncode == 1
    assert other.stderr.strip().splitlines() == [
        f"error: {ref} has no image for linux/arm64 (it has: linux/amd64)"
    ]


def deb_architectures(document: Path) -> set[str]:
    components = json.loads(document.read_text())["components"]
    return {
        c["purl"].split("arch=")[1].split("&")[0]
        for c in components
        if c.get("purl", "").startswith("pkg:deb/") and "arch=" in c["purl"]
    } - {"all"}


@pytest.mark.parametrize("where", ["registry", "archive"])
def test_sbom_of_an_index_one_directory_per_platform(where, request, env, tmp_path):
    ref = (
        request.getfixturevalue("pushed")
        if where == "registry"
        else f"oci-archive:{request.getfixturevalue('index_archive')}"
    )
    out = tmp_path / "all"
    every = testbed.cli("sbom", ref, "-o", str(out), env=env)
    assert every.returncode == 0, every.stderr
    assert sorted(p.name for p in out.iterdir()) == ["linux-amd64", "linux-arm64"]
    assert deb_architectures(out / "linux-amd64" / "sbom.cdx.json") == {"amd64"}
    assert deb_architectures(out / "linux-arm64" / "sbom.cdx.json") == {"arm64"}
    assert (out / "linux-arm64" / "sbom.spdx.json").is_file()
    one = tmp_path / "one"
    picked = testbed.cli("sbom", ref, "--platform", "linux/arm64", "-o", str(one), env=env)
    assert picked.returncode == 0, picked.stderr
    assert sorted(p.name for p in one.iterdir()) == ["sbom.cdx.json", "sbom.spdx.json"]
    assert deb_architectures(one / "sbom.cdx.json") == {"arm64"}
    missing = testbed.cli("sbom", ref, "--platform", "linux/riscv64", "-o", str(tmp_path), env=env)
    assert missing.returncode == 1 and missing.stderr.strip().splitlines() == [
        f"error: {ref} has no image for linux/riscv64 (it has: linux/amd64, linux/arm64)"
    ]


def updated(image: Image, store: BlobStore, tmp_path: Path) -> Image:
    """``image`` (a run image) with one more layer, ``/etc/base-update``, as an OS update
    gives: a new run image for the rebase tests."""
    tree = tmp_path / f"update-{image.platform.architecture}"
    tree.mkdir()
    (tree / "base-update").write_text(f"patched {image.platform.architecture}\n")
    layer = write_layer(store, [TreeMapping(tree, "/etc")])
    config = json.loads(image.config_bytes())
    config["rootfs"]["diff_ids"].append(layer.diff_id)
    return Image(config, [*image.layers, layer])


@pytest.fixture(scope="module")
def new_bases(registry, store, session_dir, podman) -> tuple[str, str]:
    """Two run image indexes made by podman (``podman manifest``), a tool we did not write,
    from updated debian-packages bases pushed one platform each: (both platforms, amd64
    only)."""
    work = session_dir / "index-bases"
    work.mkdir()
    singles = {}
    for platform in (AMD64, ARM64):
        base = open_image(BASE, platform, store)
        single = f"{registry.host}/base/debian:update-{platform.architecture}"
        RegistrySink([Reference.parse(single)], RegistryOptions()).write(
            updated(base, store, work), print
        )
        singles[platform.architecture] = single
    made = {}
    for name, archs in (("update", ("amd64", "arm64")), ("update-amd64-only", ("amd64",))):
        podman("manifest", "rm", name, check=False)
        podman("manifest", "create", name)
        for arch in archs:
            podman("manifest", "add", "--tls-verify=false", name, f"docker://{singles[arch]}")
        target = f"{registry.host}/base/debian:{name}"
        podman("manifest", "push", "--all", "--tls-verify=false", name, f"docker://{target}")
        made[name] = target
    raw = json.loads(skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{made['update']}"))
    assert len(raw["manifests"]) == 2
    return made["update"], made["update-amd64-only"]


def test_rebase_of_an_index_in_a_registry_per_platform(
    index, new_bases, registry, env, podman, session_dir
):
    reference = f"{registry.host}/team/rebase-multi:0.1.0"
    RegistrySink([Reference.parse(reference)], RegistryOptions()).write(index, print)
    new_base, _ = new_bases
    result = testbed.cli("rebase", reference, "--run-image", new_base, "--publish", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    raw = json.loads(skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{reference}"))
    assert raw["mediaType"] == "application/vnd.oci.image.index.v1+json"
    assert [m["platform"]["architecture"] for m in raw["manifests"]] == ["amd64", "arm64"]
    # The printed digest is the new index's.
    assert result.stdout.strip().splitlines()[-1].endswith(testbed.registry_digest(reference))
    for entry, image in zip(raw["manifests"], index.images, strict=True):
        manifest = json.loads(
            skopeo(
                "inspect", "--raw", "--tls-verify=false",
                f"docker://{reference.rsplit(':', 1)[0]}@{entry['digest']}",
            )
        )  # fmt: skip
        # The app's layers are kept byte for byte; the base gained its update layer.
        assert [d["digest"] for d in manifest["layers"]][-5:] == [
            layer.digest for layer in image.layers
        ][-5:]
        assert len(manifest["layers"]) == len(image.layers) + 1
    for arch, machine in (("amd64", "x86_64"), ("arm64", "aarch64")):
        image_id = pulled(podman, reference, arch)
        out = podman(
            "run", "--rm", "--arch", arch, *testbed.RUN_FLAGS, "--entrypoint", "python", image_id,
            "-c", "import flask, platform; print(open('/etc/base-update').read().strip(), "
            "platform.machine())",
        )  # fmt: skip
        assert out.stdout.strip() == f"patched {arch} {machine}"


def test_rebase_of_an_index_archive_and_the_refusal_when_a_platform_is_missing(
    index, new_bases, registry, env, tmp_path
):
    new_base, amd64_only = new_bases
    archive = tmp_path / NAME
    ArchiveSink(archive, "example-service:0.1.0", 0).write(index, print)
    original = archive.read_bytes()
    reference = f"{registry.host}/team/refused-multi:0.1.0"
    RegistrySink([Reference.parse(reference)], RegistryOptions()).write(index, print)
    for ref, extra in ((f"oci-archive:{archive}", ()), (reference, ("--publish",))):
        refused = testbed.cli("rebase", ref, "--run-image", amd64_only, *extra, env=env)
        assert refused.returncode == 1 and "Traceback" not in refused.stderr
        assert refused.stderr.strip().splitlines()[-1] == (
            f"error: rebase of {ref} refused: the new run image {amd64_only} has no image for "
            "linux/arm64 (it has: linux/amd64)"
        )
    assert archive.read_bytes() == original  # nothing written
    assert testbed.registry_digest(reference) == index.digest()
    # A debian-packages: run image is assembled for each platform: nothing is missing.
    assembled = testbed.cli(
        "rebase", f"oci-archive:{archive}", "--run-image", BASE, "--output",
        str(tmp_path / "assembled.tar"), env=env,
    )  # fmt: skip
    assert assembled.returncode == 0, assembled.stdout + assembled.stderr
    raw = json.loads(skopeo("inspect", "--raw", f"oci-archive:{tmp_path / 'assembled.tar'}"))
    assert [m["platform"]["architecture"] for m in raw["manifests"]] == ["amd64", "arm64"]
    rebased = tmp_path / "rebased.tar"
    result = testbed.cli(
        "rebase", f"oci-archive:{archive}", "--run-image", new_base, "--output", str(rebased),
        env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    raw = json.loads(skopeo("inspect", "--raw", f"oci-archive:{rebased}"))
    assert [m["platform"]["architecture"] for m in raw["manifests"]] == ["amd64", "arm64"]
    for arch in ("amd64", "arm64"):
        config = json.loads(
            skopeo("--override-arch", arch, "inspect", "--config", f"oci-archive:{rebased}")
        )
        meta = json.loads(config["config"]["Labels"]["io.buildpacks.lifecycle.metadata"])
        assert meta["runImage"]["image"] == new_base
        assert config["architecture"] == arch


def test_each_platform_restores_from_a_cache_image_index_and_an_index_archive(
    index, registry, env, session_dir, store
):
    """A cache image per platform, joined into one index under one reference (as a build for
    several platforms pushes it), serves each platform's layers; so does an index archive
    left in dist/ by such a build. Each "machine" here has an empty cache and no dist/."""
    repository = f"{registry.host}/team/cache-multi"
    caches = []
    for platform in (AMD64, ARM64):
        project = session_dir / f"index-{platform.architecture}"
        built = testbed.cli(
            "build", str(project), "--base-image", BASE, "--platform", str(platform),
            "--cache-image", f"{repository}:{platform.architecture}", env=env,
        )  # fmt: skip
        assert built.returncode == 0, built.stdout + built.stderr
        caches.append(open_image(f"{repository}:{platform.architecture}", platform, store))
    RegistrySink([Reference.parse(f"{repository}:all")], RegistryOptions()).write(
        Index(tuple(caches)), print
    )
    fresh = testbed.copy_example(session_dir / "index-cache-restore")
    restored = testbed.cli(
        "build", str(fresh), "--base-image", BASE, "--platform", "linux/arm64",
        "--cache-image", f"{repository}:all",
        env={**env, "BP_CACHE_DIR": str(session_dir / "index-cache-empty")},
    )  # fmt: skip
    out = restored.stdout + restored.stderr
    assert restored.returncode == 0, out
    assert "Restored python-buildpacks/dependencies venv layer" in out
    assert "Installing" not in out
    assert testbed.read_archive_manifest(fresh / "dist" / NAME)[0] == index.images[1].digest()

    from_archive = testbed.copy_example(session_dir / "index-archive-restore")
    (from_archive / "dist").mkdir()
    ArchiveSink(from_archive / "dist" / NAME, "example-service:0.1.0", 0).write(index, print)
    again = testbed.cli(
        "build", str(from_archive), "--base-image", BASE, "--platform", "linux/arm64",
        env={**env, "BP_CACHE_DIR": str(session_dir / "index-cache-empty-2")},
    )  # fmt: skip
    out = again.stdout + again.stderr
    assert again.returncode == 0, out
    assert "Previous image oci-archive:" in out and "Installing" not in out
    assert "Restored python-buildpacks/dependencies venv layer" in out
    archive = testbed.read_archive_manifest(from_archive / "dist" / NAME)
    assert archive[0] == index.images[1].digest()  # the arm64 image, now on its own
