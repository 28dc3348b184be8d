"""Where the build cache lives; light, so the up-to-date check can find it first thing.
Also its trash: what a build no longer needs (its scratch directory, the archive its new one
replaced) is moved there and removed in the background, not while the user waits."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def cache_dir(configured: str | None) -> Path:
    """``configured`` (the ``cache-dir`` setting) if given, else the user's cache directory."""
    if configured:
        return Path(configured).expanduser()
    import platformdirs  # only when no cache directory is configured

    return Path(platformdirs.user_cache_dir("python-buildpacks")).expanduser()


def trash_dir(cache: Path) -> Path:
    """Where ``discard`` puts what ``empty_trash`` removes."""
    return cache / "tmp" / "trash"


def _trash_name(path: Path, trash: Path) -> Path:
    trash.mkdir(parents=True, exist_ok=True)
    return trash / f"{path.name}.{os.getpid()}.{threading.get_ident()}.{os.urandom(4).hex()}"


def discard(path: Path, cache: Path) -> None:
    """Move ``path``, a file or directory no longer needed, into the cache's trash; if it
    cannot go there (another file system, a full disk), remove it now; nothing if it is
    missing. Freeing the blocks of many or large files takes milliseconds per file or per
    ten megabytes where the file system discards freed blocks at once (ext4 mounted with
    ``discard``, as on many cloud machines)."""
    try:
        os.rename(path, _trash_name(path, trash_dir(cache)))
        return
    except FileNotFoundError:
        return
    except OSError:
        pass
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def empty_trash(cache: Path) -> None:
    """Move the scratch directories of builds that were killed into the cache's trash, then
    remove what is in it, in a daemon thread that the build does not wait for: what is left
    when the process ends is removed by the next build. Files (archives) go first,
    directories (scratch, many files) after. Concurrent builds sharing the cache may empty
    it together."""
    from buildpacks.oci.blobs import remove_stale

    remove_stale(cache / "tmp", "work-*", lambda path: discard(path, cache))

    def run() -> None:
        try:
            entries = list(os.scandir(trash_dir(cache)))
        except OSError:
            return
        for entry in sorted(entries, key=lambda e: e.is_dir(follow_symlinks=False)):
            try:
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    os.unlink(entry.path)
            except OSError:
                pass  # another build removed it first

    threading.Thread(target=run, name="empty-trash", daemon=True).start()


@contextmanager
def work_dir(cache: Path) -> Iterator[Path]:
    """A build's scratch directory (staged layers), under ``cache/tmp`` and claimed for the
    build's lifetime, so that the next build (``empty_trash``) finds one left by a build
    that was killed; moved into the trash on exit."""
    from buildpacks.oci.blobs import claimed

    fd, path = claimed(cache / "tmp", "work-", is_dir=True)
    try:
        yield path
    finally:
        discard(path, cache)
        os.close(fd)
