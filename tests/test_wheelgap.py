"""The wheel-gap check: the pure function over file names and tags, the error line, pins read
from the requirements a lock gives, index pages (PEP 691 JSON from PyPI itself, PEP 503 HTML
from a loopback index) cached under the cache directory and read offline, and uv.lock's own
file lists (a real ``uv lock``)."""

from __future__ import annotations

import http.server
import json
import os
import re
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from packaging.version import Version

from buildpacks.builtin import Runtime
from buildpacks.builtin.application import Host
from buildpacks.builtin.dependencies import index_urls, install
from buildpacks.config import resolve
from buildpacks.errors import BuildError
from buildpacks.locks import Locked, Target, read_lock, uv_lock_files
from buildpacks.project import Project
from buildpacks.wheelgap import (
    Dist,
    Gap,
    Index,
    Pin,
    PlatformDependencies,
    check_wheels,
    find_gaps,
    gap_message,
    nearest_version,
    pinned_requirements,
    wheel_target,
)
from tests import testbed

BOOKWORM_AMD64 = Runtime("/usr/bin/python3.11", "3.11.2", "3.11", "x86_64-manylinux_2_36")
BOOKWORM_ARM64 = Runtime("/usr/bin/python3.11", "3.11.2", "3.11", "aarch64-manylinux_2_36")
ALPINE_ARM64 = Runtime("/usr/bin/python3.11", "3.11.9", "3.11", "aarch64-unknown-linux-musl")
AMD64 = wheel_target("linux/amd64", BOOKWORM_AMD64)
ARM64 = wheel_target("linux/arm64", BOOKWORM_ARM64)
MUSL_ARM64 = wheel_target("linux/arm64", ALPINE_ARM64)
PYPI = "https://pypi.org/simple"
CLOSED = "http://127.0.0.1:9/simple"  # discard: nothing listens there


def pin(name: str, version: str, *files: str) -> Pin:
    return Pin(name, version, tuple(Dist(f) for f in files))


def gaps_of(pins: list[Pin], *targets, releases=None) -> list[tuple[str, str, str | None]]:
    return [(g.name, g.platform, g.nearest) for g in find_gaps(pins, list(targets), releases)]


# -- the pure function ------------------------------------------------------------------------


def test_manylinux_wheel_fits_its_architecture_only():
    pins = [
        pin(
            "lxml", "4.9.1", "lxml-4.9.1-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
        )
    ]
    assert gaps_of(pins, AMD64, ARM64) == [("lxml", "linux/arm64", None)]


def test_manylinux_wheel_newer_than_the_base_glibc_is_a_gap():
    # A manylinux_2_39 wheel needs glibc 2.39; bookworm has 2.36.
    pins = [pin("fast", "2.0", "fast-2.0-cp311-cp311-manylinux_2_39_aarch64.whl")]
    assert gaps_of(pins, ARM64) == [("fast", "linux/arm64", None)]
    older = [pin("fast", "2.0", "fast-2.0-cp311-cp311-manylinux_2_28_aarch64.whl")]
    assert gaps_of(older, ARM64) == []


def test_musllinux_wheel_fits_a_musl_image_not_a_glibc_one():
    pins = [pin("ujson", "5.10.0", "ujson-5.10.0-cp311-cp311-musllinux_1_2_aarch64.whl")]
    assert gaps_of(pins, ARM64, MUSL_ARM64) == [("ujson", "linux/arm64", None)]
    assert find_gaps(pins, [ARM64])[0].platform == "linux/arm64"
    assert find_gaps(pins, [MUSL_ARM64]) == []


def test_linux_wheel_fits_only_a_host_of_the_image_architecture_and_glibc():
    pins = [pin("mine", "1.0", "mine-1.0-cp311-cp311-linux_x86_64.whl")]
    same = wheel_target("linux/amd64", BOOKWORM_AMD64, Host("x86_64", (2, 36)))
    newer_host = wheel_target("linux/amd64", BOOKWORM_AMD64, Host("x86_64", (2, 39)))
    other_arch = wheel_target("linux/arm64", BOOKWORM_ARM64, Host("x86_64", (2, 36)))
    assert gaps_of(pins, same) == []
    assert gaps_of(pins, newer_host, other_arch) == [
        ("mine", "linux/amd64", None),
        ("mine", "linux/arm64", None),
    ]


def test_macosx_only_and_sdist_only_are_gaps_everywhere():
    pins = [
        pin("macos-only", "1.0", "macos_only-1.0-cp311-cp311-macosx_11_0_arm64.whl"),
        pin("sdist-only", "1.0", "sdist_only-1.0.tar.gz"),
    ]
    assert gaps_of(pins, AMD64, ARM64) == [
        ("macos-only", "linux/amd64", None),
        ("sdist-only", "linux/amd64", None),
        ("macos-only", "linux/arm64", None),
        ("sdist-only", "linux/arm64", None),
    ]


def test_abi3_and_pure_wheels_fit_every_platform_they_name():
    pins = [
        pin("crypto", "44.0.0", "crypto-44.0.0-cp39-abi3-manylinux_2_28_aarch64.whl",
            "crypto-44.0.0-cp39-abi3-manylinux_2_28_x86_64.whl"),
        pin("flask", "3.1.3", "flask-3.1.3-py3-none-any.whl"),
        pin("six", "1.17.0", "six-1.17.0-py2.py3-none-any.whl", "six-1.17.0.tar.gz"),
    ]  # fmt: skip
    assert gaps_of(pins, AMD64, ARM64, MUSL_ARM64) == [("crypto", "linux/arm64", None)]
    # An abi3 wheel for a Python newer than the image's does not fit.
    newer = [pin("crypto", "45", "crypto-45-cp312-abi3-manylinux_2_28_x86_64.whl")]
    assert gaps_of(newer, AMD64) == [("crypto", "linux/amd64", None)]


def test_nearest_prefers_newer_of_the_same_major_then_older_then_other_majors():
    v = Version
    assert nearest_version(v("4.9.1"), map(v, ["4.8.0", "4.9.2", "4.9.3", "5.0"])) == v("4.9.2")
    assert nearest_version(v("4.9.1"), map(v, ["3.0", "4.8.0", "4.7", "5.0"])) == v("4.8.0")
    assert nearest_version(v("4.9.1"), map(v, ["3.0", "6.0", "5.1"])) == v("5.1")
    assert nearest_version(v("4.9.1"), map(v, ["3.0", "2.0"])) == v("3.0")
    assert nearest_version(v("4.9.1"), []) is None


def test_nearest_skips_yanked_prereleases_other_platforms_and_excluded_pythons():
    releases = {
        "lxml": [
            Dist("lxml-4.9.1-cp311-cp311-manylinux_2_17_x86_64.whl"),
            Dist("lxml-4.9.2-cp311-cp311-manylinux_2_17_aarch64.whl", yanked=True),
            Dist("lxml-4.9.3b1-cp311-cp311-manylinux_2_17_aarch64.whl"),
            Dist("lxml-4.9.4-py3-none-any.whl", requires_python=">=3.12"),
            Dist("lxml-4.9.5-cp311-cp311-macosx_11_0_arm64.whl"),
            Dist("lxml-4.9.6.tar.gz"),
            Dist("lxml-4.9.7-cp311-cp311-manylinux_2_17_aarch64.whl", requires_python=">=3.8"),
            Dist("not a file name.whl"),
        ]
    }
    pins = [pin("lxml", "4.9.1", "lxml-4.9.1-cp311-cp311-manylinux_2_17_x86_64.whl")]
    (gap,) = find_gaps(pins, [AMD64, ARM64], releases)
    assert (gap.platform, gap.nearest, gap.searched) == ("linux/arm64", "4.9.7", True)


def test_the_error_line_names_package_version_platform_and_nearest():
    gaps = [
        Gap("numpy", "1.19.5", "linux/arm64", "1.21.0", True),
        Gap("pyyaml", "5.3", "linux/arm64", None, True),
        Gap("private", "1.0", "linux/arm64", None, False),
        Gap("numpy", "1.19.5", "linux/amd64", "1.20.0", True),
    ]
    message = gap_message(gaps, [AMD64, ARM64])
    assert message.startswith(
        "no wheel for linux/arm64 (CPython 3.11, aarch64-manylinux_2_36): numpy 1.19.5 "
        "(nearest with one: 1.21.0), pyyaml 5.3 (no version has one), private 1.0 (other "
        "versions unknown); no wheel for linux/amd64 (CPython 3.11, x86_64-manylinux_2_36): "
        "numpy 1.19.5 (nearest with one: 1.20.0); dependencies are installed from wheels only"
    ), message
    assert "\n" not in message


def test_pins_are_read_from_the_requirements_locks_give():
    text = (
        "flask==3.1.3 \\\n    --hash=sha256:aa \\\n    --hash=sha256:bb\n"
        "--index-url https://example.invalid/simple\n"
        "colorama==0.4.6 ; sys_platform == 'win32'\n"
        "uvloop==0.21.0 ; platform_machine == 'x86_64'\n"
        "requests>=2  # not pinned: uv resolves it\n"
        "exact===1.0\n"
        "# a comment\n"
    )
    assert pinned_requirements(text, Target("3.11.2", "x86_64")) == [
        ("flask", "3.1.3"),
        ("uvloop", "0.21.0"),
        ("exact", "1.0"),
    ]
    assert ("uvloop", "0.21.0") not in pinned_requirements(text, Target("3.11.2", "aarch64"))


# -- against PyPI itself ----------------------------------------------------------------------


def lxml_platforms(locked_text: str = "lxml==4.9.1\nflask==3.1.3\n"):
    locked = Locked("requirements.txt", locked_text, complete=False)
    return [
        PlatformDependencies("linux/amd64", BOOKWORM_AMD64, Target("3.11.2", "x86_64"), locked),
        PlatformDependencies("linux/arm64", BOOKWORM_ARM64, Target("3.11.2", "aarch64"), locked),
    ]


def test_pypi_lxml_4_9_1_has_no_arm64_wheel_for_3_11_and_4_9_2_has(tmp_path):
    # Checked by hand on https://pypi.org/simple/lxml/: 4.9.1 has cp311 wheels for x86_64
    # (manylinux, musllinux) and i686 only; 4.9.2 is the first with cp311 aarch64 wheels.
    logged: list[str] = []
    with pytest.raises(BuildError) as raised:
        check_wheels(lxml_platforms(), None, [PYPI], tmp_path, False, logged.append)
    message = str(raised.value)
    assert message.startswith(
        "no wheel for linux/arm64 (CPython 3.11, aarch64-manylinux_2_36): "
        "lxml 4.9.1 (nearest with one: 4.9.2); dependencies are installed from wheels only"
    ), message
    assert "linux/amd64" not in message and "flask" not in message
    assert logged == []
    pages = list((tmp_path / "index-pages").glob("*.json"))
    assert len(pages) == 2  # lxml and flask, each cached by its URL
    lxml_page = json.loads(
        next(p for p in pages if "lxml-4.9.2.tar.gz" in p.read_text()).read_text()
    )
    assert {"filename", "requires-python", "yanked"} <= set(lxml_page["files"][0])


def test_offline_reads_the_cache_whatever_its_age(tmp_path):
    with pytest.raises(BuildError):
        check_wheels(lxml_platforms(), None, [PYPI], tmp_path, False, print)
    for page in (tmp_path / "index-pages").iterdir():
        os.utime(page, (0, 0))  # long expired: offline, still used
    logged: list[str] = []
    with pytest.raises(BuildError, match=r"lxml 4\.9\.1 \(nearest with one: 4\.9\.2\)"):
        check_wheels(lxml_platforms(), None, [PYPI], tmp_path, True, logged.append)
    assert logged == []


def test_offline_without_cache_says_what_it_could_not_check_and_leaves_it_to_uv(tmp_path):
    logged: list[str] = []
    check_wheels(lxml_platforms(), None, [PYPI], tmp_path, True, logged.append)
    (line,) = logged
    assert line.startswith("warning: the wheels of some dependencies are not checked"), line
    assert "https://pypi.org/simple/lxml/ is not cached and pull-policy is never" in line
    assert "https://pypi.org/simple/flask/ is not cached" in line
    assert not (tmp_path / "index-pages").exists()


def test_unreachable_index_is_logged_not_fatal_and_its_credentials_never_shown(tmp_path):
    logged: list[str] = []
    secret = "http://user:s3cret@127.0.0.1:9/simple"
    check_wheels(lxml_platforms(), None, [secret], tmp_path, False, logged.append)
    assert len(logged) == 1 and "http://***@127.0.0.1:9/simple/lxml/: ConnectError" in logged[0]
    assert "s3cret" not in logged[0]


# -- a PEP 503 HTML index on loopback ---------------------------------------------------------


class HtmlIndex:
    """A PEP 503 index that speaks only HTML and honours If-None-Match, counting requests."""

    def __init__(self, pages: dict[str, str]) -> None:
        index = self
        self.requests: list[tuple[str, str | None]] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                index.requests.append((self.path, self.headers.get("If-None-Match")))
                name = self.path.removeprefix("/simple/").strip("/")
                if name not in pages:
                    self.send_response(404)
                    self.end_headers()
                    return
                if self.headers.get("If-None-Match") == f'"{name}"':
                    self.send_response(304)
                    self.end_headers()
                    return
                body = pages[name].encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("ETag", f'"{name}"')
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/simple"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def html_index() -> Iterator[HtmlIndex]:
    anchors = [
        ("oldc-1.0-cp311-cp311-manylinux_2_17_x86_64.whl", ""),
        ("oldc-1.0.tar.gz", ""),
        ("oldc-1.1-cp311-cp311-manylinux_2_17_aarch64.whl", ' data-yanked=""'),
        ("oldc-1.2-cp311-cp311-manylinux_2_17_aarch64.whl", ' data-requires-python="&gt;=3.12"'),
        ("oldc-2.0-cp311-cp311-manylinux_2_28_aarch64.whl", ' data-requires-python="&gt;=3.9"'),
    ]
    page = "".join(
        f'<a href="../../files/{f}#sha256=00"{attrs}>{f}</a><br/>' for f, attrs in anchors
    )
    index = HtmlIndex({"oldc": f"<!DOCTYPE html><html><body>{page}</body></html>"})
    yield index
    index.stop()


def test_html_index_first_index_with_the_project_and_the_cache_lifetime(tmp_path, html_index):
    platforms = [
        PlatformDependencies(
            "linux/arm64", BOOKWORM_ARM64, Target("3.11.2", "aarch64"),
            Locked("requirements.txt", "oldc==1.0\n", complete=False),
        )
    ]  # fmt: skip
    # The first index (an extra one) does not have it: the next does, as uv's strategy goes.
    indexes = [html_index.url.replace("/simple", "/other"), html_index.url]
    with pytest.raises(BuildError, match=r"oldc 1\.0 \(nearest with one: 2\.0\)"):
        check_wheels(platforms, None, indexes, tmp_path, False, print)
    assert [path for path, _ in html_index.requests] == ["/other/oldc/", "/simple/oldc/"]
    with pytest.raises(BuildError):  # fresh: from the cache, nothing asked
        check_wheels(platforms, None, indexes, tmp_path, False, print)
    assert len(html_index.requests) == 2
    for page in (tmp_path / "index-pages").iterdir():
        os.utime(page, (0, 0))
    with pytest.raises(BuildError, match=r"nearest with one: 2\.0"):  # expired: revalidated
        check_wheels(platforms, None, indexes, tmp_path, False, print)
    assert html_index.requests[-1] == ("/simple/oldc/", '"oldc"')


def test_a_damaged_cached_page_is_asked_again(tmp_path, html_index):
    index = Index(tmp_path, False)
    assert len(index.projects({"oldc": [html_index.url]})[0]["oldc"]) == 5
    (record,) = (tmp_path / "index-pages").iterdir()
    record.write_text('{"files": [{"name": 1}]}')
    assert len(index.projects({"oldc": [html_index.url]})[0]["oldc"]) == 5
    assert len(html_index.requests) == 2
    assert json.loads(record.read_text())["files"][0]["filename"].startswith("oldc-1.0")


def test_index_page_of_an_unknown_project_is_none(tmp_path, html_index):
    assert Index(tmp_path, False).projects({"nothing": [html_index.url]}) == ({}, [])


# -- uv.lock ----------------------------------------------------------------------------------


def test_example_lock_needs_no_index_when_every_wheel_is_there(tmp_path):
    lock = testbed.EXAMPLE / "uv.lock"
    files = uv_lock_files(lock)
    assert set(files["flask", "3.1.3"].files) == {
        "flask-3.1.3.tar.gz",
        "flask-3.1.3-py3-none-any.whl",
    }
    assert files["flask", "3.1.3"].index == PYPI
    assert ("example-service", "0.1.0") not in files  # the project itself: editable
    target = Target("3.11.2", "aarch64")
    locked = read_lock(lock, target)
    logged: list[str] = []
    platform = PlatformDependencies("linux/arm64", BOOKWORM_ARM64, target, locked)
    # An index that cannot answer: the lock's own file lists are enough, nothing is asked.
    check_wheels([platform], lock, [CLOSED], tmp_path, False, logged.append)
    assert logged == [] and not (tmp_path / "index-pages").exists()
    assert ("markupsafe", "3.0.4") in pinned_requirements(locked.text, target)


def test_real_uv_lock_gap_asks_the_locks_registry_for_the_nearest(tmp_path):
    project = tmp_path / "tiny"
    project.mkdir()
    (project / "pyproject.toml").write_text(
        '[project]\nname = "tiny"\nversion = "0.1"\nrequires-python = ">=3.11"\n'
        'dependencies = ["lxml==4.9.1"]\n'
    )
    subprocess.run([str(testbed.BIN / "uv"), "lock", "--project", str(project), "-q"], check=True)
    lock = project / "uv.lock"
    assert re.search(r"lxml-4\.9\.1-cp311-cp311-manylinux_2_17_x86_64", lock.read_text())
    platforms = []
    for platform, runtime, machine in (
        ("linux/amd64", BOOKWORM_AMD64, "x86_64"),
        ("linux/arm64", BOOKWORM_ARM64, "aarch64"),
    ):
        target = Target("3.11.2", machine)
        platforms.append(PlatformDependencies(platform, runtime, target, read_lock(lock, target)))
    with pytest.raises(BuildError) as raised:
        # The configured index is unreachable: the nearest comes from the lock's registry.
        check_wheels(platforms, lock, [CLOSED], tmp_path, False, print)
    assert str(raised.value).startswith(
        "no wheel for linux/arm64 (CPython 3.11, aarch64-manylinux_2_36): "
        "lxml 4.9.1 (nearest with one: 4.9.2);"
    ), raised.value
    assert len(list((tmp_path / "index-pages").iterdir())) == 1  # only lxml's page was asked


# -- what uv alone can find: requirements it resolves -------------------------------------------


@pytest.mark.parametrize(
    ("requirements", "named"),
    [
        ("lxml>=4.9,<4.9.2\n", "lxml >=4.9.0,<=4.9.1"),
        ("pycrypto\n", "pycrypto (any version)"),
    ],
)
def test_a_gap_only_uv_finds_is_worded_as_the_checks(tmp_path, requirements, named):
    # Not pinned, so not checked beforehand: the real uv resolves and reports it.
    locked = Locked("requirements.txt", requirements, complete=False)
    assert pinned_requirements(locked.text, Target("3.11.2", "aarch64")) == []
    with pytest.raises(BuildError) as raised:
        install(locked, tmp_path / "target", BOOKWORM_ARM64, [], tmp_path)
    assert str(raised.value).startswith(
        f"no wheel for aarch64-manylinux_2_36 (CPython 3.11.2): {named} (uv found none to "
        "install); dependencies are installed from wheels only"
    ), raised.value


# -- the indexes asked: those uv installs from, in uv's order -----------------------------------


def _config(tmp_path: Path, **overrides: object):
    project = Project(root=tmp_path, name="app", version="1.0")
    return resolve(project, tmp_path / "dist", env={}, overrides=overrides)


def test_indexes_are_uvs_in_its_order(tmp_path, monkeypatch):
    for name in ("UV_INDEX_URL", "UV_EXTRA_INDEX_URL", "PIP_INDEX_URL", "UV_FIND_LINKS"):
        monkeypatch.delenv(name, raising=False)
    plain = Locked("requirements.txt", "six==1.17.0\n", complete=False)
    assert index_urls(_config(tmp_path), plain) == [PYPI]
    own = Locked(
        "requirements.txt",
        "--index-url https://mirror.invalid/simple\n--extra-index-url=https://extra.invalid/simple\n"
        "six==1.17.0\n",
        complete=False,
    )
    assert index_urls(_config(tmp_path), own) == [
        "https://extra.invalid/simple",
        "https://mirror.invalid/simple",
    ]
    configured = _config(
        tmp_path, **{"index-url": "https://set.invalid/simple", "extra-index-urls": ["https://x/s"]}
    )
    assert index_urls(configured, own) == [
        "https://x/s",
        "https://extra.invalid/simple",
        "https://set.invalid/simple",
    ]
    monkeypatch.setenv("UV_INDEX_URL", "https://uv.invalid/simple")
    assert index_urls(_config(tmp_path), plain) == ["https://uv.invalid/simple"]
    no_index = Locked("requirements.txt", "--no-index\nsix==1.17.0\n", complete=False)
    assert index_urls(_config(tmp_path), no_index) == []
    # A wheelhouse may hold what the index lacks: the index alone cannot tell a gap.
    links = Locked("requirements.txt", "-f ./wheels\nsix==1.17.0\n", complete=False)
    assert index_urls(_config(tmp_path), links) == []
    monkeypatch.setenv("UV_FIND_LINKS", str(tmp_path))
    assert index_urls(_config(tmp_path), plain) == []
