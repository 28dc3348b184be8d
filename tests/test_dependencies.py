"""The dependencies buildpack's venv arrangement over uv's target, whose files are links
into uv's cache (``--link-mode hardlink``): nothing it changes may reach the cache."""

from __future__ import annotations

import os

from buildpacks.builtin import Runtime
from buildpacks.builtin.dependencies import VENV, make_venv

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
