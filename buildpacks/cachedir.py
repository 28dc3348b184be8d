"""Where the build cache lives; light, so the up-to-date check can find it first thing."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def cache_dir(configured: str | None) -> Path:
    """``configured`` (the ``cache-dir`` setting) if given, else the user's cache directory."""
    import platformdirs

    return Path(configured or platformdirs.user_cache_dir("python-buildpacks")).expanduser()


@contextmanager
def work_dir(cache: Path) -> Iterator[Path]:
    """A build's scratch directory (staged layers), under ``cache/tmp`` and claimed for the
    build's lifetime, so that the next build removes one left by a build that was killed;
    removed on exit."""
    from buildpacks.oci.blobs import claimed, remove_stale

    tmp = cache / "tmp"
    remove_stale(tmp, "work-*")
    fd, path = claimed(tmp, "work-", is_dir=True)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        os.close(fd)
