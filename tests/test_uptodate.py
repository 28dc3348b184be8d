"""The up-to-date check: every input it watches changes the fingerprint, nothing else does."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

import hatch_buildpacks
from buildpacks import uptodate
from buildpacks.oci.blobs import BlobStore
from buildpacks.oci.model import Platform
from buildpacks.oci.source import local_inputs

ENV = {"BP_BASE_IMAGE": "oci-layout:/base", "PATH": "/usr/bin", "TERM": "xterm"}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "app"
    (root / "src" / "app").mkdir(parents=True)
    (root / "pyproject.toml").write_text('[project]\nname = "app"\nversion = "1"\n')
    (root / "src" / "app" / "__init__.py").write_text("X = 1\n")
    (root / "dist").mkdir()
    return root


def sources(root: Path) -> uptodate.Inputs:
    """The package's files, as a builder would list them."""
    return uptodate.Inputs(tuple(sorted((root / "src").rglob("*.py"))), {"metadata": "app 1"})


def taken(
    root: Path, env: dict[str, str] | None = None, inputs: uptodate.Inputs | None = None, **kwargs
) -> uptodate.Fingerprint:
    return uptodate.fingerprint(
        root, ENV if env is None else env, sources(root) if inputs is None else inputs, **kwargs
    )


def fp(root: Path, env: dict[str, str] | None = None, **kwargs) -> str:
    return taken(root, env, **kwargs).digest


def later(path: Path) -> None:
    """Move a path's modification time forward, as a save a moment later would."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))


def test_unchanged_project_keeps_its_fingerprint(project):
    assert fp(project) == fp(project)


def rewrite_keeping_size_and_times(path: Path, text: str) -> None:
    st = path.stat()
    with open(path, "r+") as f:
        f.write(text)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


@pytest.mark.parametrize(
    "change",
    [
        lambda root: (root / "src" / "app" / "__init__.py").write_text("X = 2\n"),
        lambda root: later(root / "src" / "app" / "__init__.py"),  # same size, saved again
        lambda root: rewrite_keeping_size_and_times(root / "src" / "app" / "__init__.py", "X=22\n"),
        lambda root: (root / "src" / "app" / "new.py").write_text(""),
        lambda root: (root / "src" / "app" / "__init__.py").unlink(),
        lambda root: (root / "src" / "app" / "__init__.py").chmod(0o755),
        lambda root: (root / "uv.lock").write_text(""),
        lambda root: (root / ".python-version").write_text("3.12\n"),
        lambda root: (root / "pyproject.toml").unlink(),
        lambda root: (root / "src" / "app" / "__init__.py").rename(root / "src" / "app" / "m.py"),
    ],
    ids=[
        "edit",
        "touch",
        "in-place",
        "new-file",
        "removed",
        "mode",
        "lock-file",
        "python-version",
        "root-file-removed",
        "rename",
    ],
)
def test_a_change_to_what_the_build_reads_changes_the_fingerprint(project, monkeypatch, change):
    monkeypatch.setattr(uptodate, "RACY_NS", 0)  # the stats alone must tell
    before = fp(project)
    change(project)
    assert fp(project) != before


def test_a_symbolic_link_pointed_elsewhere_changes_it(project, tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).write_text("same\n")
    link = project / "src" / "app" / "link.py"
    link.symlink_to(tmp_path / "a")
    before = fp(project)
    link.unlink()
    link.symlink_to(tmp_path / "b")
    assert fp(project) != before
    link.unlink()
    link.symlink_to(tmp_path / "missing")  # dangling: kept as a link in a source image
    dangling = fp(project)
    link.unlink()
    link.symlink_to(tmp_path / "missing-too")
    assert fp(project) != dangling


def test_a_change_the_builder_resolves_changes_the_fingerprint(project):
    files = sources(project).files
    before = fp(project, inputs=uptodate.Inputs(files, {"metadata": "Version: 1"}))
    assert fp(project, inputs=uptodate.Inputs(files, {"metadata": "Version: 2"})) != before
    assert fp(project, inputs=uptodate.Inputs(files[:0], {"metadata": "Version: 1"})) != before


@pytest.mark.parametrize(
    "change",
    [
        lambda root: (root / "dist" / "app-1.tar").write_text("output"),
        lambda root: (root / "src" / "app" / "__pycache__").mkdir(),
        lambda root: (root / ".pytest_cache").mkdir(),
        lambda root: (root / "docs").mkdir() or (root / "docs" / "index.md").write_text(""),
        lambda root: (root / "src" / "app" / "notes.txt").write_text("not in the wheel"),
    ],
    ids=["output", "bytecode", "tool-cache", "docs", "unselected"],
)
def test_files_the_build_does_not_read_do_not_change_it(project, change):
    before = fp(project)
    change(project)
    assert fp(project) == before


def test_a_new_environment_changes_it(project, tmp_path, monkeypatch):
    # What an isolated PEP 517 build gets on every run: packages installed anew elsewhere.
    before = fp(project)
    (tmp_path / "site-packages").mkdir()
    monkeypatch.setattr("sys.path", [*sys.path, str(tmp_path / "site-packages")])
    assert fp(project) != before


def test_environment_variables_a_build_reads_count_others_do_not(project):
    before = fp(project)
    assert fp(project, {**ENV, "TERM": "dumb", "SHLVL": "3"}) == before
    # Where the build runs and how a failure is told make nothing different.
    assert fp(project, {**ENV, "BP_SERVER": "0", "BP_DEBUG": "1"}) == before
    for name, value in [
        ("BP_PUBLISH", "true"),
        ("BP_BASE_IMAGE", "oci-layout:/other"),
        ("UV_INDEX_URL", "https://mirror.invalid/simple"),
        ("PIP_INDEX_URL", "https://mirror.invalid/simple"),
        ("SOURCE_DATE_EPOCH", "1"),
        ("PATH", "/opt/bin:/usr/bin"),
        ("DOCKER_CONFIG", "/tmp/docker"),
        ("HATCH_BUILD_LOCATION", "out"),
    ]:
        assert fp(project, {**ENV, name: value}) != before, name


def test_every_environment_variable_the_code_reads_is_watched():
    # Reads of the host's environment: os.environ[...] / .get(...), or an ``env`` mapping
    # standing for it; ``ctx.env`` and assignments (the image's environment) are not reads.
    pattern = re.compile(r'(?:environ|(?<![.\w])env)(?:\.get\(|\[)"([A-Z][A-Z0-9_]+)"(?!\]\s*=)')
    packages = [Path(uptodate.__file__).parent, Path(hatch_buildpacks.__file__).parent]
    read = {
        name
        for pkg in packages
        for f in pkg.rglob("*.py")
        for name in pattern.findall(f.read_text())
    }
    assert {"SOURCE_DATE_EPOCH", "DOCKER_CONFIG", "SSL_CERT_FILE"} <= read  # the scan works
    unwatched = [
        name
        for name in sorted(read)
        if not (name.startswith(uptodate.ENV_PREFIXES) or name in uptodate.ENV_NAMES)
    ]
    assert unwatched == []


def test_secrets_in_the_environment_are_never_written(project, tmp_path):
    env = {**ENV, "BP_REGISTRY_PASSWORD": "s3cret-value"}
    archive = project / "dist" / "app-1.tar"
    archive.write_text("image")
    record = tmp_path / "record.json"
    uptodate.save(record, taken(project, env), [], "app:1", "sha256:" + "0" * 64, archive)
    assert "s3cret-value" not in record.read_text()
    # Credentials reach no image: not even a hash of them goes into the fingerprint.
    assert fp(project, env) == fp(project, {**env, "BP_REGISTRY_PASSWORD": "other"}) == fp(project)


def test_git_head_and_branch_are_watched(project):
    def git(*args: str) -> None:
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
            cwd=project,
            check=True,
            capture_output=True,
        )

    git("init", "-q", "-b", "main")
    git("add", ".")
    git("commit", "-q", "-m", "one")
    first = fp(project)
    assert fp(project) == first
    git("hash-object", "-w", "pyproject.toml")  # an object written: the labels are the same
    assert fp(project) == first
    git("commit", "-q", "--allow-empty", "-m", "two")
    second = fp(project)
    assert second != first
    git("checkout", "-q", "-b", "feature")
    assert fp(project) != second


def test_git_repository_above_the_project_is_found(tmp_path):
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    files = uptodate.git_files(tmp_path / "services" / "app")
    assert tmp_path / ".git" / "HEAD" in files
    assert tmp_path / ".git" / "refs" / "heads" / "main" in files


def test_code_and_files_outside_the_project_count(project, tmp_path):
    outside = tmp_path / "shared" / "VERSION.py"
    outside.parent.mkdir()
    outside.write_text("readme")
    inputs = uptodate.Inputs((outside,))
    code = tmp_path / "adapter"
    code.mkdir()
    (code / "builder.py").write_text("")
    before = fp(project, inputs=inputs, code=[code])
    outside.write_text("readme, longer")
    middle = fp(project, inputs=inputs, code=[code])
    assert middle != before
    (code / "builder.py").write_text("changed = True\n")
    after = fp(project, inputs=inputs, code=[code])
    assert after != middle
    (code / "__pycache__").mkdir()  # Python's bytecode beside the code: not an input
    (code / "__pycache__" / "builder.cpython-311.pyc").write_bytes(b"pyc")
    assert fp(project, inputs=inputs, code=[code]) == after


def test_record_matches_only_with_the_same_fingerprint_and_watched_files(project, tmp_path):
    archive = project / "dist" / "app-1.tar"
    archive.write_text("image")
    base = tmp_path / "base" / "index.json"
    base.parent.mkdir()
    base.write_text("{}")
    record = tmp_path / "cache" / "uptodate" / "r.json"
    current = taken(project)
    uptodate.save(record, current, [base], "app:1", "sha256:" + "1" * 64, archive)

    found = uptodate.up_to_date(record, current)
    assert found is not None
    assert (found.image, found.archive) == ("app:1", str(archive))
    assert uptodate.up_to_date(record, uptodate.Fingerprint("0" * 64, {})) is None

    later(base)  # the base image's layout was rewritten
    assert uptodate.up_to_date(record, current) is None
    uptodate.save(record, current, [base], "app:1", "sha256:" + "1" * 64, archive)
    archive.write_text("replaced")
    assert uptodate.up_to_date(record, current) is None
    uptodate.save(record, current, [base], "app:1", "sha256:" + "1" * 64, archive)
    archive.unlink()
    assert uptodate.up_to_date(record, current) is None


@pytest.mark.parametrize("content", ["", "{not json", json.dumps({"fingerprint": "x"}), "[]"])
def test_a_damaged_record_means_a_full_build(tmp_path, content):
    record = tmp_path / "r.json"
    record.write_text(content)
    assert uptodate.up_to_date(record, uptodate.Fingerprint("x", {})) is None
    assert uptodate.up_to_date(tmp_path / "missing.json", uptodate.Fingerprint("x", {})) is None


def test_record_file_depends_on_project_output_directory_and_route(tmp_path):
    cache = tmp_path / "cache"
    a = uptodate.record_file(cache, tmp_path / "a", tmp_path / "a" / "dist", "cli")
    b = uptodate.record_file(cache, tmp_path / "b", tmp_path / "b" / "dist", "cli")
    c = uptodate.record_file(cache, tmp_path / "a", tmp_path / "out", "cli")
    d = uptodate.record_file(cache, tmp_path / "a", tmp_path / "a" / "dist", "hatch")
    assert len({a, b, c, d}) == 4
    assert a == uptodate.record_file(cache, tmp_path / "a", tmp_path / "a" / "dist", "cli")
    assert a.parent == tmp_path / "cache" / "uptodate"


def test_local_inputs_of_each_base_transport(tmp_path):
    store = BlobStore(tmp_path / "cache" / "blobs")
    linux = Platform("linux", "amd64")
    layout = tmp_path / "layout"
    layout.mkdir()
    assert local_inputs(f"oci-layout:{layout}:v1", linux, store, "if-not-present") == [
        layout / "index.json"
    ]
    archive = tmp_path / "base.tar"
    assert local_inputs(f"oci-archive:{archive}", linux, store, "always") == [archive]
    assert local_inputs(f"docker-archive:{archive}", linux, store, "always") == [archive]
    pinned = local_inputs("registry.invalid/base:1", linux, store, "if-not-present")
    assert pinned is not None and pinned[0].parent == tmp_path / "cache" / "refs"
    assert local_inputs("registry.invalid/base:1", linux, store, "never") == pinned
    assert local_inputs("registry.invalid/base:1", linux, store, "always") is None


def test_a_file_changed_again_within_the_clock_tick_is_caught_by_content(
    project, tmp_path, monkeypatch
):
    # A second write within one tick of the kernel's clock keeps every time of the file;
    # stats whose change time is the modification time, restored below, stand for that.
    def key(st: os.stat_result) -> list[int]:
        return [st.st_size, st.st_mtime_ns, st.st_mtime_ns, st.st_ino, st.st_mode]

    monkeypatch.setattr(uptodate, "_key", key)
    source = project / "src" / "app" / "__init__.py"
    source.write_text("X = 1\n")  # just now: within the racy window
    current = taken(project)
    assert str(source) in current.recent
    archive = project / "dist" / "app-1.tar"
    archive.write_text("image")
    record = tmp_path / "r.json"
    uptodate.save(record, current, [], "app:1", "sha256:" + "2" * 64, archive)
    assert uptodate.up_to_date(record, taken(project)) is not None

    st = source.stat()
    with open(source, "r+") as f:  # rewritten in place, same size and times
        f.write("X = 2\n")
    os.utime(source, ns=(st.st_atime_ns, st.st_mtime_ns))
    again = taken(project)
    assert again.digest == current.digest  # the stats alone cannot tell
    assert uptodate.up_to_date(record, again) is None


def test_files_changed_long_ago_are_not_read(project, monkeypatch):
    monkeypatch.setattr(uptodate, "RACY_NS", 50_000_000)  # a finer clock, not to wait 2 s
    time.sleep(0.1)
    recent = taken(project).recent  # (this package's own files may be fresh from an edit)
    assert [path for path in recent if path.startswith(str(project))] == []


def hatch_project(root: Path, pyproject: str) -> Path:
    (root / "src" / "app").mkdir(parents=True)
    (root / "src" / "app" / "__init__.py").write_text('__version__ = "1.0"\n')
    (root / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["hatchling"]\nbuild-backend = "hatchling.build"\n' + pyproject
    )
    return root


def hatch_fingerprint(root: Path, env: dict[str, str] | None = None) -> str | None:
    """The Hatch route's fingerprint of ``root`` (None: the build is not checked), with
    ``env`` as the process environment."""
    from hatch_buildpacks.builder import ImageBuilder

    saved = dict(os.environ)
    os.environ.update(env or {})
    try:
        current, _ = uptodate.check(root / "record.json", ImageBuilder(str(root))._take)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return None if current is None else current.digest


HOOK = """
import os
from hatchling.metadata.plugin.interface import MetadataHookInterface

class Hook(MetadataHookInterface):
    def update(self, metadata):
        metadata["description"] = os.environ.get("APP_DESCRIPTION", "none")
"""


@pytest.mark.parametrize(
    ("extra", "checked"),
    [
        ("", True),
        ('[tool.hatch.build.targets.wheel.hooks.custom]\npath = "hook.py"\n', False),
        ('[tool.hatch.build.hooks.custom]\npath = "hook.py"\n', False),
        ('[tool.hatch.build.targets.image.hooks.custom]\npath = "hook.py"\n', False),
        ("[tool.hatch.build.targets.wheel]\nforce-include = 7\n", False),  # bad: Hatch reports
    ],
    ids=["plain", "wheel-hook", "build-hook", "image-hook", "bad-config"],
)
def test_hatch_builds_that_run_build_hooks_are_never_skipped(tmp_path, extra, checked):
    root = hatch_project(tmp_path / "app", '[project]\nname = "app"\nversion = "1"\n' + extra)
    (root / "hook.py").write_text("")
    assert (hatch_fingerprint(root) is not None) == checked


def test_hatch_dependencies_formatted_from_the_environment_are_part_of_it(tmp_path):
    root = hatch_project(
        tmp_path / "app",
        '[project]\nname = "app"\nversion = "1"\ndependencies = ["pkg=={env:PKG_VERSION:1.0}"]\n',
    )
    first = hatch_fingerprint(root, {"PKG_VERSION": "1.0"})
    assert first is not None
    assert hatch_fingerprint(root, {"PKG_VERSION": "1.0"}) == first
    assert hatch_fingerprint(root, {"PKG_VERSION": "2.0"}) != first


def test_hatch_metadata_from_a_hook_is_part_of_the_fingerprint(tmp_path):
    root = hatch_project(
        tmp_path / "app",
        '[project]\nname = "app"\nversion = "1"\ndynamic = ["description"]\n'
        '[tool.hatch.metadata.hooks.custom]\npath = "hook.py"\n',
    )
    (root / "hook.py").write_text(HOOK)
    first = hatch_fingerprint(root, {"APP_DESCRIPTION": "one"})
    assert first is not None
    assert hatch_fingerprint(root, {"APP_DESCRIPTION": "one"}) == first
    assert hatch_fingerprint(root, {"APP_DESCRIPTION": "two"}) != first


@pytest.mark.parametrize(
    ("version", "change"),
    [
        (
            '[tool.hatch.version]\npath = "src/app/__init__.py"\n',
            lambda root: (root / "src" / "app" / "__init__.py").write_text('__version__ = "2"\n'),
        ),
        (
            '[tool.hatch.version]\npath = "../VERSION.py"\n',  # a monorepo's shared file
            lambda root: (root.parent / "VERSION.py").write_text('__version__ = "2.0"\n'),
        ),
        (
            '[tool.hatch.version]\nsource = "env"\nvariable = "APP_VERSION"\n',
            lambda root: os.environ.__setitem__("APP_VERSION", "2.0"),
        ),
        (
            '[tool.hatch.version]\nsource = "code"\npath = "version.py"\n',
            lambda root: os.environ.__setitem__("APP_BUILD", "2"),
        ),
    ],
    ids=["regex", "outside-root", "env", "code-reading-env"],
)
def test_hatch_versions_from_any_source_are_part_of_the_fingerprint(
    tmp_path, monkeypatch, version, change
):
    monkeypatch.setenv("APP_VERSION", "1.0")
    monkeypatch.delenv("APP_BUILD", raising=False)
    root = hatch_project(
        tmp_path / "app", '[project]\nname = "app"\ndynamic = ["version"]\n' + version
    )
    (tmp_path / "VERSION.py").write_text('__version__ = "1.0"\n')
    (root / "version.py").write_text(
        'import os\n__version__ = "1." + os.environ.get("APP_BUILD", "0")\n'
    )
    os.utime(tmp_path / "VERSION.py", ns=(0, 0))  # old: only its stats can tell
    first = hatch_fingerprint(root)
    assert first is not None and hatch_fingerprint(root) == first
    change(root)
    assert hatch_fingerprint(root) != first


def test_hatch_view_holds_what_the_wheel_reads(tmp_path):
    from hatch_buildpacks.builder import ImageBuilder

    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    (repo / ".gitignore").write_text("*.log\n")
    (repo / "shared.txt").write_text("forced in from outside the project\n")
    root = hatch_project(
        repo / "services" / "app",
        '[project]\nname = "app"\nversion = "1"\nlicense-files = ["LICENSE"]\n'
        "[tool.hatch.build.targets.wheel]\n"
        'packages = ["src/app"]\nsbom-files = ["sbom.json"]\n'
        '[tool.hatch.build.targets.wheel.force-include]\n"../../shared.txt" = "app/shared.txt"\n'
        '[tool.hatch.build.targets.wheel.shared-data]\n"share" = "share"\n',
    )
    (root / "LICENSE").write_text("MIT\n")
    (root / "sbom.json").write_text("{}")
    (root / "share").mkdir()
    (root / "share" / "app.conf").write_text("")
    (root / "src" / "app" / "debug.log").write_text("ignored by the repository\n")
    inputs = ImageBuilder(str(root))._wheel_inputs()
    files = {str(p.relative_to(tmp_path)) for p in inputs.files}
    assert files == {
        "repo/.gitignore",
        "repo/shared.txt",
        "repo/services/app/LICENSE",
        "repo/services/app/sbom.json",
        "repo/services/app/share/app.conf",
        "repo/services/app/src/app/__init__.py",
    }
    assert inputs.values["metadata"]["version"] == "1"


def test_an_assembled_base_is_decided_by_its_mirrors_cached_in_release_files(tmp_path):
    """Unless the pull policy is ``always``, ``debian-packages:`` assembles from the verified
    ``InRelease`` files in the cache (and the keyring that verifies them): those are the
    inputs the check watches, one per archive of the suite, and they depend on the mirror."""
    store = BlobStore(tmp_path / "blobs")
    amd64 = Platform("linux", "amd64")
    spec = "debian-packages:bookworm"
    found = local_inputs(spec, amd64, store, "if-not-present", "http://a.test/debian")
    assert found is not None and len(found) == 3  # the suite, -updates, -security
    assert {p.parent for p in found} == {tmp_path / "debian" / "inrelease"}
    other = local_inputs(spec, amd64, store, "never", "http://b.test/debian")
    assert other is not None and set(other).isdisjoint(found)
    keyring = tmp_path / "mirror.gpg"
    with_key = local_inputs(spec, amd64, store, "never", "http://a.test/debian", str(keyring))
    assert with_key == [*found, keyring]
    assert local_inputs(spec, amd64, store, "always", "http://a.test/debian") is None
    # A local layout stays decided by its index whatever the pull policy.
    assert local_inputs(f"oci-layout:{tmp_path}", amd64, store, "always") == [
        tmp_path / "index.json"
    ]
