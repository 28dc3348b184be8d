"""Side-by-side benchmark: python-buildpacks (`hatch build -t image`), `podman build` with the
best Dockerfile we know (uv's Docker guide: uv in the build stage, a cache mount for uv's cache,
dependencies installed before the source is copied, the project last, a slim final stage),
`podman build` with a plain pip Dockerfile, and pyoci, on the same base image and the same
local wheelhouse and pins (served over loopback HTTP, so no tool is measured on network luck).

    .venv/bin/python bench/run.py [--projects example,heavy] [--repeat 3]
    .venv/bin/python bench/run.py --projects example --watch-only

Each row times one output, the same for every tool, from the edit to a usable result:
"to an archive" (ours: `dist/*.tar`; podman: `podman build` + `podman save`, the save skipped
when the image ID did not change; pyoci: its OCI layout directory), "to the engine's store"
(podman: `podman build` alone; we have no store of our own), "to a registry" (ours: publish;
podman: `podman build` + `podman push`). No-op rows compare a no-op with a no-op for the same
output. Our command line (`buildpacks build`) has rows of its own ("CLI: ..."), taken in the
same turns: through its build server (started by the run's first command, as a developer's
first command starts it), and once more with `BP_SERVER=0`, each command in its own process.
Prints a table with ratios ours/theirs.
"""

from __future__ import annotations

import argparse
import http.server
import importlib.metadata
import json
import os
import queue
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests import testbed  # noqa: E402  (the same real parts the tests use)

CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "python-buildpacks-bench"
BIN = Path(sys.executable).parent
HEAVY = ["numpy==2.2.6", "pandas==2.2.3"]
# The common pip Dockerfile: one stage, pip without a cache.
PIP_DOCKERFILE = """\
ARG BASE
FROM ${BASE}
ARG WHEELS
RUN python3 -m venv /venv
ENV PATH=/venv/bin:$PATH
WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir --no-index --find-links ${WHEELS} -r requirements.txt
COPY . .
RUN pip install --no-cache-dir --no-index --find-links ${WHEELS} --no-deps .
USER 1000:1000
CMD ["example-service"]
"""
# The pattern of uv's Docker guide (docs.astral.sh/uv/guides/integration/docker/). uv comes
# from the same wheelhouse as everything else (the host's uv version, downloaded from PyPI
# with the other wheels), pip-installed into a venv of the build stage: Docker Hub, where the
# guide copies it from, is out of reach here. The guide's `uv sync --locked
# --no-install-project` becomes `uv pip install -r requirements.txt`, because every tool
# installs the same compiled requirements.txt (no uv.lock).
UV_DOCKERFILE = """\
# syntax=docker/dockerfile:1
ARG BASE
FROM ${BASE} AS build
ARG WHEELS
ARG UV_VERSION
RUN python3 -m venv /opt/uv \\
    && /opt/uv/bin/pip install -q --no-index --find-links ${WHEELS} uv==${UV_VERSION}
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never
WORKDIR /app
COPY requirements.txt .
RUN --mount=type=cache,target=/root/.cache/uv \\
    /opt/uv/bin/uv venv -q --python /usr/bin/python3 /app/.venv \\
    && /opt/uv/bin/uv pip install -q --python /app/.venv/bin/python \\
       --no-index --find-links ${WHEELS} -r requirements.txt
COPY . /src
RUN --mount=type=cache,target=/root/.cache/uv \\
    /opt/uv/bin/uv pip install -q --python /app/.venv/bin/python \\
       --no-index --find-links ${WHEELS} --no-deps /src

FROM ${BASE}
COPY --from=build /app/.venv /app/.venv
ENV PATH=/app/.venv/bin:$PATH
WORKDIR /app
USER 1000:1000
CMD ["example-service"]
"""
UV_VERSION = importlib.metadata.version("uv")


def run(cmd: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(cmd)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
        )
    return result.stdout


def developer_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` as on a developer's machine. These machines export PYTHONDONTWRITEBYTECODE=1,
    which makes every Python process (Hatch, hatchling, pyoci) recompile each module it
    imports on every run; a developer's Python keeps its bytecode cache."""
    return {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}


def timed(action: Callable[[], object]) -> float:
    """The wall time of ``action``, begun with no dirty pages left by the steps before it
    (written out first, untimed, as hyperfine's ``--prepare sync``): a tool does not pay for
    the writeback of the build another tool just made."""
    os.sync()
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def edit(project: Path, n: int) -> None:
    server = project / "src" / "example_service" / "server.py"
    text = server.read_text()
    marker = "# bench edit"
    lines = [line for line in text.splitlines() if marker not in line]
    server.write_text("\n".join(lines) + f"\n{marker} {n}\n")


def registry_bytes(registry: testbed.Registry) -> int:
    root = registry.log.parent / "data"
    return sum(p.stat().st_size for p in root.rglob("data") if p.is_file())


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


class QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        pass  # pip and uv hang up early at times; a broken pipe is no result of ours


class Wheelhouse:
    """The wheels every tool installs from, served on loopback as a find-links page."""

    def __init__(self, requirements: list[str]) -> None:
        self.dir = CACHE / "wheelhouse"
        self.dir.mkdir(parents=True, exist_ok=True)
        reqs = self.dir / "all.txt"
        # hatchling builds the project's wheel; uv is the uv Dockerfile's installer.
        reqs.write_text("\n".join(requirements) + f"\nhatchling\nuv=={UV_VERSION}\n")
        run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--only-binary=:all:",
                "-d",
                str(self.dir),
                "-r",
                str(reqs),
            ]
        )
        handler = partial(QuietHandler, directory=str(self.dir))
        self.server = QuietServer(("127.0.0.1", 0), handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"

    def compile(self, requirements: list[str]) -> str:
        source = self.dir / "compile.in"
        source.write_text("\n".join(requirements) + "\n")
        return run(
            [
                str(BIN / "uv"),
                "pip",
                "compile",
                "-q",
                "--no-header",
                "--no-annotate",
                "--no-index",
                "--find-links",
                self.url,
                "--python-version",
                "3.11",
                str(source),
            ]
        )


class Setup:
    """Base images (and an updated one), a TLS registry, the wheelhouse, our plugin."""

    def __init__(self, work: Path) -> None:
        self.work = work
        packages = {"BASE_PACKAGES": "python3,python3-pip,python3-venv,ca-certificates"}
        layout = CACHE.parent / "python-buildpacks-testbed" / "debian-python-pip"
        self.base = (
            run(
                ["bash", str(REPO / "scripts/make-base-image.sh"), str(layout)],
                env={**os.environ, **packages},
            )
            .strip()
            .splitlines()[-1]
        )
        self.updated = testbed.updated_base(self.base, CACHE / "updated-base")
        ca, cert, key = testbed.make_ca_and_cert(work / "tls")
        self.ca = ca
        self.registry = testbed.Registry(work / "registry", tls=(cert, key))
        for spec, tag in ((self.base, "bookworm"), (self.updated, "updated")):
            testbed.push_layout(spec, self.registry, f"base/debian:{tag}")
        wheels = testbed.build_wheelhouse(work / "plugin")
        self.env = developer_env(
            testbed.clean_env(
                **testbed.plugin_env(wheels),
                HATCH_DATA_DIR=str(work / "hatch"),
                BP_BASE_IMAGE=self.base,
                BP_REGISTRY_CA=str(ca),
            )
        )


class Ours:
    name = "ours"

    def __init__(self, setup: Setup, wheelhouse: Wheelhouse, project: Path) -> None:
        self.setup, self.project = setup, project
        cache = setup.work / f"ours-cache-{project.name}"
        self.env = {
            **setup.env,
            "BP_CACHE_DIR": str(cache),
            "UV_CACHE_DIR": str(cache / "uv"),
            "UV_FIND_LINKS": wheelhouse.url,
            "UV_NO_INDEX": "1",
        }
        self.ref = f"{setup.registry.host}/bench/ours-{project.name}:1"
        # Hatch's own build environment is created once, outside the measurements.
        warm = {
            **self.env,
            "BP_CACHE_DIR": str(setup.work / "ours-warmup"),
            "UV_CACHE_DIR": str(setup.work / "ours-warmup-uv"),
        }
        run([str(BIN / "hatch"), "build", "-t", "image"], cwd=project, env=warm)
        shutil.rmtree(project / "dist")

    def build(self, **extra: str) -> None:
        run(
            [str(BIN / "hatch"), "build", "-t", "image"],
            cwd=self.project,
            env={**self.env, **extra},
        )

    def cold(self) -> None:
        self.build()

    def extra(self) -> dict[str, Callable[[], object]]:
        return {
            "no-op, whole lifecycle": self.noop_without_record,
            "reference: hatch build -t wheel": self.hatch_wheel,
            "CLI: warm edit to an archive": self.cli_edit,
            "CLI: no-op to an archive": self.cli,
            "CLI without the server: warm edit": partial(self.cli_edit, BP_SERVER="0"),
        }

    def cli(self, **extra: str) -> None:
        """``buildpacks build``: the command line, into the same ``dist/`` as Hatch."""
        run([str(BIN / "buildpacks"), "build", str(self.project)], env={**self.env, **extra})

    def cli_edit(self, **extra: str) -> None:
        """A one-line edit, then ``buildpacks build``."""
        edit(self.project, int(time.time() * 1000))
        self.cli(**extra)

    def noop_without_record(self) -> None:
        """A no-op build that runs the whole lifecycle: the up-to-date record removed."""
        shutil.rmtree(Path(self.env["BP_CACHE_DIR"]) / "uptodate", ignore_errors=True)
        self.build()

    def hatch_wheel(self) -> None:
        """Hatch alone, building just the wheel: the floor of any ``hatch build``."""
        run([str(BIN / "hatch"), "build", "-t", "wheel"], cwd=self.project, env=self.env)

    def archive(self) -> Path:
        return next((self.project / "dist").glob("*.tar"))

    def watch_push(self, edits: int = 20) -> float:
        """Median time from a saved edit to the manifest pushed to the registry by
        ``buildpacks watch --publish true`` (its "Built" line follows the push)."""
        proc = subprocess.Popen(
            [str(BIN / "buildpacks"), "watch", str(self.project)],
            env={**self.env, "BP_PUBLISH": "true", "BP_IMAGE": self.ref},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            # A bench started as a background job inherits SIGINT ignored; the loop must
            # see the Ctrl-C that ends it.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        lines: queue.Queue[str] = queue.Queue()

        def read() -> None:
            for line in proc.stdout or ():
                lines.put(line)
            lines.put("")

        def built() -> None:
            while not (line := lines.get(timeout=300)).startswith("Built "):
                if not line or line.startswith("error:"):
                    raise RuntimeError(f"buildpacks watch: {line or 'ended'}")

        threading.Thread(target=read, daemon=True).start()
        try:
            built()
            samples = []
            for n in range(edits):
                time.sleep(0.3)  # let the previous build settle, then forget its lines
                while not lines.empty():
                    lines.get()
                samples.append(timed(lambda n=n: (edit(self.project, 1000 + n), built())))
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=30)
        return statistics.median(samples)

    def push(self) -> None:
        self.build(BP_PUBLISH="true", BP_IMAGE=self.ref)

    def base_update(self) -> None:
        run(
            [
                str(BIN / "buildpacks"),
                "rebase",
                f"oci-archive:{self.archive()}",
                "--run-image",
                self.setup.updated,
            ],
            env=self.env,
        )

    def size(self) -> int:
        return sum(
            layer["size"] for layer in testbed.read_archive_manifest(self.archive())[1]["layers"]
        )


class Podman:
    """``podman build`` with the uv Dockerfile (the best we know)."""

    name = "podman-uv"
    dockerfile = UV_DOCKERFILE

    def __init__(self, setup: Setup, wheelhouse: Wheelhouse, project: Path) -> None:
        self.setup, self.project = setup, project
        # podman refuses a runroot path longer than 50 characters: keep it short.
        store = Path(tempfile.mkdtemp(prefix="pm-", dir="/tmp"))
        self.podman = testbed.Podman(store)
        self.args = self.podman.args
        for spec, tag in ((setup.base, "bookworm"), (setup.updated, "updated")):
            path, name = spec.removeprefix("oci-layout:").rsplit(":", 1)
            storage = f"containers-storage:[overlay@{store / 'root'}+{store / 'run'}]"
            run(["skopeo", "copy", "-q", f"oci:{path}:{name}", f"{storage}localhost/base:{tag}"])
        (project / "Dockerfile").write_text(self.dockerfile)
        (project / ".dockerignore").write_text("dist\n.venv\nDockerfile\n")
        self.wheels = wheelhouse.url
        self.ref = f"{setup.registry.host}/bench/podman-{project.name}:1"
        self.output = setup.work / f"podman-{project.name}.tar"
        self.saved: str | None = None  # the image ID in self.output

    def store(self, base: str = "bookworm") -> str:
        """``podman build`` alone: the image in podman's store; returns its ID."""
        return run(
            [
                *self.args,
                "build",
                "-q",
                "--pull=never",
                *testbed.RUN_FLAGS,
                "--build-arg",
                f"BASE=localhost/base:{base}",
                "--build-arg",
                f"WHEELS={self.wheels}",
                "--build-arg",
                f"UV_VERSION={UV_VERSION}",
                "-t",
                "bench:1",
                str(self.project),
            ]
        ).strip()

    def build(self, base: str = "bookworm") -> None:
        """To an archive: ``podman build``, then ``podman save`` unless the image is the one
        already saved (what a careful script or make rule would do)."""
        image = self.store(base)
        if image == self.saved and self.output.exists():
            return
        self.output.unlink(missing_ok=True)
        run([*self.args, "save", "-q", "-o", str(self.output), "bench:1"])
        self.saved = image

    def cold(self) -> None:
        self.build()

    def extra(self) -> dict[str, Callable[[], object]]:
        return {
            "warm edit to the engine's store": self.edit_to_store,
            "no-op to the engine's store": self.store,
        }

    def edit_to_store(self) -> None:
        edit(self.project, int(time.time() * 1000))
        self.store()

    def push(self) -> None:
        self.store()
        run([*self.args, "push", "-q", "--tls-verify=false", "bench:1", f"docker://{self.ref}"])

    def base_update(self) -> None:
        self.build("updated")

    def size(self) -> int:
        run([*self.args, "push", "-q", "--tls-verify=false", "bench:1", f"docker://{self.ref}"])
        manifest = json.loads(
            run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{self.ref}"])
        )
        return sum(layer["size"] for layer in manifest["layers"])


class PodmanPip(Podman):
    """``podman build`` with the common pip Dockerfile (pip, no cache, one stage)."""

    name = "podman-pip"
    dockerfile = PIP_DOCKERFILE


class Pyoci:
    name = "pyoci"

    def __init__(self, setup: Setup, wheelhouse: Wheelhouse, project: Path) -> None:
        self.setup, self.project, self.wheels = setup, project, wheelhouse.url
        venv = CACHE / "pyoci-venv"
        if not (venv / "bin" / "pyoci").exists():
            run([sys.executable, "-m", "venv", str(venv)])
            run([str(venv / "bin" / "pip"), "install", "-q", "pyoci==0.2.1"])
        self.pyoci = str(venv / "bin" / "pyoci")
        self.cache = setup.work / f"pyoci-cache-{project.name}"
        self.ref = f"{setup.registry.host}/bench/pyoci-{project.name}:1"
        self.env = {
            **developer_env(dict(os.environ)),
            "SSL_CERT_FILE": str(setup.ca),
            "REQUESTS_CA_BUNDLE": str(setup.ca),
        }

    def venv(self) -> None:
        """pyoci copies the host's virtual environment: the user must make it first."""
        venv = self.project / ".venv"
        shutil.rmtree(venv, ignore_errors=True)
        run([str(BIN / "uv"), "venv", "-q", "--python", sys.executable, str(venv)])
        run(
            [
                str(BIN / "uv"),
                "pip",
                "install",
                "-q",
                "--python",
                str(venv / "bin" / "python"),
                "--no-index",
                "--find-links",
                self.wheels,
                "-r",
                str(self.project / "requirements.txt"),
            ],
            env={**os.environ, "UV_CACHE_DIR": str(self.cache / "uv")},
        )

    def build(self, base: str = "bookworm", push: bool = False) -> None:
        run(
            [
                self.pyoci,
                "build",
                "--tag",
                self.ref,
                "--base-image",
                f"{self.setup.registry.host}/base/debian:{base}",
                "--context",
                str(self.project),
                "--include-deps",
                "--no-progress",
                "--cache-dir",
                str(self.cache),
                *(["--push"] if push else []),
            ],
            cwd=self.project,
            env=self.env,
        )

    def cold(self) -> None:
        self.venv()  # pyoci copies the host's virtual environment: making it is part of cold
        self.build()

    def extra(self) -> dict[str, Callable[[], object]]:
        return {}

    def push(self) -> None:
        self.build(push=True)

    def base_update(self) -> None:
        self.build("updated")

    def size(self) -> int:
        index = json.loads((self.project / "dist/image/index.json").read_text())
        digest = index["manifests"][0]["digest"].split(":")[1]
        manifest = json.loads((self.project / "dist/image/blobs/sha256" / digest).read_text())
        return sum(layer["size"] for layer in manifest["layers"])


def example_pins() -> list[str]:
    """The example project's pinned dependencies."""
    from buildpacks.toml import read_toml

    return read_toml(testbed.EXAMPLE / "pyproject.toml")["project"]["dependencies"]


def make_project(name: str, work: Path, wheelhouse: Wheelhouse) -> Path:
    project = testbed.copy_example(work / f"project-{name}")
    (project / "uv.lock").unlink()  # every tool installs the same requirements.txt
    extra = HEAVY if name.startswith("heavy") else []
    (project / "requirements.txt").write_text(wheelhouse.compile(example_pins() + extra))
    return project


def measure(
    tools: dict[str, Any], registry: testbed.Registry, repeat: int
) -> dict[str, dict[str, float]]:
    """Every scenario for every tool. The repeated ones (edit, no-op) take turns between the
    tools, so a change in the machine's load over the run falls on all of them alike."""
    results: dict[str, dict[str, float]] = {name: {} for name in tools}
    for name, tool in tools.items():
        results[name]["cold"] = timed(tool.cold)
    samples: dict[str, dict[str, list[float]]] = {name: {} for name in tools}
    for n in range(repeat):
        for name, tool in tools.items():
            edit(tool.project, n)
            scenarios = {
                "warm edit to an archive": tool.build,
                "no-op to an archive": tool.build,
                **tool.extra(),
            }
            for key, action in scenarios.items():
                samples[name].setdefault(key, []).append(timed(action))
    for name, tool in tools.items():
        for key, values in samples[name].items():
            results[name][key] = statistics.median(values)
        tool.push()  # the first push of this image, so the measured one is an update
        edit(tool.project, repeat + 1)
        before = registry_bytes(registry)
        results[name]["warm edit to registry"] = timed(tool.push)
        results[name]["bytes pushed after edit"] = registry_bytes(registry) - before
        results[name]["no-op to registry"] = timed(tool.push)
        if isinstance(tool, Ours):
            results[name]["watch: save to pushed manifest"] = tool.watch_push()
        results[name]["base update"] = timed(tool.base_update)
        tool.build()
        results[name]["image size"] = tool.size()
    return results


def fmt(key: str, value: float) -> str:
    if key in ("image size", "bytes pushed after edit"):
        return f"{value / 1e6:.2f} MB"
    return f"{value:.2f} s"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--projects", default="example,heavy")
    parser.add_argument("--tools", default="ours,podman-uv,podman-pip,pyoci")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--watch-only",
        action="store_true",
        help="only the watch loop: median of 20 saved edits to the pushed manifest",
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bp-bench-"))
    setup = Setup(work)
    wheelhouse = Wheelhouse([*example_pins(), *HEAVY])
    if args.watch_only:
        try:
            for project_name in args.projects.split(","):
                project = make_project(f"{project_name}-ours", work, wheelhouse)
                ours = Ours(setup, wheelhouse, project)
                print(f"{project_name}: watch, save to pushed manifest: {ours.watch_push():.3f} s")
        finally:
            setup.registry.stop()
            wheelhouse.server.shutdown()
            shutil.rmtree(work, ignore_errors=True)
        return 0
    tool_classes = {"ours": Ours, "podman-uv": Podman, "podman-pip": PodmanPip, "pyoci": Pyoci}
    table: dict[str, dict[str, dict[str, float]]] = {}
    try:
        for project_name in args.projects.split(","):
            tools = {}
            for tool_name in args.tools.split(","):
                project = make_project(f"{project_name}-{tool_name}", work, wheelhouse)
                tools[tool_name] = tool_classes[tool_name](setup, wheelhouse, project)
            print(f"... {project_name}", file=sys.stderr, flush=True)
            try:
                table[project_name] = measure(tools, setup.registry, args.repeat)
            finally:
                for tool in tools.values():
                    if isinstance(tool, Podman):
                        tool.podman.remove()
    finally:
        run([str(BIN / "buildpacks"), "server", "stop"], env=setup.env)
        setup.registry.stop()
        wheelhouse.server.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    print(render(table))
    return 0


def render(table: dict[str, dict[str, dict[str, float]]]) -> str:
    lines = []
    for project, tools in table.items():
        others = [t for t in tools if t != "ours"]
        lines.append(f"\n### {project}\n")
        lines.append(
            "| scenario | "
            + " | ".join(tools)
            + " | "
            + " | ".join(f"ours/{t}" for t in others)
            + " |"
        )
        lines.append("|---" * (1 + len(tools) + len(others)) + "|")
        keys = list(dict.fromkeys(key for results in tools.values() for key in results))
        for key in keys:
            row = [fmt(key, tools[t][key]) if key in tools[t] else "-" for t in tools]
            ratios = []
            for t in others:
                ours, theirs = tools.get("ours", {}).get(key), tools[t].get(key)
                ratios.append(f"{ours / theirs:.2f}" if ours is not None and theirs else "-")
            lines.append(f"| {key} | " + " | ".join(row) + " | " + " | ".join(ratios) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
