"""The dependencies buildpack's venv arrangement over uv's target, whose files are links
into uv's cache (``--link-mode hardlink``): nothing it changes may reach the cache. The
real uv installing while the wheel-gap check runs, and stopped when the check fails."""

from __future__ import annotations

import os
import socket
import time
import zipfile
from pathlib import Path

import pytest

from buildpacks.builtin import Runtime
from buildpacks.builtin.dependencies import VENV, install, make_venv
from buildpacks.errors import BuildError
from buildpacks.locks import Locked

RECORD = "tool/__init__.py,sha256=abc,4\nbin/tool,sha256=def,40\ntool-1.0.dist-info/RECORD,,\n"


def test_make_venv_never_writes_through_links_into_uvs_cache(tmp_path):
    # uv's cache, and its target made of hard links to it, as uv installs one.
    cache = tmp_path / "cache"
    files = {
        "tool/__init__.py": b"x=1\n",
        "tool-1.0.dist-info/RECORD": RECORD.encode(),
        "tool-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: tool\nVersion: 1.0\n",
        "bin/tool": b"#!/usr/bin/python3\nfrom tool import main\nmain()\n",
    }
    target = tmp_path / "target"
    for name, data in files.items():
        (cache / name).parent.mkdir(parents=True, exist_ok=True)
        (cache / name).write_bytes(data)
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        os.link(cache / name, target / name)
    assert (target / "bin/tool").stat().st_nlink == 2

    runtime = Runtime("/usr/bin/python3.11", "3.11.2", "3.11", "x86_64-manylinux_2_36")
    make_venv(tmp_path / "venv", target, runtime)

    # The venv is arranged: scripts point into the image, RECORD says where they went.
    site = tmp_path / "venv/lib/python3.11/site-packages"
    script = (tmp_path / "venv/bin/tool").read_bytes()
    assert script.startswith(f"#!{VENV}/bin/python\n".encode())
    assert "../../../bin/tool," in (site / "tool-1.0.dist-info/RECORD").read_text()
    # ... and the cache holds what it held.
    for name, data in files.items():
        assert (cache / name).read_bytes() == data, name
    assert (site / "tool/__init__.py").samefile(cache / "tool/__init__.py")  # still a link


DEBIAN_311 = Runtime("/usr/bin/python3.11", "3.11.2", "3.11", "x86_64-manylinux_2_36")


def _wheelhouse(directory: Path) -> Path:
    """A find-links directory with one pure wheel, ``tiny 1.0``."""
    directory.mkdir()
    files = {
        "tiny/__init__.py": "x = 1\n",
        "tiny-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: tiny\nVersion: 1.0\n",
        "tiny-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    files["tiny-1.0.dist-info/RECORD"] = "".join(
        f"{n},,\n" for n in [*files, "tiny-1.0.dist-info/RECORD"]
    )
    with zipfile.ZipFile(directory / "tiny-1.0-py3-none-any.whl", "w") as wheel:
        for name, text in files.items():
            wheel.writestr(name, text)
    return directory


def _children() -> list[str]:
    """The names (``comm``) of this process's child processes, zombies included."""
    names = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # ended meanwhile
        comm, _, rest = text.rpartition(")")
        if int(rest.split()[1]) == os.getpid():
            names.append(comm.split("(", 1)[1])
    return names


def test_the_check_runs_while_uv_installs(tmp_path, monkeypatch):
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "uv-cache"))
    wheels = _wheelhouse(tmp_path / "wheels")
    seen: list[str] = []
    assert "uv" not in _children()  # (other tests' servers may be children: not counted)
    locked = Locked("requirements.txt", "tiny==1.0\n", complete=True)
    args = ["--no-index", "--find-links", str(wheels)]
    install(
        locked, tmp_path / "target", DEBIAN_311, args, tmp_path, lambda: seen.extend(_children())
    )
    assert "uv" in seen  # uv was started before the check, not after it
    assert (tmp_path / "target/tiny/__init__.py").read_text() == "x = 1\n"
    assert "uv" not in _children()


def test_a_failed_check_stops_uv_and_is_the_error(tmp_path, monkeypatch):
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "uv-cache"))

    def gap() -> None:
        raise BuildError("no wheel for x86_64-manylinux_2_36 (CPython 3.11.2): absent 1.0")

    # uv waits on an index that accepts the connection and never answers (uv would wait
    # for its 30 s HTTP timeout, then fail): the check's error is raised at once, and uv is
    # killed, not left running nor unreaped.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/simple"
        locked = Locked("requirements.txt", "absent==1.0\n", complete=True)
        assert "uv" not in _children()
        started = time.monotonic()
        with pytest.raises(BuildError, match=r"^no wheel for .*: absent 1\.0$"):
            install(locked, tmp_path / "target", DEBIAN_311, ["--index-url", url], tmp_path, gap)
        assert time.monotonic() - started < 10
        assert "uv" not in _children()
