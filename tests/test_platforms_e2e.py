"""One build, images for linux/amd64 and linux/arm64 in one index, end to end with real parts:
the example (Flask, with markupsafe's C extension) built by Hatch on bases assembled from
Debian's archive for each architecture, pushed to a local registry, pulled back per platform
and run by podman (arm64 under qemu, only to run it); the same index digest twice; a warm
edit that rebuilds the app layer only; the up-to-date check watching every platform's base;
``python -m build`` and ``buildpacks build`` ending with the index's digest; and the bad
input: an unknown platform, a platform the base index (made by ``podman manifest`` from two
single-architecture bases) lacks, a wheel that is not pure."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from buildpacks import cnb
from buildpacks.oci.blobs import BlobStore
from buildpacks.oci.model import OCI_INDEX, Platform
from buildpacks.oci.source import local_inputs
from tests import testbed
from tests.test_bad_input import _assert_clean_failure
from tests.test_inference_e2e import TAG_HOOK

pytestmark = pytest.mark.e2e

TWO = "linux/amd64,linux/arm64"
MACHINES = {"linux/amd64": "x86_64", "linux/arm64": "aarch64"}
DEBIAN = "debian-packages:bookworm"
# An endpoint added to the example's copy: what the interpreter serving it runs on.
MACHINE_ENDPOINT = """

@app.get("/machine")
def machine():
    import platform

    return platform.machine()
"""
PROBE = (
    "import platform, markupsafe, markupsafe._speedups as s; "
    "print(platform.machine(), markupsafe.escape('<a>'), s.__file__.rsplit('/', 1)[-1])"
)
VENV_PYTHON = "/layers/python-buildpacks_dependencies/venv/bin/python"


def archive_index(archive: Path) -> tuple[str, dict[str, tuple[dict, dict]]]:
    """The index digest of one of our archives, and each platform's (manifest, config)."""
    with tarfile.open(archive) as tar:

        def blob(digest: str) -> dict:
            return json.loads(tar.extractfile("blobs/" + digest.replace(":", "/")).read())  # type: ignore[union-attr]

        (entry,) = json.loads(tar.extractfile("index.json").read())["manifests"]  # type: ignore[union-attr]
        assert entry["mediaType"] == OCI_INDEX, entry
        images = {}
        for item in blob(entry["digest"])["manifests"]:
            manifest = blob(item["digest"])
            platform = "/".join(
                item["platform"][k] for k in ("os", "architecture") if k in item["platform"]
            )
            images[platform] = (manifest, blob(manifest["config"]["digest"]))
    return entry["digest"], images


def the_archive(project: Path) -> Path:
    (archive,) = (project / "dist").glob("*.tar")
    return archive


def layer_digests(manifest: dict, config: dict) -> dict[str, str]:
    """Our layers by role: the app layer (the lifecycle label's ``app``), the dependencies'
    venv, and the rest by diff ID, each mapped to its blob digest."""
    meta = cnb.read_label(cnb.image_labels(config), cnb.LIFECYCLE, cnb.LayersMetadata, "image")
    assert meta is not None
    blobs = dict(
        zip(config["rootfs"]["diff_ids"], (d["digest"] for d in manifest["layers"]), strict=True)
    )
    (app,) = meta.app
    venv = next(
        layer.sha for bp in meta.buildpacks for name, layer in bp.layers.items() if name == "venv"
    )
    return {"app": blobs[app.sha], "venv": blobs[venv], "all": ",".join(blobs.values())}


def printed_digest(out: str) -> str:
    """The digest a build printed last (``Digest: sha256:...``)."""
    found = re.findall(r"^(?:\[[^\]]+\] )?Digest: (sha256:[0-9a-f]{64})$", out, re.M)
    assert found, out
    return found[-1]


def registry_index_digest(reference: str) -> str:
    raw = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{reference}"],
        capture_output=True,
        check=True,
    ).stdout
    assert json.loads(raw)["mediaType"] == OCI_INDEX
    return "sha256:" + hashlib.sha256(raw).hexdigest()


@pytest.fixture(scope="module")
def env(session_dir: Path, hatch_env: dict[str, str]) -> dict[str, str]:
    """Hatch's environment with a cache of this module's (bases assembled once per arch)."""
    return {
        **hatch_env,
        "BP_BASE_IMAGE": DEBIAN,
        "BP_CACHE_DIR": str(session_dir / "platforms-cache"),
    }


def example(destination: Path) -> Path:
    project = testbed.copy_example(destination)
    server = project / "src" / "example_service" / "server.py"
    server.write_text(server.read_text() + MACHINE_ENDPOINT)
    pyproject = project / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text().replace(
            "[tool.buildpacks]\n", '[tool.buildpacks]\nplatforms = ["linux/amd64", "linux/arm64"]\n'
        )
    )
    return project


@pytest.fixture(scope="module")
def built(session_dir: Path, env: dict[str, str], registry: testbed.Registry):
    """The example built for both platforms by ``hatch build -t image`` and published:
    (project, reference, output)."""
    project = example(session_dir / "platforms-example")
    reference = f"{registry.host}/platforms/example:0.1.0"
    result = testbed.hatch_build(project, env, {"BP_IMAGE": reference, "BP_PUBLISH": "true"})
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    return project, reference, out


@pytest.fixture(scope="module")
def base_index(session_dir: Path, env: dict[str, str], registry, podman) -> str:
    """A two-platform base index in the local registry, made by podman from the Debian
    bases assembled for amd64 and arm64."""
    return testbed.push_base_index(
        Path(env["BP_CACHE_DIR"]), registry, podman, session_dir / "base-index"
    )


def test_hatch_prints_a_plan_per_platform_and_one_index_reference(built):
    project, reference, out = built
    for platform, machine in MACHINES.items():
        assert f"[{platform}] Project example-service 0.1.0, Python 3.11" in out
        assert f"[{platform}]   python-buildpacks/dependencies" in out
        assert (
            f"[{platform}] Installing dependencies from uv.lock for {machine}-manylinux_2_36" in out
        )
    digest, images = archive_index(the_archive(project))
    assert sorted(images) == ["linux/amd64", "linux/arm64"]
    assert printed_digest(out) == digest == registry_index_digest(reference)
    assert re.search(rf"^Image: {re.escape(reference)}$", out, re.M)


def test_each_platform_has_its_own_wheels_and_one_app_layer(built):
    project, _, _ = built
    _, images = archive_index(the_archive(project))
    layers = {p: layer_digests(*images[p]) for p in images}
    assert {p: images[p][1]["architecture"] for p in images} == {
        "linux/amd64": "amd64",
        "linux/arm64": "arm64",
    }
    # The pure app wheel, built once: the same blob on both platforms.
    assert layers["linux/amd64"]["app"] == layers["linux/arm64"]["app"]
    assert layers["linux/amd64"]["venv"] != layers["linux/arm64"]["venv"]


@pytest.mark.parametrize("arch", ["amd64", "arm64"])
def test_each_platform_pulled_back_runs_natively_or_under_qemu(arch, built, podman):
    _, reference, _ = built
    pulled = podman("pull", "-q", "--arch", arch, "--tls-verify=false", reference).stdout.strip()
    tag = f"platforms-example:{arch}"
    podman("tag", pulled, tag)
    assert podman("image", "inspect", "--format", "{{.Architecture}}", tag).stdout.strip() == arch
    machine = MACHINES[f"linux/{arch}"]
    out = podman("run", "--rm", "--arch", arch, *testbed.RUN_FLAGS, "--entrypoint", VENV_PYTHON,
                 tag, "-c", PROBE).stdout  # fmt: skip
    # markupsafe's C extension, the wheel uv chose for this platform, is what is loaded.
    assert out.split() == [machine, "&lt;a&gt;", f"_speedups.cpython-311-{machine}-linux-gnu.so"]
    port = testbed.free_port()
    name = f"platforms-{arch}"
    podman(
        "run", "-d", "--arch", arch, "--name", name, *testbed.RUN_FLAGS, "-e", f"PORT={port}", tag
    )
    try:
        status, body = testbed.wait_for_http(f"http://127.0.0.1:{port}/machine", timeout=90)
        assert (status, body.decode()) == (200, machine)
        status, body = testbed.wait_for_http(f"http://127.0.0.1:{port}/")
        assert json.loads(body) == {"name": "example-service", "version": "0.1.0"}
    finally:
        podman("rm", "-f", "-t", "2", name, check=False)


def test_same_inputs_give_the_same_index_digest(built, env):
    project, reference, out = built
    again = testbed.hatch_build(project, env, {"BP_IMAGE": reference, "BP_CLEAR_CACHE": "true"})
    assert again.returncode == 0, again.stdout + again.stderr
    assert "Installing dependencies from uv.lock for aarch64" in again.stdout + again.stderr
    assert printed_digest(again.stdout + again.stderr) == printed_digest(out)


def test_a_warm_edit_rebuilds_only_the_app_layer_of_each_platform(built, env, session_dir):
    project, _, _ = built
    edited = session_dir / "platforms-edited"
    shutil.copytree(project, edited, ignore=shutil.ignore_patterns("dist"))
    server = edited / "src" / "example_service" / "server.py"
    server.write_text(server.read_text() + "# a one-line edit\n")
    result = testbed.hatch_build(edited, env)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "Installing dependencies" not in out
    for platform in MACHINES:
        assert f"[{platform}] Reusing cached dependencies layer" in out
    _, before = archive_index(the_archive(project))
    _, after = archive_index(the_archive(edited))
    new_apps = set()
    for platform in MACHINES:
        old, new = layer_digests(*before[platform]), layer_digests(*after[platform])
        assert new["venv"] == old["venv"] and new["app"] != old["app"]
        changed = set(new["all"].split(",")) - set(old["all"].split(","))
        assert changed == {new["app"]}, platform
        new_apps.add(new["app"])
    assert len(new_apps) == 1  # still one app blob for both


def test_up_to_date_check_watches_every_platforms_base(session_dir, env, base_index):
    project = example(session_dir / "platforms-uptodate")
    build_env = {**env, "BP_BASE_IMAGE": base_index}
    first = testbed.cli("build", str(project), env=build_env)
    assert first.returncode == 0, first.stdout + first.stderr
    second = testbed.cli("build", str(project), env=build_env)
    assert "is up to date" in second.stdout, second.stdout + second.stderr
    assert printed_digest(second.stdout) == printed_digest(first.stdout)
    # The arm64 base is re-pinned (a pull of a new manifest rewrites this record): rebuilt.
    store = BlobStore(Path(env["BP_CACHE_DIR"]) / "blobs")
    (record,) = local_inputs(base_index, Platform("linux", "arm64"), store, "if-not-present")
    record.write_text(record.read_text())
    third = testbed.cli("build", str(project), env=build_env)
    assert third.returncode == 0, third.stdout + third.stderr
    assert "is up to date" not in third.stdout and "[linux/arm64] ===> BUILDING" in third.stdout
    # One platform of the two is another build, not a no-op.
    one = testbed.cli("build", str(project), "--platform", "linux/arm64", env=build_env)
    assert one.returncode == 0 and "is up to date" not in one.stdout, one.stdout + one.stderr
    assert "[linux/arm64]" not in one.stdout  # one platform reads as it always did


def test_cli_and_python_m_build_end_with_the_index_digest(session_dir, env, base_index):
    project = example(session_dir / "platforms-cli")
    sboms = session_dir / "platforms-sboms"
    result = testbed.cli(
        "build", str(project), "--base-image", base_index, "--sbom-output-dir", str(sboms),
        env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    digest, images = archive_index(the_archive(project))
    assert sorted(images) == ["linux/amd64", "linux/arm64"]
    assert printed_digest(result.stdout) == digest
    # Each platform's SBOM in a directory of its own, listing that platform's packages.
    for platform, other in (("linux/amd64", "arm64"), ("linux/arm64", "amd64")):
        text = (sboms / platform.replace("/", "-") / "sbom.cdx.json").read_text()
        names = {c["name"] for c in json.loads(text)["components"]}
        assert "MarkupSafe" in names, platform
        assert f"arch={platform.split('/')[1]}&" in text and f"arch={other}&" not in text
    setuptools_app = session_dir / "platforms-setuptools"
    shutil.copytree(Path(__file__).parent / "projects" / "setuptools-app", setuptools_app)
    built = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "-C", "image=true",
         "-C", f"image-platforms={TWO}", "-C", f"image-base-image={base_index}",
         str(setuptools_app)],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    out = built.stdout + built.stderr
    assert built.returncode == 0, out
    for platform in MACHINES:
        assert f"[{platform}] Project setup-app 2.4.1" in out
    digest, images = archive_index(the_archive(setuptools_app))
    assert sorted(images) == ["linux/amd64", "linux/arm64"]
    assert printed_digest(out) == digest


def test_unknown_platform_is_one_error(session_dir, env):
    project = example(session_dir / "platforms-unknown")
    result = testbed.cli("build", str(project), "--platform", "linux/amd64,linux/amd46", env=env)
    _assert_clean_failure(
        result,
        r"^error: platforms \(command line\): 'linux/amd46' is not a platform; write "
        r"os/arch\[/variant\], one of linux/amd64",
        project,
    )


def test_platform_missing_from_the_base_index_is_one_error(session_dir, env, base_index):
    project = example(session_dir / "platforms-missing")
    result = testbed.hatch_build(
        project, env, {"BP_BASE_IMAGE": base_index, "BP_PLATFORMS": "linux/amd64,linux/s390x"}
    )
    _assert_clean_failure(
        result,
        rf"^error: \[linux/s390x\] {re.escape(base_index)} has no image for linux/s390x "
        r"\(it has: linux/amd64, linux/arm64\)$",
        project,
    )


def test_a_wheel_that_is_not_pure_is_refused_for_two_platforms(session_dir, env):
    project = example(session_dir / "platforms-not-pure")
    (project / "hatch_build.py").write_text(TAG_HOOK.format(tag="cp311-cp311-linux_x86_64"))
    pyproject = project / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text().replace(
            "[tool.hatch.build.targets.image]",
            "[tool.hatch.build.targets.wheel.hooks.custom]\n\n[tool.hatch.build.targets.image]",
        )
    )
    result = testbed.hatch_build(project, env)
    _assert_clean_failure(
        result,
        r"^error: the project's wheel example_service-0\.1\.0-cp311-cp311-linux_x86_64\.whl is "
        r"not pure Python .* it must be built per platform; build one platform per run",
        project,
    )
    assert "Installing dependencies" not in result.stdout + result.stderr


def test_wheel_gaps_of_every_platform_are_one_error_before_any_install(session_dir, env):
    project = session_dir / "platforms-gaps"
    project.mkdir()
    (project / "Procfile").write_text("web: python3 app.py\n")
    (project / "app.py").write_text("import lxml\n")
    (project / ".python-version").write_text("3.11\n")
    # lxml 4.9.1 has an x86_64 wheel for CPython 3.11 and no aarch64 one; pycrypto, none.
    (project / "requirements.txt").write_text("lxml==4.9.1\npycrypto==2.6.1\nsix==1.17.0\n")
    result = testbed.cli("build", str(project), "--platform", TWO, env=env)
    _assert_clean_failure(
        result,
        r"^error: no wheel for linux/amd64 \(CPython 3\.11, x86_64-manylinux_2_36\): pycrypto "
        r"2\.6\.1 \(no version has one\); no wheel for linux/arm64 \(CPython 3\.11, "
        r"aarch64-manylinux_2_36\): lxml 4\.9\.1 \(nearest with one: 4\.9\.2\), pycrypto 2\.6\.1 "
        r"\(no version has one\); dependencies are installed from wheels only",
        project,
    )
    assert "Installing dependencies" not in result.stdout + result.stderr
