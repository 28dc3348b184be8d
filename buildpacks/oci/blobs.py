"""A local content-addressed blob store: every blob is stored under its own digest and
verified before it is stored, and verified again (once per store, that is per build) before
it is used, so a half-written, truncated or altered blob never reaches an image.

Temp files here and beside outputs are *claimed*: their maker holds an ``flock`` on them for
as long as it runs. The kernel drops the lock when the process ends, however it ends
(``kill -9`` included), so the next build tells a live temp file of a concurrent build from
a stale one by trying the lock, and removes only the stale."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO

from buildpacks.errors import BuildError

CHUNK = 1 << 20


def file_digest(path: Path) -> str:
    """The sha256 digest of a file's content."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def claimed(
    directory: Path, prefix: str, suffix: str = "", *, is_dir: bool = False
) -> tuple[int, Path]:
    """A new temp file (or directory) in ``directory`` and a descriptor holding its lock;
    the lock lasts until the descriptor is closed or the process ends. Made here, not by
    ``tempfile``, so that an exception at any point (Ctrl-C's ``KeyboardInterrupt`` comes
    between any two Python calls, and ``mkstemp`` makes the file before it returns) takes
    the new file away again: nothing that no one holds is left behind."""
    directory.mkdir(parents=True, exist_ok=True)
    while True:
        path = directory / f"{prefix}{os.urandom(6).hex()}{suffix}"
        fd = -1
        try:
            if is_dir:
                os.mkdir(path, 0o700)
                fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
            else:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            # A sweeper may have taken the new file for stale between its creation and this
            # lock (then it holds the lock until it has removed it): start again if it is gone.
            with suppress(FileNotFoundError):
                if os.stat(path).st_ino == os.fstat(fd).st_ino:
                    return fd, path
        except FileExistsError:
            continue  # another one's name: not ours to remove
        except BaseException:
            if fd != -1:
                os.close(fd)
            with suppress(OSError):
                if is_dir:
                    os.rmdir(path)
                else:
                    os.unlink(path)
            raise
        os.close(fd)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_stale(directory: Path, pattern: str, remove: Callable[[Path], None] = _remove) -> None:
    """Remove (with ``remove``) the temp files and directories matching ``pattern`` in
    ``directory`` whose makers have ended: their lock is free. Live ones, of concurrent
    builds, stay."""
    try:
        candidates = list(directory.glob(pattern))
    except OSError:
        return
    for path in candidates:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            remove(path)
        except OSError:
            pass  # locked: its maker is still running
        finally:
            os.close(fd)


def no_space(e: OSError, what: Path) -> BuildError | None:
    """The one-line error for a full disk (or quota) while writing ``what``; None for others."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return BuildError(f"no space left on the device of {what.parent} while writing {what.name}")
    return None


def file_identity(st: os.stat_result) -> list[int]:
    """What a file's content cannot change without changing too: size, modification and
    change times, inode (ctime: even a write that restores the mtime moves it)."""
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def _stamp(path: Path) -> str:
    return " ".join(map(str, file_identity(path.stat())))


def write_atomic(path: Path, text: str | bytes) -> None:
    """Write a small file (``text`` as UTF-8, or bytes) so that readers see the old content
    or the new, never a part: a claimed temp file beside it (unique, so concurrent builds do
    not collide), then a rename. Temp files left by killed writers of the same file are
    removed first."""
    remove_stale(path.parent, f".{path.name}.*.partial")
    fd, temp = claimed(path.parent, f".{path.name}.", ".partial")
    data = text.encode() if isinstance(text, str) else text
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.replace(temp, path)
    except OSError as e:
        temp.unlink(missing_ok=True)
        raise no_space(e, path) or e from None
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


class BlobStore:
    """Blobs under ``ROOT/sha256/<hex>``; writes go through a claimed temp file in
    ``ROOT/tmp`` and a rename. ``log`` hears of corrupt blobs thrown away."""

    def __init__(self, root: Path, log: Callable[[str], None] | None = None) -> None:
        self.root = root
        self.log = log
        self._verified: set[str] = set()  # digests hashed (or written) by this store
        self._swept = False

    def path(self, digest: str) -> Path:
        algorithm, _, hex_ = digest.partition(":")
        if algorithm != "sha256" or len(hex_) != 64:
            raise BuildError(f"unsupported digest {digest!r}: only sha256 digests are accepted")
        return self.root / algorithm / hex_

    def has(self, digest: str) -> bool:
        """Whether the store holds ``digest`` intact. Its content is hashed unless this store
        hashed it before and its file is untouched since (size, mtime, ctime and inode as
        recorded then: any write, truncation, ``touch`` or replacement changes the ctime, as
        git's index relies on); a blob whose content does not match is deleted, so that the
        caller fetches it again."""
        if digest in self._verified:
            return True
        path = self.path(digest)
        record = self.root / "verified" / path.name
        try:
            stamp = _stamp(path)
        except (FileNotFoundError, NotADirectoryError):
            return False
        try:
            if record.read_text() == stamp:
                self._verified.add(digest)
                return True
        except OSError:
            pass  # no record yet (or an unreadable one): hash it
        try:
            actual = file_digest(path)
        except (FileNotFoundError, IsADirectoryError):
            return False
        if actual != digest:
            path.unlink(missing_ok=True)
            record.unlink(missing_ok=True)
            if self.log is not None:
                self.log(f"Cached blob {digest[:19]} is corrupt (content {actual[:19]}): removed")
            return False
        self._verified.add(digest)
        self._remember(path, record, stamp)
        return True

    def _remember(self, path: Path, record: Path, stamp: str) -> None:
        # Recorded only if the file is still as it was hashed; a failed write of the record
        # costs one more hash next time, nothing else.
        with suppress(OSError):
            if _stamp(path) == stamp:
                write_atomic(record, stamp)

    @contextmanager
    def writer(self) -> Iterator[tuple[BinaryIO, Path]]:
        """A claimed temp file inside the store, removed unless it was ``adopt``-ed. The
        first one of a store removes those left by builds that were killed. Its lock lasts
        as long as the file object is open: ``adopt`` it before closing it, or a concurrent
        build (or another store of this one) may sweep it away as stale."""
        tmp = self.root / "tmp"
        if not self._swept:
            remove_stale(tmp, "blob-*")
            self._swept = True
        fd, path = claimed(tmp, "blob-")
        try:
            with os.fdopen(fd, "wb") as f:
                yield f, path
        except OSError as e:
            raise no_space(e, path) or e from None
        finally:
            path.unlink(missing_ok=True)

    def adopt(self, temp: Path, digest: str) -> Path:
        """Move a finished temp file into place under ``digest`` (which the caller computed
        from its content, so it counts as verified)."""
        target = self.path(digest)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(temp, target)
        self._verified.add(digest)
        self._remember(target, self.root / "verified" / target.name, _stamp(target))
        return target

    def put_stream(self, chunks: Iterable[bytes], expected: str, what: str) -> Path:
        """Store a blob, hashed while it is copied; fails (storing nothing) if its content
        does not match ``expected``."""
        with self.writer() as (f, temp):
            h = hashlib.sha256()
            for chunk in chunks:
                h.update(chunk)
                f.write(chunk)
            f.flush()  # not closed: closing drops the lock, and a sweeper may take the file
            actual = "sha256:" + h.hexdigest()
            if actual != expected:
                raise BuildError(
                    f"{what}: content digest {actual} does not match {expected} "
                    "(truncated or altered)"
                )
            return self.adopt(temp, expected)

    def put_bytes(self, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if not self.has(digest):
            self.put_stream([data], digest, "blob")
        return digest
