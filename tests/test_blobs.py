"""Every blob checked before it is used; zstd bases; bounded registry auth; cache keys that
follow the code. Real parts: the local Debian base, ``buildpacks build`` run as a user runs
it, podman, a loopback HTTP registry."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import json
import os
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import pytest

from buildpacks.errors import BuildError
from buildpacks.oci import blobs
from buildpacks.oci.blobs import BlobStore
from buildpacks.oci.layer import iter_entries
from buildpacks.oci.model import Platform, RegistryOptions
from buildpacks.oci.reference import Reference
from buildpacks.oci.source import open_image
from tests import testbed

AMD64 = Platform("linux", "amd64")
PLAIN_APP = Path(__file__).parent / "projects" / "plain-app"


def layout_copy(base_layout: str, directory: Path) -> Path:
    """A copy of the base's OCI layout, safe to damage."""
    source = Path(base_layout.removeprefix("oci-layout:").rsplit(":", 1)[0])
    shutil.copytree(source, directory)
    return directory


def biggest_blob(layout: Path) -> Path:
    return max((layout / "blobs" / "sha256").iterdir(), key=lambda p: p.stat().st_size)


def damage(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "truncated":
        path.write_bytes(bytes(data[: len(data) // 2]))
    else:
        data[len(data) // 3] ^= 0x01
        path.write_bytes(bytes(data))


def build_env(cache: Path, base: str, seed: bool = True, **extra: str) -> dict[str, str]:
    """A build on ``base`` with the cache ``cache``: seeded with the default base when that
    is the base and ``seed`` (a layout's blobs are read from the layout)."""
    seeded = seed and base == testbed.DEBIAN_BASE
    cache_dir = testbed.seeded_cache(cache) if seeded else str(cache)
    return testbed.clean_env(
        BP_BASE_IMAGE=base, BP_CACHE_DIR=cache_dir, PYTHONUNBUFFERED="1", **extra
    )


def plain_app(directory: Path) -> Path:
    shutil.copytree(PLAIN_APP, directory)
    return directory


def built_digest(result: subprocess.CompletedProcess[str]) -> str:
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    return next(line.split()[-1] for line in out.splitlines() if line.startswith("Digest: "))


@pytest.mark.parametrize("how", ["truncated", "bit-flipped"])
def test_bad_blob_in_the_store_is_removed_and_copied_again(base_layout, tmp_path, how):
    log: list[str] = []
    image = open_image(base_layout, AMD64, BlobStore(tmp_path / "blobs"))
    layer = max(image.layers, key=lambda layer: layer.descriptor.size)
    damage(layer.path, how)
    # A new store is a new build: it hashes what it holds once, before use.
    again = open_image(base_layout, AMD64, BlobStore(tmp_path / "blobs", log.append))
    assert [x.digest for x in again.layers] == [x.digest for x in image.layers]
    assert hashlib.sha256(layer.path.read_bytes()).hexdigest() == layer.digest.split(":")[1]
    assert log == [f"Cached blob {layer.digest[:19]} is corrupt " + log[0].split("corrupt ")[1]]


@pytest.mark.parametrize("how", ["truncated", "bit-flipped"])
def test_bad_blob_in_a_users_layout_is_an_error_naming_it(base_layout, tmp_path, how):
    layout = layout_copy(base_layout, tmp_path / "layout")
    blob = biggest_blob(layout)
    damage(blob, how)
    with pytest.raises(BuildError, match=f"blob sha256:{blob.name}: content digest"):
        open_image(f"oci-layout:{layout}:bookworm", AMD64, BlobStore(tmp_path / "blobs"))
    assert not list((tmp_path / "blobs").glob("sha256/*" + blob.name))
    # The same through the command line: one error line, no archive written.
    project = plain_app(tmp_path / "plain-app")
    env = build_env(tmp_path / "cache", f"oci-layout:{layout}:bookworm")
    result = testbed.cli("build", str(project), env=env)
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert "Traceback" not in out
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"blob sha256:{blob.name}" in errors[0], out
    assert not list(project.glob("dist/*.tar")) and not list(project.glob("dist/.*"))


def test_corrupt_cached_layer_is_rebuilt(base_image, tmp_path):
    project = plain_app(tmp_path / "plain-app")
    env = build_env(tmp_path / "cache", base_image)
    first = built_digest(testbed.cli("build", str(project), env=env))
    records = [json.loads(p.read_text()) for p in (tmp_path / "cache" / "layers").iterdir()]
    for record in records:
        digest = record["descriptor"]["digest"]
        damage(tmp_path / "cache" / "blobs" / "sha256" / digest.split(":")[1], "bit-flipped")
    (project / "dist" / "plain-app-latest.tar").unlink()  # nothing to restore from either
    result = testbed.cli("build", str(project), env=env)
    assert built_digest(result) == first
    assert result.stdout.count("is corrupt: rebuilding it") == len(records)


def test_damaged_layer_in_the_previous_archive_is_rebuilt(base_image, tmp_path):
    project = plain_app(tmp_path / "plain-app")
    archive = project / "dist" / "plain-app-latest.tar"
    first = built_digest(
        testbed.cli("build", str(project), env=build_env(tmp_path / "a", base_image))
    )
    _, manifest, config = testbed.read_archive_manifest(archive)
    venv = manifest["layers"][testbed.first_own_layer(config)]["digest"]  # the dependencies
    with tarfile.open(archive) as tar:
        offset = tar.getmember("blobs/" + venv.replace(":", "/")).offset_data
    with open(archive, "r+b") as f:
        f.seek(offset + 1000)
        byte = f.read(1)
        f.seek(offset + 1000)
        f.write(bytes([byte[0] ^ 1]))
    result = testbed.cli("build", str(project), env=build_env(tmp_path / "b", base_image))
    assert built_digest(result) == first
    assert f"layer is unusable (oci-archive:{archive}: blob {venv}: content digest" in result.stdout
    assert "Installing dependencies" in result.stdout


def zstd_base(base_layout: str, directory: Path) -> str:
    """The base with its layers recompressed with zstd: a new layout, same diff IDs."""
    import zstandard

    layout = layout_copy(base_layout, directory)
    blobs = layout / "blobs" / "sha256"
    index = json.loads((layout / "index.json").read_text())
    manifest_desc = index["manifests"][0]
    manifest = json.loads((blobs / manifest_desc["digest"].split(":")[1]).read_bytes())
    for layer in manifest["layers"]:
        old = blobs / layer["digest"].split(":")[1]
        data = zstandard.ZstdCompressor(level=3).compress(gzip.decompress(old.read_bytes()))
        old.unlink()
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        layer.update(
            mediaType="application/vnd.oci.image.layer.v1.tar+zstd",
            digest=f"sha256:{digest}",
            size=len(data),
        )
    data = json.dumps(manifest).encode()
    digest = hashlib.sha256(data).hexdigest()
    (blobs / digest).write_bytes(data)
    manifest_desc.update(digest=f"sha256:{digest}", size=len(data))
    (layout / "index.json").write_text(json.dumps(index))
    return f"oci-layout:{layout}:bookworm"


def test_base_with_zstd_layers_builds_and_runs(base_layout, tmp_path, podman):
    base = zstd_base(base_layout, tmp_path / "zstd-layout")
    image = open_image(base, AMD64, BlobStore(tmp_path / "blobs"))
    assert {x.descriptor.media_type for x in image.layers} == {
        "application/vnd.oci.image.layer.v1.tar+zstd"
    }
    names = {info.name for layer in image.layers for _, info in iter_entries(layer)}
    assert "usr/bin/python3.11" in names
    project = plain_app(tmp_path / "plain-app")
    result = testbed.cli("build", str(project), env=build_env(tmp_path / "cache", base))
    built_digest(result)
    assert "Python 3.11" in result.stdout
    loaded = podman("load", "-i", str(project / "dist" / "plain-app-latest.tar"), check=False)
    assert loaded.returncode == 0, loaded.stderr
    # The base has no shell: the image's Python looks.
    listing = podman.run(
        "plain-app:latest", "-c", "import os; print(*os.listdir('/workspace'))", entrypoint="python"
    )
    assert "app.py" in listing.split()
    out = podman.run(
        "plain-app:latest",
        "-c",
        "import waitress, app; print(app.__name__)",
        entrypoint="python",
    )
    assert out.strip() == "app"


class _Registry:
    """A loopback registry that hands out tokens freely but refuses every request with a
    token: ``insufficient_scope``, its challenge the same every time or (``vary``) new."""

    def __init__(self, vary: bool = False) -> None:
        self.token_requests = 0
        self.requests = 0
        registry = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                if self.path.startswith("/token"):
                    registry.token_requests += 1
                    body = json.dumps({"token": f"t{registry.token_requests}"}).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                else:
                    registry.requests += 1
                    body = b""
                    error = ',error="insufficient_scope"' if "Authorization" in self.headers else ""
                    nonce = f',nonce="{registry.requests}"' if vary else ""
                    self.send_response(401)
                    self.send_header(
                        "WWW-Authenticate",
                        f'Bearer realm="http://{registry.host}/token",service="test",'
                        f'scope="repository:team/app:pull"{error}{nonce}',
                    )
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("vary", [False, True])
def test_insufficient_scope_is_one_bounded_error(tmp_path, vary):
    from buildpacks.oci.registry import RegistryClient

    registry = _Registry(vary)
    try:
        ref = Reference.parse(f"{registry.host}/team/app:1")
        client = RegistryClient(ref, RegistryOptions(), credentials=None)
        with pytest.raises(BuildError) as raised:
            client.manifest("1")
        client.close()
    finally:
        registry.stop()
    message = str(raised.value)
    assert f"registry {registry.host} refused pull access to repository team/app" in message
    assert "insufficient_scope" in message
    assert registry.token_requests <= 3 if vary else registry.token_requests <= 2
    assert registry.requests <= 4


def test_cache_keys_follow_the_code(base_image, tmp_path):
    """A changed buildpack module gives new keys: its layers are rebuilt, neither taken from
    the cache nor restored from the previous archive in dist/."""
    project = plain_app(tmp_path / "plain-app")
    archive = project / "dist" / "plain-app-latest.tar"
    env = build_env(tmp_path / "cache", base_image)
    built_digest(testbed.cli("build", str(project), env=env))
    # Same code, empty cache: the archive's layers are restored by their keys.
    same = testbed.cli("build", str(project), env=build_env(tmp_path / "empty", base_image))
    built_digest(same)
    assert "Restored python-buildpacks/dependencies venv layer" in same.stdout

    code = tmp_path / "code"
    shutil.copytree(
        Path(__import__("buildpacks").__file__).parent,
        code / "buildpacks",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    module = code / "buildpacks" / "builtin" / "application.py"
    module.write_text(module.read_text() + "\n# a change to the code that builds the layer\n")

    def run_changed(cache: Path) -> str:
        result = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys; from buildpacks.cli import main; sys.exit(main())",
                "build",
                str(project),
            ],
            env={**build_env(cache, base_image), "PYTHONPATH": str(code)},
            cwd=tmp_path,  # not the checkout: `-c` puts the working directory on sys.path
            capture_output=True,
            text=True,
        )
        built_digest(result)
        return result.stdout

    original = archive.read_bytes()
    for cache in (tmp_path / "cache", tmp_path / "empty-2"):  # warm cache; empty + archive
        archive.write_bytes(original)  # the previous image, made by the old code
        out = run_changed(cache)
        assert "Restored" not in out and "(cached)" not in out, out
        assert "Reusing cached dependencies layer" not in out
        assert "Installing dependencies" in out


def test_stale_temp_files_go_and_live_ones_stay(tmp_path):
    from buildpacks.oci.blobs import claimed, remove_stale

    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from buildpacks.oci.blobs import claimed;"
            "fd, path = claimed(Path(sys.argv[1]), 'blob-');"
            "print(path, flush=True); time.sleep(60)",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        live = Path(holder.stdout.readline().strip())  # type: ignore[union-attr]
        fd, mine = claimed(tmp_path, "blob-")  # this process's: live as well
        remove_stale(tmp_path, "blob-*")
        assert live.exists() and mine.exists()
    finally:
        holder.kill()
        holder.wait()
    remove_stale(tmp_path, "blob-*")
    assert not live.exists()  # its maker is gone
    assert mine.exists()
    os.close(fd)
    remove_stale(tmp_path, "blob-*")
    assert not mine.exists()


def test_an_untouched_verified_blob_is_not_hashed_again_and_a_touched_one_is(tmp_path, monkeypatch):
    """The warm path hashes a blob once; any later change to its file, even one that puts the
    size and mtime back (a bit flipped in place, then ``touch -r``), moves its ctime and
    gets it hashed, found corrupt and removed."""
    from buildpacks.oci import blobs

    data = b"layer bytes " * 1000
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    first = blobs.BlobStore(tmp_path / "store")
    first.put_stream(iter([data]), digest, "a test blob")
    hashed = []
    real = blobs.file_digest
    monkeypatch.setattr(blobs, "file_digest", lambda p: hashed.append(p) or real(p))
    assert blobs.BlobStore(tmp_path / "store").has(digest)
    assert hashed == []  # recorded as verified when it was written, untouched since

    path = first.path(digest)
    before = path.stat()
    time.sleep(0.01)
    with path.open("r+b") as f:
        f.seek(5)
        f.write(b"X")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size
    assert not blobs.BlobStore(tmp_path / "store").has(digest)
    assert hashed == [path] and not path.exists()


@pytest.mark.parametrize("is_dir", [False, True])
def test_an_interrupt_while_claiming_a_temp_file_leaves_none(tmp_path, monkeypatch, is_dir):
    # Ctrl-C lands between any two Python calls; right after the file is made is the worst.
    def interrupted(fd: int, operation: int) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(blobs.fcntl, "flock", interrupted)
    with pytest.raises(KeyboardInterrupt):
        blobs.claimed(tmp_path / "tmp", "blob-", is_dir=is_dir)
    assert list((tmp_path / "tmp").iterdir()) == []
