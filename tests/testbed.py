"""Real parts for end-to-end tests: the local Debian base image, a loopback
``docker-registry``, podman with runc, and the real Hatch CLI."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from buildpacks.oci.model import Image

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "example-project"
BIN = Path(sys.executable).parent


# The suite's default base: assembled from Debian's packages, as the README's first build
# would be with no Docker Hub in reach.
DEBIAN_BASE = "debian-packages:bookworm"


def debootstrap_base() -> str:
    """The "foreign" Debian base: made once by scripts/make-base-image.sh with debootstrap
    (one layer, a dpkg database, a shell), as an oci-layout spec. For what a base made by
    other tools must give, and for tests that need a shell or a layout on disk."""
    out = subprocess.run(
        [str(REPO / "scripts" / "make-base-image.sh")], capture_output=True, text=True, check=True
    )
    return out.stdout.strip().splitlines()[-1]


# What an earlier build on this machine left of the default base in its cache: the verified
# InRelease files and the assembled image's record and layers. Set once per test session by
# conftest's ``debian_cache``.
_warm_cache: Path | None = None


def warm_debian_cache(directory: Path) -> Image:
    """Assemble the default base into the cache ``directory`` (as a first build does, with
    the default pull policy) and let ``seeded_cache`` copy from it."""
    from buildpacks.oci.blobs import BlobStore
    from buildpacks.oci.model import Platform
    from buildpacks.oci.source import open_image

    global _warm_cache
    image = open_image(DEBIAN_BASE, Platform(), BlobStore(directory / "blobs"))
    _warm_cache = directory
    return image


def seeded_cache(cache: Path) -> str:
    """``cache`` (a new cache directory) holding what a first build on this machine left of
    the default base, so that a test's cold cache is cold for its own layers without
    assembling the base again. The pull policy is untouched: with ``if-not-present`` the
    cached InRelease files are used (and verified), with ``always`` they are fetched again.
    Blobs are copied, not linked: a test damaging its cache damages only its own."""
    if _warm_cache is not None and not (cache / "debian").exists():
        shutil.copytree(_warm_cache / "debian" / "inrelease", cache / "debian" / "inrelease")
        shutil.copytree(_warm_cache / "debian" / "images", cache / "debian" / "images")
        for record in (_warm_cache / "debian" / "images").glob("*.json"):
            for layer in json.loads(record.read_text())["layers"]:
                digest = layer["descriptor"]["digest"].replace(":", "/")
                (cache / "blobs" / digest).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(_warm_cache / "blobs" / digest, cache / "blobs" / digest)
    return str(cache)


def write_layout(image: Image, layout: Path, tag: str) -> str:
    """``image`` as an OCI image layout at ``layout`` (``tag`` its ref name); its spec."""
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    for layer in image.layers:
        shutil.copyfile(layer.path, blobs / layer.digest.removeprefix("sha256:"))
    (blobs / image.config_descriptor().digest.removeprefix("sha256:")).write_bytes(
        image.config_bytes()
    )
    (blobs / image.digest().removeprefix("sha256:")).write_bytes(image.manifest_bytes())
    manifest = {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": image.digest(),
        "size": len(image.manifest_bytes()),
        "annotations": {"org.opencontainers.image.ref.name": tag},
    }
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [manifest]}))
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    return f"oci-layout:{layout}:{tag}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_http(url: str, timeout: float = 30.0) -> tuple[int, bytes]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.status, response.read()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def wait_for_socket(path: Path, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear")
        time.sleep(0.1)


# Host networking and explicit limits: podman's defaults fail on these machines.
RUN_FLAGS = ("--network", "host", "--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096")


class Podman:
    """podman with its own storage, runc and host networking (what works on these machines)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.args = [
            "podman",
            "--root",
            str(root / "root"),
            "--runroot",
            str(root / "run"),
            # libpod's own state (default /run/libpod) kept per instance too: a reset of one
            # instance must not remove what another one, or the next, needs.
            "--tmpdir",
            str(root / "libpod"),
            "--storage-driver",
            "overlay",
            "--runtime",
            "runc",
            "--cgroup-manager",
            "cgroupfs",
        ]

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.args, *args], capture_output=True, text=True, check=check)

    def remove(self) -> None:
        """Remove containers, images and storage; podman keeps its overlay mounted until
        a reset, and a mounted directory cannot be deleted."""
        self("rm", "-a", "-f", check=False)
        self("system", "reset", "--force", check=False)
        shutil.rmtree(self.root, ignore_errors=True)

    @contextmanager
    def docker_api(self, socket_path: Path) -> Iterator[str]:
        """podman's Docker-compatible API service on ``socket_path`` while the block runs;
        gives its ``DOCKER_HOST`` address."""
        service = subprocess.Popen(
            [*self.args, "system", "service", "--time=0", f"unix://{socket_path}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for_socket(socket_path)
            yield f"unix://{socket_path}"
        finally:
            service.terminate()
            service.wait(timeout=20)

    def run(self, image: str, *command: str, entrypoint: str | None = None) -> str:
        """Run a container to completion and return its standard output."""
        return self.attempt(image, *command, entrypoint=entrypoint, check=True).stdout

    def attempt(
        self,
        image: str,
        *command: str,
        entrypoint: str | None = None,
        env: dict[str, str] | None = None,
        check: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        """Run a container to completion; the result whatever its exit status."""
        extra = ["--entrypoint", entrypoint] if entrypoint is not None else []
        for key, value in (env or {}).items():
            extra += ["-e", f"{key}={value}"]
        return self("run", "--rm", *RUN_FLAGS, *extra, image, *command, check=check)

    def serve(self, image: str, port: int, name: str) -> None:
        self("run", "-d", "--name", name, *RUN_FLAGS, "-e", f"PORT={port}", image)


class Registry:
    """A ``docker-registry`` on loopback with storage in a temp dir; optionally with
    htpasswd basic auth and TLS."""

    def __init__(
        self,
        workdir: Path,
        users: dict[str, str] | None = None,
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        import bcrypt

        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.log = workdir / "registry.log"
        config = [
            "version: 0.1",
            "log:\n  level: info\n  accesslog:\n    disabled: false",
            f"storage:\n  filesystem:\n    rootdirectory: {workdir / 'data'}",
            f"http:\n  addr: {self.host}",
        ]
        if tls:
            config.append(f"  tls:\n    certificate: {tls[0]}\n    key: {tls[1]}")
        if users:
            htpasswd = workdir / "htpasswd"
            htpasswd.write_text(
                "".join(
                    f"{user}:{bcrypt.hashpw(pw.encode(), bcrypt.gensalt(rounds=4)).decode()}\n"
                    for user, pw in users.items()
                )
            )
            config.append(f"auth:\n  htpasswd:\n    realm: test\n    path: {htpasswd}")
        (workdir / "config.yml").write_text("\n".join(config) + "\n")
        self.proc = subprocess.Popen(
            ["docker-registry", "serve", str(workdir / "config.yml")],
            stdout=open(self.log, "wb"),  # noqa: SIM115  (kept open for the registry's life)
            stderr=subprocess.STDOUT,
        )
        scheme = "https" if tls else "http"
        deadline = time.monotonic() + 15
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"registry did not start: {self.log.read_text()}") from None
                time.sleep(0.1)
        self.url = f"{scheme}://{self.host}"

    def requests(self, method: str, path_part: str) -> list[str]:
        """Access-log lines of ``method`` requests whose URI contains ``path_part``."""
        return [
            line
            for line in self.log.read_text().splitlines()
            if f'"{method} /v2/' in line and path_part in line
        ]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def make_ca_and_cert(directory: Path) -> tuple[Path, Path, Path]:
    """A self-signed CA and a certificate for 127.0.0.1 signed by it: (ca, cert, key)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = directory / "ca.pem", directory / "ca.key"
    cert, key, csr = directory / "cert.pem", directory / "cert.key", directory / "cert.csr"
    ext = directory / "ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run = lambda *a: subprocess.run(a, check=True, capture_output=True)  # noqa: E731
    run(
        "openssl",
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=test CA",
        "-keyout",
        str(ca_key),
        "-out",
        str(ca),
    )
    run(
        "openssl",
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        str(key),
        "-out",
        str(csr),
    )
    run(
        "openssl",
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(ca),
        "-CAkey",
        str(ca_key),
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        str(ext),
        "-out",
        str(cert),
    )
    return ca, cert, key


class Proxy:
    """A loopback HTTP proxy in front of a registry. ``intercept(handler, body)`` may answer
    a request itself (returning True); everything else is forwarded."""

    def __init__(self, upstream: str) -> None:
        import http.server
        import threading

        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                if not proxy.intercept(self, body):
                    proxy.forward(self, body, upstream)

            do_GET = do_PUT = do_POST = do_HEAD = do_PATCH = do_DELETE = _handle

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def intercept(self, handler, body: bytes | None) -> bool:
        return False

    @staticmethod
    def answer(
        handler, status: int, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> None:
        handler.send_response(status)
        for key, value in (headers or {}).items():
            handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(body)

    def forward(self, handler, body: bytes | None, upstream: str) -> None:
        import http.client

        conn = http.client.HTTPConnection(upstream, timeout=60)
        headers = {
            k: v for k, v in handler.headers.items() if k.lower() not in ("host", "authorization")
        }
        headers["Host"] = upstream
        conn.request(handler.command, handler.path, body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
        passed = {
            key: value.replace(upstream, self.host) if key.lower() == "location" else value
            for key, value in response.getheaders()
            if key.lower() not in ("transfer-encoding", "connection", "content-length")
        }
        self.answer(handler, response.status, data, passed)
        conn.close()

    def stop(self) -> None:
        self.server.shutdown()


class FlakyProxy(Proxy):
    """Fails some requests: every ``every``-th one gets a 500, and the one after it has its
    connection dropped."""

    def __init__(self, upstream: str, every: int = 4) -> None:
        self.every, self.count, self.failures = every, 0, 0
        super().__init__(upstream)

    def intercept(self, handler, body: bytes | None) -> bool:
        self.count += 1
        if self.count % self.every == 0:
            self.failures += 1
            self.answer(handler, 500)
            return True
        if self.count % self.every == 1 and self.count > 1:
            self.failures += 1
            handler.close_connection = True
            handler.connection.shutdown(socket.SHUT_RDWR)
            return True
        return False


class TokenProxy(Proxy):
    """Bearer-token auth in front of a registry, as Docker Hub and GHCR do it: ``/v2/``
    requests without a token get a challenge naming the token service (``/token`` here),
    which gives pull tokens to anyone and push tokens only for ``users``' credentials, or for
    one of ``refresh_tokens`` POSTed in an OAuth2 ``refresh_token`` grant."""

    def __init__(
        self, upstream: str, users: dict[str, str], refresh_tokens: tuple[str, ...] = ()
    ) -> None:
        self.users = users
        self.refresh_tokens = refresh_tokens
        self.token_requests: list[tuple[str, str | None]] = []  # (scope, user)
        super().__init__(upstream)

    def intercept(self, handler, body: bytes | None) -> bool:
        from urllib.parse import parse_qs, urlparse

        url = urlparse(handler.path)
        if url.path == "/token":
            form = parse_qs((body or b"").decode()) if handler.command == "POST" else {}
            scope = (form or parse_qs(url.query)).get("scope", [""])[0]
            user = self._basic_user(handler.headers.get("Authorization", ""))
            if form.get("grant_type") == ["refresh_token"]:
                token = form.get("refresh_token", [""])[0]
                user = "<refresh token>" if token in self.refresh_tokens else None
            self.token_requests.append((scope, user))
            if "push" in scope and user is None:
                self.answer(handler, 401)
            else:
                kind = "push" if "push" in scope else "pull"
                # The OAuth2 endpoint answers access_token; the GET one token.
                field = "access_token" if form else "token"
                token = json.dumps({field: f"token:{kind}"})
                self.answer(handler, 200, token.encode(), {"Content-Type": "application/json"})
            return True
        auth = handler.headers.get("Authorization", "")
        wants_push = handler.command in ("POST", "PUT", "PATCH", "DELETE")
        granted = auth == "Bearer token:push" or (auth == "Bearer token:pull" and not wants_push)
        if not granted and url.path != "/v2/":
            repository = url.path.removeprefix("/v2/").split("/blobs/")[0].split("/manifests/")[0]
            action = "pull,push" if wants_push else "pull"
            challenge = (
                f'Bearer realm="http://{self.host}/token",service="test-registry",'
                f'scope="repository:{repository}:{action}"'
            )
            self.answer(handler, 401, b"", {"WWW-Authenticate": challenge})
            return True
        return False

    def _basic_user(self, header: str) -> str | None:
        import base64

        if not header.startswith("Basic "):
            return None
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        return user if self.users.get(user) == password else None


def updated_base(base_spec: str, directory: Path) -> str:
    """The base of the OCI layout ``base_spec`` (tag ``bookworm``) with one more file
    (/etc/base-update) in a new top layer, as an OS update would give: a new run image for
    rebase tests."""
    layout = directory / "layout"
    if not (layout / "index.json").exists():
        shutil.copytree(base_spec.removeprefix("oci-layout:").rsplit(":", 1)[0], layout)
        bundle = directory / "bundle"
        subprocess.run(
            ["umoci", "unpack", "--image", f"{layout}:bookworm", str(bundle)],
            check=True,
            capture_output=True,
        )
        (bundle / "rootfs" / "etc" / "base-update").write_text("patched\n")
        subprocess.run(
            ["umoci", "repack", "--image", f"{layout}:bookworm-updated", str(bundle)],
            check=True,
            capture_output=True,
        )
        shutil.rmtree(bundle)
    return f"oci-layout:{layout}:bookworm-updated"


def push_layout(spec: str, registry: Registry, name: str) -> str:
    """Copy an ``oci-layout:PATH:TAG`` image to ``registry`` as ``name``; its reference."""
    path, tag = spec.removeprefix("oci-layout:").rsplit(":", 1)
    target = f"{registry.host}/{name}"
    subprocess.run(
        [
            "skopeo",
            "copy",
            "-q",
            "--dest-tls-verify=false",
            f"oci:{path}:{tag}",
            f"docker://{target}",
        ],
        check=True,
        capture_output=True,
    )
    return target


def push_base_index(
    cache_dir: Path, registry: Registry, podman: Podman, work: Path, name: str = "bases/debian"
) -> str:
    """A two-platform base index in ``registry``, made as a user makes one: ``podman manifest
    create/add/push --all`` from two single-architecture bases (Debian bookworm with Python,
    assembled for amd64 and arm64 into ``cache_dir``, each written as an OCI archive). Its
    reference."""
    from buildpacks.debian import DEFAULT_MIRROR
    from buildpacks.debian.assemble import assemble
    from buildpacks.oci.archive import write_archive
    from buildpacks.oci.blobs import BlobStore
    from buildpacks.oci.model import Platform

    store = BlobStore(cache_dir / "blobs")
    work.mkdir(parents=True, exist_ok=True)
    podman("manifest", "create", f"{name}:bookworm")
    for arch in ("amd64", "arm64"):
        platform = Platform("linux", arch)
        image = assemble("debian-packages:bookworm", platform, store, DEFAULT_MIRROR,
                         "if-not-present", print)  # fmt: skip
        write_archive(image, work / f"{arch}.tar", f"debian:{arch}", 315532801)
        podman("manifest", "add", f"{name}:bookworm", f"oci-archive:{work / f'{arch}.tar'}")
    reference = f"{registry.host}/{name}:bookworm"
    podman("manifest", "push", "--all", "--tls-verify=false", f"{name}:bookworm",
           f"docker://{reference}")  # fmt: skip
    return reference


def registry_digest(reference: str) -> str:
    """The digest of the image a (plain-HTTP, loopback) registry holds under ``reference``."""
    out = subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", f"docker://{reference}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)["Digest"]


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The ``buildpacks`` command line, as a user runs it."""
    return subprocess.run([str(BIN / "buildpacks"), *args], env=env, capture_output=True, text=True)


def ask_build_servers(directory: Path, what: bytes) -> list[str]:
    """What each build server of ``directory`` answers to ``status`` or ``stop``."""
    from buildpacks import server

    answers = (server.ask(str(path), what) for path in directory.glob("server-*.sock"))
    return [answer for answer in answers if answer is not None]


def stop_build_servers(directory: Path | None = None) -> None:
    """Every build server of ``directory`` (this user's default one) asked to stop:
    ``buildpacks server stop`` stops only its own environment's, and the suite's commands
    ran in several (``PYTHONUNBUFFERED``, ``PYTHONPATH``)."""
    from buildpacks import client

    if directory is None:
        found = client.runtime_dir()
        directory = Path(found) if found else None
    if directory is not None:
        ask_build_servers(directory, b"stop")


def build_wheelhouse(directory: Path) -> Path:
    """Our own wheel, where Hatch's build environment will find it."""
    subprocess.run(
        [str(BIN / "uv"), "build", "--wheel", "-q", "--out-dir", str(directory), str(REPO)],
        check=True,
    )
    return directory


def plugin_env(wheelhouse: Path) -> dict[str, str]:
    """Environment that makes Hatch's build environment install our freshly built wheel.

    The wheel is named by path through a uv override: uv caches wheels found by name in a
    find-links directory, so a rebuilt wheel of the same version would not be picked up.
    """
    wheel = next(wheelhouse.glob("python_buildpacks-*.whl"))
    override = wheelhouse / "override.txt"
    override.write_text(f"python-buildpacks @ {wheel.as_uri()}\n")
    return {"UV_OVERRIDE": str(override), "PIP_FIND_LINKS": str(wheelhouse)}


def copy_example(destination: Path) -> Path:
    shutil.copytree(EXAMPLE, destination, ignore=shutil.ignore_patterns("dist", "__pycache__"))
    return destination


def hatch_build(project: Path, env: dict[str, str], extra_env: dict[str, str] | None = None):
    """``hatch build -t image`` in ``project``, as a user runs it."""
    return subprocess.run(
        [str(BIN / "hatch"), "build", "-t", "image"],
        cwd=project,
        env={**env, **(extra_env or {})},
        capture_output=True,
        text=True,
    )


def read_archive_manifest(archive: Path) -> tuple[str, dict, dict]:
    """(digest, manifest, config) of the image in one of our archives."""
    import tarfile

    with tarfile.open(archive) as tar:

        def blob(digest: str) -> bytes:
            return tar.extractfile("blobs/" + digest.replace(":", "/")).read()  # type: ignore[union-attr]

        index = json.loads(tar.extractfile("index.json").read())  # type: ignore[union-attr]
        digest = index["manifests"][0]["digest"]
        manifest = json.loads(blob(digest))
        config = json.loads(blob(manifest["config"]["digest"]))
    return digest, manifest, config


def temp_dir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BP_")}
    env.update(extra)
    return env


class SigningKey:
    """An OpenPGP key made for a test, as a private Debian mirror (aptly, reprepro) has one:
    ``keyring`` is its public keyring file (binary, as ``gpg --export`` writes it), for
    ``debian-keyring``."""

    def __init__(self, directory: Path, name: str = "mirror") -> None:
        import pysequoia

        directory.mkdir(parents=True, exist_ok=True)
        self._tsk = pysequoia.Tsk.generate(f"Test {name} <{name}@example.invalid>")
        self.keyring = directory / f"{name}.gpg"
        self.keyring.write_bytes(bytes(self._tsk.extract_certificate()))

    def clearsign(self, text: bytes) -> bytes:
        """``text`` as an ``InRelease`` file signed with this key."""
        import pysequoia

        return pysequoia.sign(self._tsk.signer(), text, mode=pysequoia.SignatureMode.CLEAR)


def first_own_layer(config: dict) -> int:
    """The index of the first layer a build added above its run image, from the lifecycle
    label's ``runImage.topLayer``: right for a base of any number of layers."""
    meta = json.loads(config["config"]["Labels"]["io.buildpacks.lifecycle.metadata"])
    return config["rootfs"]["diff_ids"].index(meta["runImage"]["topLayer"]) + 1
