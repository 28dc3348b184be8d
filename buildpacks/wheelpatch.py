"""A warm edit's wheel made from the last one: when nothing a build reads has changed but the
content of files the backend copies into the wheel byte for byte (hatchling's selected
files), the new wheel is the last one with those files' entries and ``RECORD`` rewritten,
entry by entry as hatchling writes them, so it is the wheel the backend would build, byte
for byte, without importing it.

The last wheel is kept beside the up-to-date record (``CACHE/uptodate/KEY.wheel``), in one
file written atomically: a JSON line (the fingerprint's shape, the stats of the verbatim
files, the content digests of the other files changed just before it was taken) then the
wheel. It is used only when the shape of the new build's fingerprint is the same; a file
whose mode changed, a file changed within the file system clock's tick before either
fingerprint (compared by content then), anything unexpected in the kept file means no patch
(None): the caller builds the wheel in full, never fails for it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from buildpacks.oci.blobs import file_digest, write_atomic

if TYPE_CHECKING:
    from buildpacks.uptodate import Fingerprint

DEFLATED = 8  # zipfile.ZIP_DEFLATED, which hatchling writes every entry with


@dataclass(eq=False, repr=False)  # no generated methods but __init__: one exec
class Kept:
    """The last wheel and what it was built from."""

    shape: str
    recent: dict[str, str]
    files: dict[str, list[int] | None]
    names: dict[str, str]
    racy: list[str]
    wheel: str


def kept_file(record: Path) -> Path:
    """Where the last wheel of the builds recorded at ``record`` is kept."""
    return record.with_suffix(".wheel")


def _read(record: Path, *, with_wheel: bool) -> tuple[Kept, bytes] | None:
    try:
        with open(kept_file(record), "rb") as f:
            kept = Kept(**json.loads(f.readline()))
            data = f.read() if with_wheel else b""
    except (OSError, ValueError, TypeError):
        return None
    return kept, data


def kept_shape(record: Path) -> str | None:
    """The shape of the fingerprint of the build that left its wheel at ``record``, if any."""
    found = _read(record, with_wheel=False)
    return found[0].shape if found else None


def keep(record: Path, current: Fingerprint | None, wheel: Path) -> None:
    """Keep ``wheel``, just built from the inputs ``current`` describes, for the next build;
    without a fingerprint or verbatim files there is nothing to patch: drop the last one."""
    if current is None or not current.shape or not current.contents:
        forget(record)
        return
    kept = Kept(
        shape=current.shape,
        recent={p: d for p, d in current.recent.items() if p not in current.names},
        files=current.contents,
        names=current.names,
        racy=sorted(p for p in current.recent if p in current.names),
        wheel=wheel.name,
    )
    header = json.dumps(kept.__dict__, sort_keys=True).encode()
    # Removed first: ext4 flushes a file renamed over another before the rename returns.
    forget(record)
    try:
        write_atomic(kept_file(record), header + b"\n" + wheel.read_bytes())
    except Exception:  # the image is built: a wheel not kept only makes the next build full
        forget(record)


def forget(record: Path) -> None:
    """Drop the kept wheel."""
    with suppress(OSError):
        kept_file(record).unlink(missing_ok=True)


def patch(
    record: Path, current: Fingerprint, out_dir: Path, log: Callable[[str], None]
) -> tuple[Path, int] | None:
    """The wheel of the build ``current`` describes, made in ``out_dir`` from the one kept
    at ``record``, with the number of files replaced (told to ``log``); None when it cannot
    be (no kept wheel, another shape, a mode changed, anything unexpected)."""
    try:
        patched = _patch(record, current, out_dir)
    except Exception:  # any failure means a full build, which reports what is wrong
        return None
    if patched is not None:
        log(f"Building the wheel from the last one, {patched[1]} file(s) replaced")
    return patched


def _patch(record: Path, current: Fingerprint, out_dir: Path) -> tuple[Path, int] | None:
    found = _read(record, with_wheel=True) if current.shape and current.contents else None
    if found is None:
        return None
    kept, data = found
    if kept.shape != current.shape or kept.names != current.names:
        return None
    if set(kept.files) != set(current.contents) or Path(kept.wheel).name != kept.wheel:
        return None
    if any(file_digest(Path(p)) != digest for p, digest in kept.recent.items()):
        return None
    changed: dict[str, str] = {}  # entry name -> file
    for path, key in current.contents.items():
        before = kept.files[path]
        if key is None or before is None:
            return None
        if key[4] != before[4]:
            return None  # the entry's mode would change: hatchling knows how
        if key != before or path in kept.racy or path in current.recent:
            changed[current.names[path]] = path
    target = out_dir / kept.wheel
    _rewrite(data, changed, target)
    return target, len(changed)


def _rewrite(data: bytes, changed: dict[str, str], target: Path) -> None:
    """Write the wheel ``data`` to ``target`` with the entries named in ``changed`` read
    from their files and ``RECORD`` updated: every entry written as hatchling writes it (a
    new ``ZipInfo`` with the date, mode bits and deflate of the old, in the same order)."""
    import base64
    import csv
    import hashlib
    import io
    import zipfile

    with zipfile.ZipFile(io.BytesIO(data)) as old:
        infos = old.infolist()
        records = [i for i in infos if i.filename.endswith(".dist-info/RECORD")]
        if len(records) != 1 or infos[-1] is not records[0]:
            raise ValueError("RECORD is not the last entry")
        if not set(changed) <= {i.filename for i in infos}:
            raise ValueError("a file has no entry")
        record_text = old.read(records[0]).decode()
        rows = list(csv.reader(io.StringIO(record_text)))
        if _csv(rows) != record_text:
            raise ValueError("RECORD is not written as hatchling writes it")
        contents: dict[str, bytes] = {}
        for name, path in changed.items():
            with open(path, "rb") as f:
                contents[name] = f.read()
        for row in rows:
            if row and row[0] in contents:
                content = contents[row[0]]
                digest = base64.urlsafe_b64encode(hashlib.sha256(content).digest())
                row[1:] = [f"sha256={digest.decode().rstrip('=')}", str(len(content))]
        contents[records[0].filename] = _csv(rows).encode()
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            with os.fdopen(fd, "wb") as f, zipfile.ZipFile(f, "w", DEFLATED) as new:
                for info in infos:
                    if info.compress_type != DEFLATED or info.is_dir():
                        raise ValueError(f"{info.filename}: not a deflated file")
                    content = contents.get(info.filename)
                    if content is None:
                        content = old.read(info)
                    entry = zipfile.ZipInfo(info.filename, info.date_time)
                    entry.external_attr = info.external_attr
                    entry.compress_type = DEFLATED
                    entry.file_size = len(content)
                    with new.open(entry, "w") as dest:
                        dest.write(content)
        except BaseException:
            target.unlink(missing_ok=True)
            raise


def _csv(rows: list[list[str]]) -> str:
    """``RECORD``'s text, as hatchling writes it."""
    import csv
    import io

    out = io.StringIO()
    csv.writer(out, delimiter=",", quotechar='"', lineterminator="\n").writerows(rows)
    return out.getvalue()
