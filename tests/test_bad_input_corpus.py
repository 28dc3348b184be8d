"""The bad-input corpus: configuration, project contents, base images, dependencies,
registries (through a fault-injecting proxy), process faults, outputs and the command line.

Every failing case asserts the exit status, that the output holds exactly one ``error:``
line matching what the user must be told (no traceback, no "unexpected" fallback), and that
nothing half-written is left: no archive or ``.partial`` file in the output, no temp file in
the blob store, no work directory in ``TMPDIR``. Cases run the real ``buildpacks`` program
(or ``hatch build -t image``) as a user does, on one shared base image and registry.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests import testbed
from tests.faultproxy import Fault, FaultProxy

pytestmark = pytest.mark.e2e

PLAIN_APP = {"Procfile": "web: python3 app.py\n", "app.py": "print('hello')\n"}
PYPROJECT = """\
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "corpus-app"
version = "1.0"
requires-python = ">=3.11"

[project.scripts]
corpus-app = "corpus_app:main"

[tool.buildpacks]
"""


@dataclass
class Shared:
    """What every case may use: the base image, a registry, an image we built."""

    root: Path
    base: str  # oci-layout:PATH:TAG
    registry: testbed.Registry
    env: dict[str, str]
    built: Path  # the archive of a successful build of the plain app
    registry_base: str = ""  # the base pushed to the registry

    @property
    def base_dir(self) -> Path:
        return Path(self.base.removeprefix("oci-layout:").rsplit(":", 1)[0])


@dataclass
class Ctx:
    """One case's world: a fresh plain application, its own TMPDIR, an environment."""

    shared: Shared
    root: Path
    project: Path
    env: dict[str, str]
    cleanups: list[Callable[[], None]] = field(default_factory=list)

    def pyproject(self, extra: str = "", text: str | None = None) -> None:
        """Make the project a PEP 621 one (``extra`` lines under ``[tool.buildpacks]``)."""
        (self.project / "pyproject.toml").write_text((PYPROJECT if text is None else text) + extra)
        package = self.project / "corpus_app"
        package.mkdir(exist_ok=True)
        (package / "__init__.py").write_text("def main():\n    print('hi')\n")

    def base_copy(self) -> Path:
        """A private copy of the base layout (blobs hard-linked, so it is cheap)."""
        target = self.root / "base"
        subprocess.run(["cp", "-al", str(self.shared.base_dir), str(target)], check=True)
        for name in ("index.json", "oci-layout"):  # files the cases rewrite: real copies
            data = (target / name).read_bytes()
            (target / name).unlink()
            (target / name).write_bytes(data)
        return target

    def proxy(self, *faults: Fault) -> FaultProxy:
        proxy = FaultProxy(self.shared.registry.host, list(faults))
        self.cleanups.append(proxy.stop)
        return proxy

    def mount_tmpfs(self, path: Path, options: str) -> None:
        """A small tmpfs at ``path`` (needs root, as the CI machines run)."""
        path.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=True)
        self.cleanups.append(lambda: subprocess.run(["umount", "-l", str(path)], check=False))


@dataclass(frozen=True)
class Case:
    id: str
    # Prepares the case and returns the command line: ``["build", ...]`` runs ``buildpacks``,
    # ``["hatch"]`` runs ``hatch build -t image`` in the project.
    setup: Callable[[Ctx], list[str]]
    message: str  # a regular expression the one error line must match
    status: int = 1
    archive_kept: bool = False  # a push failed after the archive was finished: it stays


def build(*extra: str) -> Callable[[Ctx], list[str]]:
    return lambda ctx: ["build", str(ctx.project), *extra]


def then(*steps: Callable[[Ctx], object], argv: Callable[[Ctx], list[str]] | None = None):
    """Run ``steps`` on the case, then return ``argv`` (default: build the project)."""

    def setup(ctx: Ctx) -> list[str]:
        for step in steps:
            step(ctx)
        return (argv or build())(ctx)

    return setup


def write(name: str, content: str | bytes) -> Callable[[Ctx], None]:
    def step(ctx: Ctx) -> None:
        path = ctx.project / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)

    return step


def pyproject(extra: str = "", text: str | None = None) -> Callable[[Ctx], None]:
    return lambda ctx: ctx.pyproject(extra, text)


def setenv(**values: str) -> Callable[[Ctx], None]:
    return lambda ctx: ctx.env.update(values)


def replace_in_pyproject(old: str, new: str) -> Callable[[Ctx], None]:
    def step(ctx: Ctx) -> None:
        path = ctx.project / "pyproject.toml"
        text = path.read_text()
        assert old in text, old
        path.write_text(text.replace(old, new))

    return step


# -- base images ----------------------------------------------------------------------------


def base_layout(change: Callable[[Path], None]) -> Callable[[Ctx], list[str]]:
    """Build on a private copy of the base layout changed by ``change``."""

    def setup(ctx: Ctx) -> list[str]:
        layout = ctx.base_copy()
        change(layout)
        ctx.env["BP_CACHE_DIR"] = str(ctx.root / "cache")  # nothing already verified
        return ["build", str(ctx.project), "--base-image", f"oci-layout:{layout}:bookworm"]

    return setup


def _layer_blob(layout: Path) -> Path:
    return max((layout / "blobs" / "sha256").iterdir(), key=lambda p: p.stat().st_size)


def _corrupt_blob(layout: Path) -> None:
    blob = _layer_blob(layout)
    data = bytearray(blob.read_bytes())
    blob.unlink()  # a hard link to the shared base: never write through it
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))


def archive_base(kind: str, change: Callable[[Path], None]) -> Callable[[Ctx], list[str]]:
    """Build on the base as an ``oci-archive`` or ``docker-archive`` changed by ``change``."""

    def setup(ctx: Ctx) -> list[str]:
        archive = ctx.root / f"base-{kind}.tar"
        source = f"oci:{ctx.shared.base_dir}:bookworm"
        subprocess.run(
            ["skopeo", "copy", "-q", source, f"{kind}:{archive}"], check=True, capture_output=True
        )
        change(archive)
        ctx.env["BP_CACHE_DIR"] = str(ctx.root / "cache")
        return ["build", str(ctx.project), "--base-image", f"{kind}:{archive}"]

    return setup


def truncate(path: Path) -> None:
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)


def registry_base(name: str, *faults: Fault, policy: str | None = None):
    """Build on the base pulled from the registry through a proxy with ``faults``."""

    def setup(ctx: Ctx) -> list[str]:
        proxy = ctx.proxy(*faults)
        ctx.env["BP_CACHE_DIR"] = str(ctx.root / "cache")
        ctx.env["BP_INSECURE_REGISTRIES"] = proxy.host
        argv = ["build", str(ctx.project), "--base-image", f"{proxy.host}/{name}"]
        return argv + (["--pull-policy", policy] if policy else [])

    return setup


def publish(*faults: Fault) -> Callable[[Ctx], list[str]]:
    """Build on the registry base and push through a proxy with ``faults``."""

    def setup(ctx: Ctx) -> list[str]:
        proxy = ctx.proxy(*faults)
        ctx.env["BP_INSECURE_REGISTRIES"] = proxy.host
        return [
            "build",
            str(ctx.project),
            "--base-image",
            f"{proxy.host}/corpus/base:bookworm",
            "--image",
            f"{proxy.host}/corpus/{re.sub(r'[^a-z0-9]+', '-', ctx.root.name.lower()).strip('-')}:1",
            "--publish",
        ]

    return setup


# -- outputs --------------------------------------------------------------------------------


def dist_is_file(ctx: Ctx) -> list[str]:
    (ctx.project / "dist").write_text("not a directory\n")
    return build()(ctx)


def read_only_dir(ctx: Ctx, path: Path) -> None:
    ctx.mount_tmpfs(path, "ro,size=1m")


def full_disk_output(ctx: Ctx) -> list[str]:
    out = ctx.root / "small"
    ctx.mount_tmpfs(out, "size=2m")
    return build("--output-dir", str(out))(ctx)


def full_disk_cache(ctx: Ctx) -> list[str]:
    cache = ctx.root / "small-cache"
    ctx.mount_tmpfs(cache, "size=2m")
    ctx.env["BP_CACHE_DIR"] = str(cache)
    return build()(ctx)


def cache_is_file(ctx: Ctx) -> list[str]:
    cache = ctx.root / "cache-file"
    cache.write_text("a file\n")
    ctx.env["BP_CACHE_DIR"] = str(cache)
    return build()(ctx)


def unwritable_output(ctx: Ctx) -> list[str]:
    out = ctx.root / "ro-dist"
    read_only_dir(ctx, out)
    return build("--output-dir", str(out))(ctx)


def sbom_onto_file(ctx: Ctx) -> list[str]:
    target = ctx.root / "a-file"
    target.write_text("x\n")
    return ["sbom", f"oci-archive:{ctx.shared.built}", "-o", str(target)]


def sbom_unwritable(ctx: Ctx) -> list[str]:
    target = ctx.root / "ro"
    read_only_dir(ctx, target)
    return ["sbom", f"oci-archive:{ctx.shared.built}", "-o", str(target)]


def inspect_of(make: Callable[[Ctx], str]) -> Callable[[Ctx], list[str]]:
    return lambda ctx: ["inspect", make(ctx)]


def random_file(ctx: Ctx) -> str:
    path = ctx.root / "random.tar"
    path.write_bytes(os.urandom(4096))
    return f"oci-archive:{path}"


def text_file(ctx: Ctx) -> str:
    path = ctx.root / "notes.txt"
    path.write_text("hello\n")
    return f"oci-archive:{path}"


def truncated_built(ctx: Ctx) -> str:
    path = ctx.root / "truncated.tar"
    shutil.copy(ctx.shared.built, path)
    with open(path, "r+b") as f:
        f.truncate(2048)
    return f"oci-archive:{path}"


def no_version_file(ctx: Ctx) -> None:
    (ctx.project / ".python-version").unlink()


def symlink_loop(ctx: Ctx) -> None:
    (ctx.project / "loop-a").symlink_to("loop-b")
    (ctx.project / "loop-b").symlink_to("loop-a")


CLOSED_PORT = "127.0.0.1:9"  # discard: nothing listens there

CASES = [
    # configuration
    Case(
        "unknown key",
        then(pyproject('base-imag = "x"\n')),
        r"unknown key \[tool.buildpacks\] 'base-imag'; did you mean 'base-image'\?",
    ),
    Case(
        "key of the wrong type",
        then(pyproject("python-version = 3.11\n")),
        r"python-version must be a string, not float",
    ),
    Case(
        "invalid TOML",
        then(pyproject(text="[project\nname = 'x'\n")),
        r"pyproject.toml: invalid TOML",
    ),
    Case(
        "tool.buildpacks not a table",
        then(pyproject(text=PYPROJECT.replace("[tool.buildpacks]", "[tool]\nbuildpacks = 3"))),
        r"\[tool.buildpacks\] must be a table",
    ),
    Case(
        "invalid requires-python",
        then(pyproject(), replace_in_pyproject('">=3.11"', '">=3.11 or 4"')),
        r"requires-python '>=3.11 or 4' is not a valid version specifier",
    ),
    Case(
        "requires-python allows no base",
        then(pyproject(), no_version_file, replace_in_pyproject('">=3.11"', '">=4"')),
        r"has Python 3.11, outside requires-python '>=4'",
    ),
    Case(
        "python-version outside requires-python",
        then(pyproject(), setenv(BP_PYTHON_VERSION="3.9")),
        r"Python 3.9 \(from BP_PYTHON_VERSION\) is outside requires-python '>=3.11'",
    ),
    Case(
        ".python-version not a version",
        then(write(".python-version", "three\n")),
        r"'three' is not a Python version",
    ),
    Case(
        "python-version flag not a version",
        build("--python-version", "latest"),
        r"'latest' is not a Python version",
    ),
    Case(
        "boolean from the environment",
        then(setenv(BP_PUBLISH="maybe")),
        r"BP_PUBLISH: publish must be true or false, not 'maybe'",
    ),
    Case(
        "unknown pull policy",
        build("--pull-policy", "sometimes"),
        r"pull-policy \(command line\) must be one of",
    ),
    Case(
        "bad platform",
        build("--platform", "linux"),
        r"platforms \(command line\): 'linux' is not a platform; write os/arch",
    ),
    Case("bad image reference", build("--image", "Bad Name:1"), r"image \(command line\)"),
    Case("bad tag", build("--tags", "ok:1,::"), r"tags \(command line\)"),
    Case(
        "process that is not a string",
        then(pyproject("processes = { web = 3 }\n")),
        r"processes must be a table of strings",
    ),
    Case(
        "default process not declared",
        build("--default-process", "worker"),
        r"default-process.*'worker'.*(web)",
    ),
    Case(
        "cache-image not a reference",
        build("--cache-image", "::"),
        r"cache-image \(command line\)",
    ),
    # project contents
    Case(
        "version neither given nor dynamic",
        then(pyproject(), replace_in_pyproject('version = "1.0"\n', "")),
        r"pyproject.toml: \[project\] has no version",
    ),
    Case(
        "dynamic version with no source",
        then(pyproject(), replace_in_pyproject('version = "1.0"', 'dynamic = ["version"]')),
        r"building the wheel of .* failed",
    ),
    Case(
        "no entry point",
        then(
            lambda c: (c.project / "Procfile").unlink(),
            pyproject(),
            replace_in_pyproject('corpus-app = "corpus_app:main"', ""),
        ),
        r"no entry point",
    ),
    Case(
        "Procfile line without a type",
        then(write("Procfile", "python3 app.py\n")),
        r"Procfile: line 1: expected `type: command`",
    ),
    Case(
        "Procfile not UTF-8",
        then(write("Procfile", b"web: python3 \xff\xfe.py\n")),
        r"Procfile: not UTF-8 text",
    ),
    Case(
        "project is a file",
        lambda ctx: ["build", str(ctx.project / "app.py")],
        r"app.py: not a directory",
    ),
    Case(
        "project does not exist",
        lambda ctx: ["build", str(ctx.root / "nowhere")],
        r"nowhere: not a directory",
    ),
    Case(
        "pyproject.toml not UTF-8",
        then(write("pyproject.toml", b"[project]\nname = '\xff'\n")),
        r"pyproject.toml: cannot be read \('utf-8' codec can't decode byte 0xff",
    ),
    Case(
        "pyproject.toml is a directory",
        then(lambda c: (c.project / "pyproject.toml").mkdir()),
        r"pyproject.toml: cannot be read",
    ),
    # dependencies
    Case(
        "requirements.txt that is not one",
        then(write("requirements.txt", "flask==3.1.3 >=:: nonsense\n")),
        r"requirements.txt: line 1: invalid requirement",
    ),
    Case(
        "package index unreachable",
        then(write("requirements.txt", "six==1.16.0\n")),
        r"installing dependencies from requirements.txt failed: .*http://127.0.0.1:9/simple",
    ),
    # base images
    Case(
        "oci-layout path missing",
        build("--base-image", "oci-layout:/nonexistent/layout:bookworm"),
        r"/nonexistent/layout does not exist",
    ),
    Case(
        "oci-layout tag missing",
        lambda ctx: build("--base-image", f"oci-layout:{ctx.shared.base_dir}:nosuchtag")(ctx),
        r"no image tagged 'nosuchtag' \(tags: bookworm\)",
    ),
    Case(
        "oci-layout index.json corrupt",
        base_layout(lambda d: (d / "index.json").write_text('{"manifests": [')),
        r"index.json: not valid JSON",
    ),
    Case(
        "oci-layout index.json not an index",
        base_layout(lambda d: (d / "index.json").write_text("[1, 2]")),
        r"index.json: not an OCI image index",
    ),
    Case(
        "oci-layout blob missing",
        base_layout(lambda d: _layer_blob(d).unlink()),
        r"blob sha256:\w+ is missing from the layout",
    ),
    Case(
        "oci-layout blob corrupt",
        base_layout(_corrupt_blob),
        r"content digest sha256:\w+ does not match sha256:\w+",
    ),
    Case(
        "oci-layout not a layout",
        lambda ctx: build("--base-image", f"oci-layout:{ctx.project}:x")(ctx),
        r"missing index.json; is it an OCI image layout\?",
    ),
    Case(
        "oci-archive truncated",
        archive_base("oci-archive", truncate),
        r"base-oci-archive.tar: the archive is truncated or damaged",
    ),
    Case(
        "oci-archive not a tar",
        archive_base("oci-archive", lambda p: p.write_bytes(os.urandom(10000))),
        r"base-oci-archive.tar: not a tar archive$",
    ),
    Case(
        "docker-archive truncated",
        archive_base("docker-archive", truncate),
        r"docker-archive:.*: the archive is truncated or damaged",
    ),
    Case(
        "docker-archive not a tar",
        archive_base("docker-archive", lambda p: p.write_bytes(b"hello\n" * 1000)),
        r"docker-archive:.*: not a tar archive",
    ),
    Case(
        "base without the Python asked for",
        build("--python-version", "3.12"),
        r"has no Python 3\.12 \(found: /usr/bin/python3\.11\)",
    ),
    Case(
        "base for another architecture",
        build("--platform", "linux/arm64"),
        r"is for linux/amd64, the build targets linux/arm64",
    ),
    Case(
        "registry base that does not exist",
        registry_base("corpus/nothing:here"),
        r"image not found: .*/corpus/nothing:here",
    ),
    Case(
        "registry unreachable",
        build("--base-image", f"{CLOSED_PORT}/x/y:1"),
        r"cannot reach registry 127.0.0.1:9",
    ),
    Case(
        "pull-policy never with nothing cached",
        registry_base("corpus/base:bookworm", policy="never"),
        r"is not in the local cache and pull-policy is never",
    ),
    # registries, through the fault proxy
    Case(
        "registry answers 500 to every manifest request",
        registry_base("corpus/base:bookworm", Fault("GET", "/manifests/", "500")),
        r"HTTP 500",
    ),
    Case(
        "registry drops every connection for a blob",
        registry_base("corpus/base:bookworm", Fault("GET", "/blobs/", "drop")),
        r"cannot reach registry .*\(blob sha256:\w+ of .*corpus/base:bookworm\)",
    ),
    Case(
        "registry cuts every blob mid-body",
        registry_base("corpus/base:bookworm", Fault("GET", "/blobs/", "truncate")),
        r"download of blob sha256:\w+ .* failed",
    ),
    Case(
        "registry asks for a scope it never grants",
        registry_base("corpus/base:bookworm", Fault("GET", "/manifests/", "scope")),
        r"insufficient_scope|refused|denied",
    ),
    Case(
        "push refused for insufficient scope",
        publish(Fault("POST", "/blobs/uploads/", "scope"), Fault("PUT", "/manifests/", "scope")),
        r"insufficient_scope|refused|denied",
        archive_kept=True,
    ),
    Case(
        "push: every manifest PUT answered 500",
        publish(Fault("PUT", "/manifests/", "500")),
        r"HTTP 500 to manifest corpus/",
        archive_kept=True,
    ),
    # outputs
    Case("dist is a file", dist_is_file, r"dist: a file is where a directory is needed"),
    Case(
        "output directory read-only",
        unwritable_output,
        r"ro-dist/plain-app-latest.tar: read-only file system",
    ),
    Case("cache dir is a file", cache_is_file, r"cache-file: .*(not a directory|a file is where)"),
    Case("output disk full", full_disk_output, r"no space left on the device"),
    Case("cache disk full", full_disk_cache, r"no space left on the device"),
    Case(
        "sbom -o onto a file",
        sbom_onto_file,
        r"cannot write the SBOM files into .*/a-file: File exists",
    ),
    Case("sbom -o read-only", sbom_unwritable, r"into .*/ro: Read-only file system"),
    # inspect, sbom, rebase of what is not an image of ours
    Case("inspect of random bytes", inspect_of(random_file), r"random.tar: not a tar archive"),
    Case("inspect of a text file", inspect_of(text_file), r"notes.txt: not a tar archive"),
    Case(
        "inspect of a truncated archive",
        inspect_of(truncated_built),
        r"truncated.tar: the archive is truncated or damaged",
    ),
    Case(
        "inspect of a missing file",
        inspect_of(lambda ctx: f"oci-archive:{ctx.root}/none.tar"),
        r"none.tar does not exist",
    ),
    Case(
        "inspect of a plain base image",
        inspect_of(lambda ctx: ctx.shared.base),
        r"has no io.buildpacks.lifecycle.metadata label",
    ),
    Case(
        "sbom of a plain base image",
        lambda ctx: ["sbom", ctx.shared.base, "-o", str(ctx.root / "out")],
        r"has no io.buildpacks.lifecycle.metadata label",
    ),
    Case(
        "rebase with nowhere to put the result",
        lambda ctx: ["rebase", f"{ctx.shared.registry.host}/corpus/x:1"],
        r"give --publish to push the result, or --output PATH",
    ),
    Case(
        "rebase --publish of a local archive",
        lambda ctx: ["rebase", f"oci-archive:{ctx.shared.built}", "--publish"],
        r"is not a registry reference",
    ),
    # the command line
    Case("no command", lambda ctx: [], r"error: buildpacks: .*required", status=2),
    Case("unknown command", lambda ctx: ["bild"], r"invalid choice: 'bild'", status=2),
    Case(
        "unknown flag",
        lambda ctx: ["build", str(ctx.project), "--bogus-flag", "x"],
        r"unrecognized arguments: --bogus-flag x",
        status=2,
    ),
    Case("inspect without a reference", lambda ctx: ["inspect"], r"required: ref", status=2),
]

# Faults a build must ride out: one failure, then the registry works again.
RECOVERED = {
    "one 500 on the base manifest": registry_base(
        "corpus/base:bookworm", Fault("GET", "/manifests/", "500", times=1)
    ),
    "one dropped connection before the manifest": registry_base(
        "corpus/base:bookworm", Fault("GET", "/manifests/", "drop", times=1)
    ),
    "one blob cut mid-body": registry_base(
        "corpus/base:bookworm", Fault("GET", "/blobs/sha256", "truncate", times=1)
    ),
    "response lost after a blob PUT": publish(Fault("PUT", "/blobs/uploads/", "lose", times=1)),
    "response lost after the manifest PUT": publish(Fault("PUT", "/manifests/", "lose", times=1)),
    "one 500 on a blob upload": publish(Fault("PUT", "/blobs/uploads/", "500", times=1)),
}


# -- fixtures and the runner ----------------------------------------------------------------


@pytest.fixture(scope="module")
def shared(session_dir: Path, base_layout: str, registry: testbed.Registry) -> Shared:
    # The default base as a layout: the cases damage private copies of its files.
    root = session_dir / "corpus"
    root.mkdir()
    env = testbed.clean_env(BP_BASE_IMAGE=base_layout, BP_CACHE_DIR=str(root / "cache"))
    env.pop("BP_DEBUG", None)
    app = root / "plain-app"
    _plain_app(app)
    result = testbed.cli("build", str(app), env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    registry_base = testbed.push_layout(base_layout, registry, "corpus/base:bookworm")
    return Shared(
        root, base_layout, registry, env, app / "dist/plain-app-latest.tar", registry_base
    )


def _plain_app(path: Path) -> None:
    path.mkdir(parents=True)
    for name, text in PLAIN_APP.items():
        (path / name).write_text(text)
    (path / ".python-version").write_text("3.11\n")


@pytest.fixture
def ctx(shared: Shared, request: pytest.FixtureRequest) -> Iterator[Ctx]:
    slug = re.sub(r"\W+", "-", request.node.name)[-60:]
    root = shared.root / slug
    project = root / "plain-app"
    _plain_app(project)
    (root / "tmp").mkdir()
    env = {**shared.env, "TMPDIR": str(root / "tmp")}
    # Dependencies resolve against an index that is not there: the corpus needs no network.
    env["BP_INDEX_URL"] = f"http://{CLOSED_PORT}/simple"
    context = Ctx(shared, root, project, env)
    yield context
    for cleanup in reversed(context.cleanups):
        cleanup()


def run(ctx: Ctx, argv: list[str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in ctx.env.items() if v != ""}
    return subprocess.run(
        [str(testbed.BIN / "buildpacks"), *argv],
        env=env,
        cwd=ctx.project,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def leftovers(ctx: Ctx) -> list[str]:
    """Half-written things a failed or interrupted run must not leave."""
    left = [str(p) for p in ctx.root.rglob("*.partial")]
    left += [str(p) for p in (ctx.root / "tmp").iterdir()]
    dist = ctx.project / "dist"
    if dist.is_dir():
        left += [str(p) for p in dist.iterdir()]
    for cache in {Path(ctx.env["BP_CACHE_DIR"]), ctx.root / "cache"}:
        tmp = cache / "blobs" / "tmp"
        if tmp.is_dir():
            left += [str(p) for p in tmp.iterdir()]
    return left


def assert_one_line_failure(
    result: subprocess.CompletedProcess[str], status: int, pattern: str
) -> None:
    out = result.stdout + result.stderr
    assert result.returncode == status, out
    # Ours at the start of a line; a build backend's own, quoted and indented, may be shown.
    assert not any(line.startswith("Traceback") for line in out.splitlines()), out
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, out
    assert re.search(pattern, errors[0]), errors[0]
    assert not errors[0].startswith("error: unexpected "), errors[0]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, ctx: Ctx) -> None:
    argv = case.setup(ctx)
    result = run(ctx, argv)
    assert_one_line_failure(result, case.status, case.message)
    left = leftovers(ctx)
    if case.archive_kept:  # whole, as its digest shows
        left = [p for p in left if not (p.endswith(".tar") and testbed.read_archive_manifest(p))]
    assert left == []


@pytest.mark.parametrize("name", list(RECOVERED))
def test_registry_faults_ridden_out(name: str, ctx: Ctx) -> None:
    argv = RECOVERED[name](ctx)
    result = run(ctx, argv)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "error:" not in out, out
    proxy = next(c.__self__ for c in ctx.cleanups if hasattr(c, "__self__"))
    assert proxy.hits() == 1, "the fault was never injected"
    archives = list((ctx.project / "dist").glob("*.tar"))
    assert len(archives) == 1
    digest = testbed.read_archive_manifest(archives[0])[0]
    if "--publish" in argv:  # what the registry holds is the image built
        image = argv[argv.index("--image") + 1].split("/", 1)[1]
        assert testbed.registry_digest(f"{ctx.shared.registry.host}/{image}") == digest
    assert [p for p in leftovers(ctx) if not p.endswith((".tar", ".tar.digest"))] == []


def test_unexpected_errors_name_what_and_where_and_bp_debug_shows_the_traceback(ctx: Ctx):
    # A base layout whose index.json lists a manifest without a digest: no check of ours
    # expects it, so it reaches the generic handler.
    layout = ctx.base_copy()
    (layout / "index.json").write_text('{"manifests": [{"mediaType": "x"}]}')
    ctx.env["BP_CACHE_DIR"] = str(ctx.root / "cache")
    argv = ["build", str(ctx.project), "--base-image", f"oci-layout:{layout}"]
    quiet = run(ctx, argv)
    out = quiet.stdout + quiet.stderr
    assert quiet.returncode == 1, out
    assert "Traceback" not in out
    (line,) = [line for line in out.splitlines() if line.startswith("error:")]
    assert re.search(r"\(in \w+, \w+/\w+\.py:\d+\)", line), line
    assert "BP_DEBUG=1" in line or "index.json" in line, line
    ctx.env["BP_DEBUG"] = "1"
    loud = run(ctx, argv)
    assert loud.returncode == 1
    assert "Traceback (most recent call last)" in loud.stderr
    assert loud.stderr.strip().splitlines()[-1].startswith("error:")
    assert leftovers(ctx) == []


# -- process faults -------------------------------------------------------------------------


def _start(ctx: Ctx, argv: list[str]) -> subprocess.Popen[str]:
    env = {k: v for k, v in ctx.env.items() if v != ""}
    return subprocess.Popen(
        argv,
        env=env,
        cwd=ctx.project,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's Ctrl-C hits
    )


def _wait_for(proc: subprocess.Popen[str], marker: str, seen: list[str]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        seen.append(line)
        if marker in line:
            return
    raise AssertionError(f"{marker!r} never printed: {''.join(seen)}")


def _wait_for_group(pgid: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    raise AssertionError(f"process group {pgid} still running")


def _big_app(ctx: Ctx) -> None:
    """Enough source (incompressible) that building and exporting take a moment."""
    data = ctx.project / "data"
    data.mkdir()
    for i in range(8):
        (data / f"blob{i}.bin").write_bytes(os.urandom(4 << 20))


@pytest.mark.parametrize("phase", ["===> ANALYZING", "===> BUILDING", "===> EXPORTING"])
def test_ctrl_c_prints_one_line_exits_130_and_leaves_nothing(phase: str, ctx: Ctx) -> None:
    _big_app(ctx)
    ctx.env["BP_CACHE_DIR"] = str(ctx.root / "cache")  # a cold cache: ANALYZING copies the base
    proc = _start(ctx, [str(testbed.BIN / "buildpacks"), "build", str(ctx.project)])
    seen: list[str] = []
    _wait_for(proc, phase, seen)
    os.killpg(proc.pid, signal.SIGINT)
    rest, _ = proc.communicate(timeout=60)
    out = "".join(seen) + rest
    assert proc.returncode == 130, out
    assert "Traceback" not in out, out
    assert [line for line in out.splitlines() if line.startswith("error:")] == [
        "error: interrupted"
    ], out
    assert leftovers(ctx) == []


@pytest.mark.parametrize("phase", ["===> ANALYZING", "===> BUILDING", "===> EXPORTING"])
def test_kill_9_then_the_next_build_succeeds_and_nothing_half_written_remains(
    phase: str, ctx: Ctx
) -> None:
    _big_app(ctx)
    ctx.env["BP_CACHE_DIR"] = str(ctx.root / "cache")
    proc = _start(ctx, [str(testbed.BIN / "buildpacks"), "build", str(ctx.project)])
    _wait_for(proc, phase, [])
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    again = run(ctx, ["build", str(ctx.project)])
    assert again.returncode == 0, again.stdout + again.stderr
    archive = ctx.project / "dist/plain-app-latest.tar"
    assert testbed.read_archive_manifest(archive)[0].startswith("sha256:")
    # What the killed build left in TMPDIR is the system's to clean; in the output and the
    # cache, the next build must have left nothing half-written.
    left = [p for p in leftovers(ctx) if not p.startswith(str(ctx.root / "tmp"))]
    assert left == [str(archive)]


def test_concurrent_builds_of_one_project_both_succeed_with_one_digest(ctx: Ctx) -> None:
    ctx.env["BP_CACHE_DIR"] = str(ctx.root / "cache")
    argv = [str(testbed.BIN / "buildpacks"), "build", str(ctx.project)]
    procs = [_start(ctx, argv) for _ in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    digests = {re.search(r"Digest: (sha256:\w+)", out)[1] for out in outs}  # type: ignore[index]
    assert len(digests) == 1, outs
    archive = ctx.project / "dist/plain-app-latest.tar"
    assert testbed.read_archive_manifest(archive)[0] == digests.pop()
    assert leftovers(ctx) == [str(archive)]


# -- the Hatch target -----------------------------------------------------------------------


HATCH_TARGET = """[tool.hatch.build.targets.image]
dependencies = ["python-buildpacks"]

[tool.buildpacks]
"""
HATCH_CASES = {
    "invalid requires-python": (
        replace_in_pyproject('">=3.11"', '">=3.11 or 4"'),
        r"pyproject.toml: Field `project.requires-python` is invalid",
    ),
    "dynamic version without a source": (
        replace_in_pyproject('version = "1.0"', 'dynamic = ["version"]'),
        r"pyproject.toml: Missing `tool.hatch.version` configuration",
    ),
    "dist is a file": (
        lambda c: (c.project / "dist").write_text("x"),
        r"dist: a file is where a directory is needed",
    ),
    "unknown key": (
        replace_in_pyproject("[tool.buildpacks]\n", '[tool.buildpacks]\nbase-imag = "x"\n'),
        r"did you mean 'base-image'\?",
    ),
}


@pytest.fixture
def hatch_ctx(ctx: Ctx, hatch_env: dict[str, str]) -> Ctx:
    ctx.env.update(
        {
            k: v
            for k, v in hatch_env.items()
            if k not in ("BP_CACHE_DIR", "TMPDIR", "BP_BASE_IMAGE")  # the corpus's own base
        },
        TMPDIR=ctx.env["TMPDIR"],
    )
    ctx.pyproject(text=PYPROJECT.replace("[tool.buildpacks]", HATCH_TARGET))
    (ctx.project / "Procfile").unlink()
    return ctx


def _hatch(ctx: Ctx) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(testbed.BIN / "hatch"), "build", "-t", "image"],
        cwd=ctx.project,
        env=ctx.env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("name", list(HATCH_CASES))
def test_hatch_target_bad_input(name: str, hatch_ctx: Ctx) -> None:
    change, pattern = HATCH_CASES[name]
    change(hatch_ctx)
    result = _hatch(hatch_ctx)
    assert_one_line_failure(result, 1, pattern)
    left = [p for p in leftovers(hatch_ctx) if not p.endswith("/dist")]
    assert left == []


def test_ctrl_c_under_hatch_build_exits_130_with_one_line(hatch_ctx: Ctx) -> None:
    _big_app(hatch_ctx)
    (hatch_ctx.project / "corpus_app" / "data.bin").write_bytes(os.urandom(24 << 20))
    hatch_ctx.env["BP_CACHE_DIR"] = str(hatch_ctx.root / "cache")
    proc = _start(hatch_ctx, [str(testbed.BIN / "hatch"), "build", "-t", "image"])
    seen: list[str] = []
    _wait_for(proc, "===> ANALYZING", seen)
    time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGINT)
    rest, _ = proc.communicate(timeout=120)
    _wait_for_group(proc.pid)  # the builder may outlive hatch (below)
    out = "".join(seen) + rest
    # hatch runs the builder through `/bin/sh -c`; Debian's dash dies of the SIGINT itself,
    # and hatch then exits with the shell's -2 (254). The builder's own status is 130.
    assert proc.returncode in (130, 254), out
    assert "Traceback" not in out, out
    assert [line for line in out.splitlines() if line.startswith("error:")] == [
        "error: interrupted"
    ], out
    assert leftovers(hatch_ctx) == []


# -- the setuptools backend -----------------------------------------------------------------


SETUPTOOLS_CASES = {
    "unknown pull policy": (["-C", "image-pull-policy=sometimes"], r"pull-policy \(command line\)"),
    "corrupt base layout": (["-C", "image-base-image=oci-layout:{layout}:bookworm"], "index.json"),
}


@pytest.mark.parametrize("name", list(SETUPTOOLS_CASES))
def test_setuptools_backend_bad_input(name: str, ctx: Ctx, hatch_env: dict[str, str]) -> None:
    flags, pattern = SETUPTOOLS_CASES[name]
    layout = ctx.base_copy()
    (layout / "index.json").write_text("{")
    project = ctx.root / "setuptools-app"
    shutil.copytree(testbed.REPO / "tests/projects/setuptools-app", project)
    env = {**hatch_env, "TMPDIR": ctx.env["TMPDIR"], "BP_CACHE_DIR": str(ctx.root / "cache")}
    command = [str(testbed.BIN / "python"), "-m", "build", "--wheel", "-C", "image=true"]
    result = subprocess.run(
        [*command, *(f.format(layout=layout) for f in flags), str(project)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert_one_line_failure(result, 1, pattern)
    assert not list((project / "dist").glob("*.tar")), "no image archive after a failure"
    assert [p for p in leftovers(ctx) if "setuptools-app" not in p] == []
