"""A local content-addressed blob store: every blob is stored under its own digest and
verified before it is stored, so a half-written or corrupt blob never enters it."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
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


def write_atomic(path: Path, text: str) -> None:
    """Write a small file so that readers see the old content or the new, never a part:
    a temp file beside it (unique, so concurrent builds do not collide), then a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


class BlobStore:
    """Blobs under ``ROOT/sha256/<hex>``; writes go through a temp file and a rename."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, digest: str) -> Path:
        algorithm, _, hex_ = digest.partition(":")
        if algorithm != "sha256" or len(hex_) != 64:
            raise BuildError(f"unsupported digest {digest!r}: only sha256 digests are accepted")
        return self.root / algorithm / hex_

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    @contextmanager
    def writer(self) -> Iterator[tuple[BinaryIO, Path]]:
        """A temp file inside the store, removed unless it was ``adopt``-ed."""
        (self.root / "tmp").mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=self.root / "tmp", prefix="blob-")
        path = Path(name)
        try:
            with os.fdopen(fd, "wb") as f:
                yield f, path
        finally:
            path.unlink(missing_ok=True)

    def adopt(self, temp: Path, digest: str) -> Path:
        """Move a finished temp file into place under ``digest`` (which the caller computed)."""
        target = self.path(digest)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(temp, target)
        return target

    def put_stream(self, chunks: Iterable[bytes], expected: str, what: str) -> Path:
        """Store a downloaded blob, failing if its content does not match ``expected``."""
        with self.writer() as (f, temp):
            h = hashlib.sha256()
            for chunk in chunks:
                h.update(chunk)
                f.write(chunk)
            f.close()
            actual = "sha256:" + h.hexdigest()
            if actual != expected:
                raise BuildError(f"{what}: content digest {actual} does not match {expected}")
            return self.adopt(temp, expected)

    def put_bytes(self, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if not self.has(digest):
            self.put_stream([data], digest, "blob")
        return digest
