"""The up-to-date check: every input it watches changes the fingerprint, nothing else does."""

from __future__ import annotations

import json
import os
import re
import subprocess
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


def taken(root: Path, env: dict[str, str] | None = None, **kwargs) -> uptodate.Fingerprint:
    return uptodate.fingerprint(root, root / "dist", ENV if env is None else env, **kwargs)


def fp(root: Path, env: dict[str, str] | None = None, **kwargs) -> str:
    return taken(root, env, **kwargs).digest


def later(path: Path) -> None:
    """Move a path's modification time forward, as a save a moment later would."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))


def test_unchanged_project_keeps_its_fingerprint(project):
    assert fp(project) == fp(project)


@pytest.mark.parametrize(
    "change",
    [
        lambda root: (root / "src" / "app" / "__init__.py").write_text("X = 2\n"),
        lambda root: later(root / "src" / "app" / "__init__.py"),  # same size, saved again
        lambda root: (root / "src" / "app" / "new.py").write_text(""),
        lambda root: (root / "src" / "app" / "__init__.py").unlink(),
        lambda root: (root / "uv.lock").write_text(""),
        lambda root: (root / ".python-version").write_text("3.12\n"),
        lambda root: (root / "src" / "app" / "data").mkdir(),
        lambda root: (root / "src" / "app" / "__init__.py").rename(root / "src" / "app" / "m.py"),
    ],
    ids=["edit", "touch", "new-file", "removed", "lock-file", "python-version", "dir", "rename"],
)
def test_a_project_change_changes_the_fingerprint(project, change):
    before = fp(project)
    change(project)
    assert fp(project) != before


@pytest.mark.parametrize(
    "change",
    [
        lambda root: (root / "dist" / "app-1.tar").write_text("output"),
        lambda root: (root / "src" / "app" / "__pycache__").mkdir(),
        lambda root: (root / ".pytest_cache").mkdir() or later(root),
        lambda root: (root / ".git").mkdir() or (root / ".git" / "objects").mkdir(),
    ],
    ids=["output", "bytecode", "tool-cache", "git-objects"],
)
def test_outputs_and_caches_do_not_change_it_beyond_the_root_entry(project, change):
    # A new entry in the root changes the root's own time once; what is inside never does.
    change(project)
    settled = fp(project)
    if (project / "dist" / "app-1.tar").exists():
        (project / "dist" / "app-1.tar").write_text("another output")
    for cache in project.rglob("__pycache__"):
        (cache / "app.cpython-311.pyc").write_bytes(b"pyc")
    for cache in project.glob(".pytest_cache"):
        (cache / "v").write_text("1")
    if (project / ".git" / "objects").exists():
        (project / ".git" / "objects" / "ab").write_bytes(b"object")
    assert fp(project) == settled


def test_a_virtual_environment_inside_the_project_is_not_walked(project):
    venv = project / ".venv"
    venv.mkdir()
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\n")
    settled = fp(project)
    (venv / "lib").mkdir()
    (venv / "lib" / "module.py").write_text("")
    assert fp(project) == settled


def test_environment_variables_a_build_reads_count_others_do_not(project):
    before = fp(project)
    assert fp(project, {**ENV, "TERM": "dumb", "SHLVL": "3"}) == before
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


def test_code_and_outside_paths_count(project, tmp_path):
    outside = tmp_path / "shared" / "README.md"
    outside.parent.mkdir()
    outside.write_text("readme")
    code = tmp_path / "adapter"
    code.mkdir()
    (code / "builder.py").write_text("")
    before = fp(project, extra_paths=[outside.parent], code=[code])
    outside.write_text("readme, longer")
    middle = fp(project, extra_paths=[outside.parent], code=[code])
    assert middle != before
    (code / "builder.py").write_text("changed = True\n")
    assert fp(project, extra_paths=[outside.parent], code=[code]) != middle


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


def test_record_file_depends_on_project_and_output_directory(tmp_path):
    a = uptodate.record_file(tmp_path / "cache", tmp_path / "a", tmp_path / "a" / "dist")
    b = uptodate.record_file(tmp_path / "cache", tmp_path / "b", tmp_path / "b" / "dist")
    c = uptodate.record_file(tmp_path / "cache", tmp_path / "a", tmp_path / "out")
    assert len({a, b, c}) == 3
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


def test_a_file_changed_again_within_the_clock_tick_is_caught_by_content(project, tmp_path):
    source = project / "src" / "app" / "__init__.py"
    source.write_text("X = 1\n")  # just now: within the racy window
    current = taken(project)
    assert str(source) in current.recent
    archive = project / "dist" / "app-1.tar"
    archive.write_text("image")
    record = tmp_path / "r.json"
    uptodate.save(record, current, [], "app:1", "sha256:" + "2" * 64, archive)
    assert uptodate.up_to_date(record, taken(project)) is not None

    # Rewritten in place, same size, and the same modification time to the nanosecond:
    # what a second save within one tick of a coarse clock looks like.
    st = source.stat()
    with open(source, "r+") as f:
        f.write("X = 2\n")
    os.utime(source, ns=(st.st_atime_ns, st.st_mtime_ns))
    again = taken(project)
    assert again.digest == current.digest  # the stats alone cannot tell
    assert uptodate.up_to_date(record, again) is None


def test_files_changed_long_ago_are_not_read(project):
    source = project / "src" / "app" / "__init__.py"
    old = source.stat().st_mtime_ns - 60 * 10**9
    for path in [p for p in project.rglob("*") if p.is_file()]:
        os.utime(path, ns=(old, old))
    recent = taken(project).recent  # (this package's own files may be fresh from an edit)
    assert [path for path in recent if path.startswith(str(project))] == []


@pytest.mark.parametrize(
    ("extra", "watchable"),
    [
        ("", True),
        ('[tool.hatch.build.targets.wheel.hooks.custom]\npath = "hook.py"\n', False),
        ('[tool.hatch.build.hooks.custom]\npath = "hook.py"\n', False),
        ('[tool.hatch.metadata.hooks.custom]\npath = "hook.py"\n', False),
        ("[tool.hatch.build.targets.wheel]\nforce-include = 7\n", False),  # bad: Hatch reports
    ],
    ids=["plain", "wheel-hook", "build-hook", "metadata-hook", "bad-config"],
)
def test_hatch_builds_that_run_code_are_never_skipped(tmp_path, extra, watchable):
    from hatch_buildpacks.builder import ImageBuilder

    root = tmp_path / "app"
    (root / "src" / "app").mkdir(parents=True)
    (root / "src" / "app" / "__init__.py").write_text("")
    (root / "pyproject.toml").write_text(
        '[project]\nname = "app"\nversion = "1"\n'
        '[build-system]\nrequires = ["hatchling"]\nbuild-backend = "hatchling.build"\n' + extra
    )
    taken = ImageBuilder(str(root))._take_fingerprint(root / "dist")
    assert (taken is not None) == watchable


@pytest.mark.parametrize(
    ("version", "watchable"),
    [
        ('[tool.hatch.version]\npath = "src/app/__init__.py"\n', True),  # regex: a file
        ('[tool.hatch.version]\nsource = "vcs"\n', False),  # git describe, dates
        ('[tool.hatch.version]\nsource = "env"\nvariable = "APP_VERSION"\n', False),
    ],
    ids=["regex", "vcs", "env"],
)
def test_hatch_versions_from_files_only_are_watched(tmp_path, version, watchable):
    from hatch_buildpacks.builder import ImageBuilder

    root = tmp_path / "app"
    (root / "src" / "app").mkdir(parents=True)
    (root / "src" / "app" / "__init__.py").write_text('__version__ = "1.0"\n')
    (root / "pyproject.toml").write_text(
        '[project]\nname = "app"\ndynamic = ["version"]\n' + version
    )
    taken = ImageBuilder(str(root))._take_fingerprint(root / "dist")
    assert (taken is not None) == watchable
