"""debian-packages: run images and system-packages end to end, against Debian's real archive:
the example answering HTTP in podman on an assembled base, psycopg finding libpq added by
system-packages (on the assembled base and on the debootstrap one), an arm64 base assembled
without emulation, and a loopback mirror whose InRelease, Packages or .deb is tampered with."""

from __future__ import annotations

import hashlib
import json
import lzma
import re
import shutil
import tarfile
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from buildpacks.debian.assemble import GROUPS, PACKAGES_LABEL, assemble
from buildpacks.oci import rootfs
from buildpacks.oci.blobs import BlobStore
from buildpacks.oci.model import Platform
from tests import testbed

pytestmark = pytest.mark.e2e

BASE = "debian-packages:bookworm"
ARCHIVE = "dist/example-service-0.1.0.tar"
SBOM = "layers/sbom/launch/python-buildpacks_dependencies/venv/sbom.cdx.json"
PROBE = """import psycopg


def main() -> None:
    print("libpq", psycopg.pq.version(), psycopg.pq.__impl__)
    try:
        psycopg.connect("host=127.0.0.1 port=1 connect_timeout=2")
    except psycopg.OperationalError as e:
        print("connect failed:", str(e).splitlines()[0])
"""


@pytest.fixture(scope="module")
def debian_env(session_dir: Path, debian_cache) -> dict[str, str]:
    """One cache for the module, starting with the session's assembled base: the archive's
    indexes are fetched and parsed once."""
    return testbed.clean_env(BP_CACHE_DIR=testbed.seeded_cache(session_dir / "debian-cache"))


def build(project: Path, env: dict[str, str], *flags: str):
    return testbed.cli("build", str(project), *flags, env=env)


def sbom_debs(archive: Path) -> dict[str, str]:
    """Name to version of the Debian packages the image's CycloneDX SBOM lists."""
    document = json.loads(image_files(archive, lambda p: p == SBOM)[SBOM].content)
    return {
        c["name"]: c["version"]
        for c in document["components"]
        if c.get("purl", "").startswith("pkg:deb/")
    }


def image_files(archive: Path, wanted: Callable[[str], bool]) -> dict[str, rootfs.Entry]:
    """Entries of the image in one of our archives, read as the image's filesystem."""
    from buildpacks.oci.model import Descriptor, Image, Layer

    work = archive.parent / "unpacked"
    shutil.rmtree(work, ignore_errors=True)
    with tarfile.open(archive) as tar:
        tar.extractall(work, filter="data")
    _, manifest, config = testbed.read_archive_manifest(archive)
    layers = [
        Layer(Descriptor.from_json(d), diff, work / "blobs" / d["digest"].replace(":", "/"))
        for d, diff in zip(manifest["layers"], config["rootfs"]["diff_ids"], strict=True)
    ]
    return rootfs.find(Image(config, layers), wanted, read=wanted)


@pytest.fixture(scope="module")
def assembled_example(session_dir: Path, debian_env: dict[str, str]) -> Path:
    project = testbed.copy_example(session_dir / "debian-example")
    result = build(project, debian_env, "--base-image", BASE)
    assert result.returncode == 0, result.stdout + result.stderr
    return project


def test_example_on_assembled_base_answers_http_as_non_root(assembled_example, podman):
    podman("load", "-i", str(assembled_example / ARCHIVE))
    port = testbed.free_port()
    podman.serve("example-service:0.1.0", port, "debian-http")
    try:
        status, body = testbed.wait_for_http(f"http://127.0.0.1:{port}/")
        assert status == 200
        assert json.loads(body) == {"name": "example-service", "version": "0.1.0"}
        user = podman(
            "exec", "debian-http", "/usr/bin/python3.11", "-c", "import os;print(os.getuid())"
        )
        assert user.stdout.strip() == "1000"
    finally:
        podman("rm", "-f", "-t", "2", "debian-http", check=False)
    # CA certificates load through OpenSSL's default paths, as the ssl module uses them.
    out = podman.run(
        "example-service:0.1.0",
        "-c",
        "import ssl; print(ssl.create_default_context().cert_store_stats()['x509_ca'])",
        entrypoint="/usr/bin/python3.11",
    )
    assert int(out) > 100
    # No shell unless asked for.
    shell = podman.attempt("example-service:0.1.0", "-c", "true", entrypoint="/bin/sh")
    assert shell.returncode != 0
    assert "/bin/sh" in shell.stderr


def test_every_package_is_recorded_for_scanners(assembled_example):
    _, _, config = testbed.read_archive_manifest(assembled_example / ARCHIVE)
    packages = json.loads(config["config"]["Labels"][PACKAGES_LABEL])
    names = {p["name"] for p in packages}
    assert {"python3.11-minimal", "libc6", "ca-certificates", "tzdata", "netbase"} <= names
    assert all(len(p["sha256"]) == 64 and p["architecture"] in ("amd64", "all") for p in packages)
    files = image_files(
        assembled_example / ARCHIVE,
        lambda p: p.startswith("var/lib/dpkg/status.d/") or p in ("etc/passwd", "tmp"),
    )
    for package in packages:
        record = files[f"var/lib/dpkg/status.d/{package['name']}"].content.decode()
        assert f"Package: {package['name']}\n" in record
        assert f"Version: {package['version']}\n" in record
        assert "Status: install ok installed\n" in record
    assert b"cnb:x:1000:1000:" in files["etc/passwd"].content
    assert "var/lib/dpkg/status" not in files  # no dpkg database: status.d only, as distroless
    in_sbom = sbom_debs(assembled_example / ARCHIVE)
    assert in_sbom == {p["name"]: p["version"] for p in packages}


MIRROR = "http://deb.debian.org/debian"


def test_same_index_gives_the_same_base(debian_env, session_dir):
    store = BlobStore(Path(debian_env["BP_CACHE_DIR"]) / "blobs")
    first = assemble(BASE, Platform(), store, MIRROR, "never", print)
    fresh = BlobStore(session_dir / "other-cache" / "blobs")
    shutil.copytree(
        Path(debian_env["BP_CACHE_DIR"]) / "debian" / "inrelease",
        session_dir / "other-cache" / "debian" / "inrelease",
    )
    again = assemble(BASE, Platform(), fresh, MIRROR, "if-not-present", print)
    assert again.digest() == first.digest()
    assert len(first.layers) == 5


def test_arm64_base_is_assembled_without_emulation(debian_env):
    store = BlobStore(Path(debian_env["BP_CACHE_DIR"]) / "blobs")
    image = assemble(
        BASE,
        Platform("linux", "arm64"),
        store,
        "http://deb.debian.org/debian",
        "if-not-present",
        print,
    )
    assert image.platform == Platform("linux", "arm64")
    files = rootfs.find(
        image,
        lambda p: p in ("usr/bin/python3.11", "lib", "usr/lib/ld-linux-aarch64.so.1"),
        read=lambda p: p == "usr/bin/python3.11",
    )
    elf = files["usr/bin/python3.11"].content
    assert elf[:4] == b"\x7fELF" and int.from_bytes(elf[18:20], "little") == 183  # EM_AARCH64
    assert files["lib"].kind == "symlink" and files["lib"].linkname == "usr/lib"
    assert "usr/lib/ld-linux-aarch64.so.1" in files


def psycopg_project(directory: Path, base: str) -> Path:
    (directory / "src" / "pgprobe").mkdir(parents=True)
    (directory / "src" / "pgprobe" / "__init__.py").write_text(PROBE)
    (directory / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["hatchling"]\nbuild-backend = "hatchling.build"\n\n'
        '[project]\nname = "pgprobe"\nversion = "0.1.0"\nrequires-python = ">=3.11"\n'
        'dependencies = ["psycopg==3.2.10", "typing-extensions==4.15.0"]\n\n'
        '[project.scripts]\npgprobe = "pgprobe:main"\n\n'
        f'[tool.buildpacks]\nbase-image = "{base}"\npython-version = "3.11"\n'
        'system-packages = ["libpq5"]\n'
    )
    return directory


@pytest.mark.parametrize("which", ["assembled", "debootstrap"])
def test_psycopg_loads_libpq_from_system_packages(
    which, session_dir, debian_env, debootstrap_base, podman
):
    base = BASE if which == "assembled" else debootstrap_base
    project = psycopg_project(session_dir / f"pg-{which}", base)
    result = build(project, debian_env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "libpq5 15." in result.stdout + result.stderr
    image = f"pgprobe-{which}:0.1.0"
    podman("load", "-i", str(project / "dist" / "pgprobe-0.1.0.tar"))
    podman("tag", "pgprobe:0.1.0", image)
    out = podman.run(image)
    assert out.startswith("libpq 15"), out
    assert " python\n" in out  # the pure-Python wrapper, libpq found by ctypes
    assert 'connection to server at "127.0.0.1", port 1 failed' in out
    _, _, config = testbed.read_archive_manifest(project / "dist" / "pgprobe-0.1.0.tar")
    meta = json.loads(config["config"]["Labels"]["io.buildpacks.lifecycle.metadata"])
    layers = {bp["key"]: bp["layers"] for bp in meta["buildpacks"]}
    added = layers["python-buildpacks/system-packages"]["packages"]["data"]["debian-packages"]
    assert "libpq5" in {p["name"] for p in added}
    assert "libc6" not in {p["name"] for p in added}  # the base has it
    in_sbom = sbom_debs(project / "dist" / "pgprobe-0.1.0.tar")
    assert {p["name"]: p["version"] for p in added}.items() <= in_sbom.items()
    assert "libc6" in in_sbom  # the base's own, read from its dpkg database


def test_bash_is_added_when_asked(session_dir, debian_env, podman):
    project = psycopg_project(session_dir / "pg-bash", BASE)
    text = (project / "pyproject.toml").read_text().replace('["libpq5"]', '["bash"]')
    (project / "pyproject.toml").write_text(text)
    assert build(project, debian_env).returncode == 0
    podman("load", "-i", str(project / "dist" / "pgprobe-0.1.0.tar"))
    out = podman.run("pgprobe:0.1.0", "-c", "echo $BASH_VERSION", entrypoint="/bin/bash")
    assert out.startswith("5.2")


class TamperingMirror(testbed.Proxy):
    """Debian's archive on loopback, with the files whose path contains a key changed."""

    def __init__(self, tamper: dict[str, Callable[[bytes], bytes]]) -> None:
        super().__init__("deb.debian.org")
        self.tamper = tamper

    def intercept(self, handler, body: bytes | None) -> bool:
        for part, change in self.tamper.items():
            if part in handler.path:
                with urllib.request.urlopen("http://deb.debian.org" + handler.path) as r:
                    self.answer(handler, 200, change(r.read()))
                return True
        return False


def flip_last_byte(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 1])


@pytest.mark.parametrize(
    ("part", "change", "message"),
    [
        (
            "/dists/bookworm/InRelease",
            lambda d: d.replace(b"Suite: oldstable", b"Suite: 0ldstable"),
            "/debian/dists/bookworm/InRelease: OpenPGP signature does not verify",
        ),
        (
            "/dists/bookworm-security/main/binary-amd64/Packages.xz",
            flip_last_byte,
            "/debian-security/dists/bookworm-security/main/binary-amd64/Packages.xz: SHA-256 ",
        ),
        ("/pool/main/n/netbase/netbase_", flip_last_byte, "netbase_6.4_all.deb (SHA-256 from"),
    ],
    ids=["InRelease", "Packages", "deb"],
)
def test_tampered_mirror_is_refused(part, change, message, session_dir):
    mirror = TamperingMirror({part: change})
    project = testbed.copy_example(session_dir / f"tamper-{part.rsplit('/', 1)[-1]}")
    env = testbed.clean_env(BP_CACHE_DIR=str(project / ".cache"))
    try:
        result = build(
            project, env, "--base-image", BASE, "--debian-mirror", f"http://{mirror.host}/debian"
        )
    finally:
        mirror.stop()
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not (project / "dist").exists() or not any((project / "dist").iterdir())


def test_unreachable_mirror_is_named(session_dir):
    project = testbed.copy_example(session_dir / "unreachable-mirror")
    mirror = f"http://127.0.0.1:{testbed.free_port()}/debian"
    env = testbed.clean_env(BP_CACHE_DIR=str(project / ".cache"), BP_DEBIAN_MIRROR=mirror)
    result = build(project, env, "--base-image", BASE)
    assert result.returncode != 0
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith(f"error: Debian mirror {mirror} is unreachable")
    )
    assert "debian-mirror" in result.stderr


@pytest.mark.parametrize(
    ("packages", "message"),
    [
        ('["libpq"]', "system-packages: Debian has no package 'libpq'; did you mean libpq5"),
        (
            '["uuid-runtime"]',
            "Debian package passwd: its maintainer script creates system users or groups",
        ),
    ],
    ids=["unknown", "needs-scripts"],
)
def test_bad_system_packages(packages, message, request, session_dir, debian_env):
    project = psycopg_project(session_dir / f"bad-{request.node.callspec.id}", BASE)
    text = (project / "pyproject.toml").read_text().replace('["libpq5"]', packages)
    (project / "pyproject.toml").write_text(text)
    result = build(project, debian_env)
    assert result.returncode != 0
    assert f"error: {message}" in result.stderr
    assert not (project / "dist").exists() or not any((project / "dist").iterdir())


def test_rebase_moves_an_image_onto_a_new_assembled_base(assembled_example, debian_env, podman):
    """A new run image (here: the same packages dated otherwise, as a rebuilt suite would
    give) replaces the base layers; the app's layers are kept byte for byte."""
    archive = assembled_example / ARCHIVE
    rebased = assembled_example / "rebased.tar"
    env = {**debian_env, "SOURCE_DATE_EPOCH": "1700000000"}
    result = testbed.cli(
        "rebase", f"oci-archive:{archive}", "--run-image", BASE, "--output", str(rebased), env=env
    )
    assert result.returncode == 0, result.stdout + result.stderr
    _, before, _ = testbed.read_archive_manifest(archive)
    _, after, _ = testbed.read_archive_manifest(rebased)
    old = [d["digest"] for d in before["layers"]]
    new = [d["digest"] for d in after["layers"]]
    assert new[5:] == old[5:]  # dependencies, app, config, SBOM
    assert not set(new[:5]) & set(old[:5])  # the five base layers
    podman("load", "-i", str(rebased))
    out = podman.run(
        "example-service:0.1.0", "-c", "import flask; print('ok')", entrypoint="python"
    )
    assert out.strip() == "ok"


def test_rebase_fetches_from_the_configured_mirror(assembled_example, debian_env):
    """BP_DEBIAN_MIRROR reaches the new base's assembly: a mirror serving a forged
    InRelease is asked (the cached one is not enough: rebase pulls always) and refused."""
    forged = {"/dists/bookworm/InRelease": lambda d: d.replace(b"Suite: old", b"Suite: 0ld")}
    mirror = TamperingMirror(forged)
    rebased = assembled_example / "rebased-forged.tar"
    env = {**debian_env, "BP_DEBIAN_MIRROR": f"http://{mirror.host}/debian"}
    archive = f"oci-archive:{assembled_example / ARCHIVE}"
    try:
        result = testbed.cli(
            "rebase", archive, "--run-image", BASE, "--output", str(rebased), env=env
        )
    finally:
        mirror.stop()
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert f"http://{mirror.host}/debian/dists/bookworm/InRelease: OpenPGP" in errors[0]
    assert not rebased.exists()


def test_trixie_base_has_python_3_13(debian_env):
    store = BlobStore(Path(debian_env["BP_CACHE_DIR"]) / "blobs")
    image = assemble("debian-packages:trixie", Platform(), store, MIRROR, "if-not-present", print)
    files = rootfs.find(image, lambda p: p in ("usr/bin/python3.13", "etc/ld.so.cache"))
    assert set(files) == {"usr/bin/python3.13", "etc/ld.so.cache"}
    labels = image.config["config"]["Labels"]
    assert labels["io.buildpacks.base.distro.version"] == "13"


class PrivateMirror(testbed.Proxy):
    """Debian's archive on loopback as a private mirror serves it (aptly, reprepro): every
    ``InRelease`` signed with the mirror's own ``key``, not Debian's. ``held`` names packages
    of the security archive the mirror does not have yet: clearing it moves the suite, as a
    security update does. ``unsigned``: ``InRelease`` files served without a signature."""

    def __init__(self, key: testbed.SigningKey, held: set[str]) -> None:
        super().__init__("deb.debian.org")
        self.key = key
        self.held = held
        self.unsigned = False

    @staticmethod
    def upstream(path: str) -> bytes:
        with urllib.request.urlopen("http://deb.debian.org" + path) as r:
            return r.read()

    def security_index(self) -> bytes:
        """The security archive's Packages.xz without the held packages."""
        text = lzma.decompress(self.upstream(SECURITY_INDEX)).decode()
        kept = [
            stanza
            for stanza in text.split("\n\n")
            if stanza.split("\n", 1)[0].removeprefix("Package: ") not in self.held
        ]
        return lzma.compress("\n\n".join(kept).encode())

    def intercept(self, handler, body: bytes | None) -> bool:
        from buildpacks.debian.archive import verify_in_release

        if handler.path.endswith("/InRelease"):
            signed = verify_in_release(self.upstream(handler.path), handler.path)
            if self.held and "/bookworm-security/" in handler.path:
                index = self.security_index()
                entry = f" {hashlib.sha256(index).hexdigest()} {len(index)} {INDEX_NAME}"
                pattern = rf"^ [0-9a-f]{{64}} +\d+ {re.escape(INDEX_NAME)}$"
                signed = re.sub(pattern.encode(), entry.encode(), signed, flags=re.M)
            self.answer(handler, 200, signed if self.unsigned else self.key.clearsign(signed))
            return True
        if self.held and handler.path == SECURITY_INDEX:
            self.answer(handler, 200, self.security_index())
            return True
        return False


INDEX_NAME = "main/binary-amd64/Packages.xz"
SECURITY_INDEX = f"/debian-security/dists/bookworm-security/{INDEX_NAME}"
# Bookworm's security archive has a newer tzdata than its point release: held back, then
# published, it is the package the suite moves by.
MOVED = "tzdata"


def packages_of(archive: Path) -> dict[str, str]:
    _, _, config = testbed.read_archive_manifest(archive)
    records = json.loads(config["config"]["Labels"][PACKAGES_LABEL])
    return {p["name"]: p["version"] for p in records}


def test_a_moved_suite_gives_a_new_base_and_rebase_moves_images_onto_it(session_dir, podman):
    """A private mirror with its own key (debian-keyring, relative to the project): the
    suite moves between builds (a security update of tzdata appears); ``if-not-present``
    keeps the cached index, ``always`` assembles a new run image in which only tzdata's
    layer differs, and ``buildpacks rebase`` moves the image built before onto it, keeping
    the application's layers byte for byte."""
    from debian.debian_support import version_compare

    project = testbed.copy_example(session_dir / "moving")
    key = testbed.SigningKey(project / "keys")
    pyproject = project / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text() + f'base-image = "{BASE}"\ndebian-keyring = "keys/mirror.gpg"\n'
    )
    mirror = PrivateMirror(key, held={MOVED})
    env = testbed.clean_env(
        BP_CACHE_DIR=str(session_dir / "moving-cache"),
        BP_DEBIAN_MIRROR=f"http://{mirror.host}/debian",
    )
    archive = project / ARCHIVE
    try:
        first = build(project, env)
        assert first.returncode == 0, first.stdout + first.stderr
        before = session_dir / "moving-before.tar"
        shutil.copyfile(archive, before)
        old = packages_of(before)

        mirror.held = set()  # the suite moves
        cached = build(project, env)  # if-not-present: the verified InRelease in the cache
        assert cached.returncode == 0, cached.stdout + cached.stderr
        assert packages_of(archive) == old
        # ... which alone decides the base: the up-to-date check skips the build.
        assert "is up to date" in cached.stdout, cached.stdout

        moved = build(project, env, "--pull-policy", "always")
        assert moved.returncode == 0, moved.stdout + moved.stderr
        new = packages_of(archive)
        assert version_compare(new[MOVED], old[MOVED]) > 0
        assert {k: v for k, v in new.items() if k != MOVED} == {
            k: v for k, v in old.items() if k != MOVED
        }
        _, old_manifest, old_config = testbed.read_archive_manifest(before)
        _, new_manifest, new_config = testbed.read_archive_manifest(archive)
        size = testbed.first_own_layer(old_config)
        assert testbed.first_own_layer(new_config) == size == len(GROUPS) + 1
        old_base = [d["digest"] for d in old_manifest["layers"][:size]]
        new_base = [d["digest"] for d in new_manifest["layers"][:size]]
        changed = [i for i, (a, b) in enumerate(zip(old_base, new_base, strict=True)) if a != b]
        assert changed == [GROUPS.index("data")]  # tzdata's layer, nothing else

        # The image built before the move, rebased without a build: the new run image under
        # its own application layers. (Rebase reads settings from the environment.)
        rebased = session_dir / "moving-rebased.tar"
        rebase_env = {**env, "BP_DEBIAN_KEYRING": str(key.keyring)}
        result = testbed.cli(
            "rebase", f"oci-archive:{before}", "--run-image", BASE, "--output", str(rebased),
            env=rebase_env,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
    finally:
        mirror.stop()
    _, rebased_manifest, _ = testbed.read_archive_manifest(rebased)
    layers = [d["digest"] for d in rebased_manifest["layers"]]
    assert layers[:size] == new_base
    assert layers[size:] == [d["digest"] for d in old_manifest["layers"][size:]]
    assert packages_of(rebased)[MOVED] == new[MOVED]
    podman("load", "-i", str(rebased))
    record = podman.run(
        "example-service:0.1.0",
        "-c",
        f"print(open('/var/lib/dpkg/status.d/{MOVED}').read())",
        entrypoint="python",
    )
    assert f"Version: {new[MOVED]}\n" in record


@pytest.mark.parametrize("case", ["debian-keys", "other-key", "unsigned", "no-keyring"])
def test_a_private_mirror_is_refused_without_its_key(case, session_dir):
    key = testbed.SigningKey(session_dir / f"private-{case}")
    mirror = PrivateMirror(key, held=set())
    mirror.unsigned = case == "unsigned"
    project = testbed.copy_example(session_dir / f"private-{case}" / "project")
    keyring = {
        "debian-keys": None,
        "other-key": testbed.SigningKey(session_dir / f"private-{case}" / "other").keyring,
        "unsigned": key.keyring,
        "no-keyring": project / "missing.gpg",
    }[case]
    env = testbed.clean_env(
        BP_CACHE_DIR=str(project / ".cache"),
        BP_DEBIAN_MIRROR=f"http://{mirror.host}/debian",
        **({"BP_DEBIAN_KEYRING": str(keyring)} if keyring else {}),
    )
    try:
        result = build(project, env, "--base-image", BASE)
    finally:
        mirror.stop()
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    in_release = f"http://{mirror.host}/debian/dists/bookworm/InRelease"
    expected = {
        "debian-keys": f"{in_release}: OpenPGP signature does not verify with the Debian",
        "other-key": f"{in_release}: OpenPGP signature does not verify with debian-keyring",
        "unsigned": f"{in_release}: OpenPGP signature does not verify with debian-keyring",
        "no-keyring": f"debian-keyring (BP_DEBIAN_KEYRING): {keyring} is not a file",
    }[case]
    assert len(errors) == 1 and errors[0].startswith(f"error: {expected}"), result.stderr
    assert not (project / "dist").exists() or not any((project / "dist").iterdir())
