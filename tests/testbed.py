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
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "example-project"
BIN = Path(sys.executable).parent


def base_image() -> str:
    """The local Debian base (made once by scripts/make-base-image.sh) as an oci-layout spec."""
    out = subprocess.run(
        [str(REPO / "scripts" / "make-base-image.sh")], capture_output=True, text=True, check=True
    )
    return out.stdout.strip().splitlines()[-1]


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


class Podman:
    """podman with its own storage, runc and host networking (what works on these machines)."""

    def __init__(self, root: Path) -> None:
        self.args = [
            "podman",
            "--root",
            str(root / "root"),
            "--runroot",
            str(root / "run"),
            "--storage-driver",
            "overlay",
            "--runtime",
            "runc",
            "--cgroup-manager",
            "cgroupfs",
        ]

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.args, *args], capture_output=True, text=True, check=check)

    def run(self, image: str, *command: str, entrypoint: str | None = None) -> str:
        """Run a container to completion and return its standard output."""
        extra = ["--entrypoint", entrypoint] if entrypoint is not None else []
        out = self(
            "run",
            "--rm",
            "--network",
            "host",
            "--ulimit",
            "nofile=4096:4096",
            "--ulimit",
            "nproc=4096:4096",
            *extra,
            image,
            *command,
        )
        return out.stdout

    def serve(self, image: str, port: int, name: str) -> None:
        self(
            "run",
            "-d",
            "--name",
            name,
            "--network",
            "host",
            "--ulimit",
            "nofile=4096:4096",
            "--ulimit",
            "nproc=4096:4096",
            "-e",
            f"PORT={port}",
            image,
        )


class Registry:
    """A ``docker-registry`` on loopback with storage in a temp dir."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.workdir = workdir
        self.log = workdir / "registry.log"
        config = workdir / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log:\n  level: info\n"
            f"storage:\n  filesystem:\n    rootdirectory: {workdir / 'data'}\n"
            f"http:\n  addr: {self.host}\n"
        )
        self.proc = subprocess.Popen(
            ["docker-registry", "serve", str(config)],
            stdout=open(self.log, "wb"),  # noqa: SIM115  (kept open for the registry's life)
            stderr=subprocess.STDOUT,
        )
        wait_for_http(f"http://{self.host}/v2/", timeout=15)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


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
