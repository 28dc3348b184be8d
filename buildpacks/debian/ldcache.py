"""``/etc/ld.so.cache`` written declaratively, as ``ldconfig`` (libc-bin's trigger) would
after packages are unpacked: ``ldconfig -p`` reads it, and with it ``ctypes.util.find_library``
(how psycopg finds ``libpq``). Only the glibc 2.32+ format is written; the loader itself
falls back to its default directories for any name it does not find here."""

from __future__ import annotations

import functools
import posixpath
import re
import struct
from collections.abc import Iterable

MAGIC = b"glibc-ld.so.cache1.1"
_HEADER = struct.Struct("<20sIIB3xI12x")  # magic+version, nlibs, len_strings, flags, ext
_ENTRY = struct.Struct("<iIIIQ")  # flags, key, value, osversion (unused), hwcap
_LITTLE_ENDIAN = 2
_ELF_LIBC6 = 0x0003
# ldconfig's flag for each architecture's 64-bit libraries (dl-cache.h).
ARCH_FLAGS = {"amd64": 0x0300, "arm64": 0x0A00}
TRIPLETS = {"amd64": "x86_64-linux-gnu", "arm64": "aarch64-linux-gnu"}
_LIBRARY = re.compile(r"^(lib.+|ld-.+)\.so(\.\d+)+$")


def library_dirs(architecture: str) -> tuple[str, ...]:
    """The directories Debian's ldconfig scans (relative, merged-/usr)."""
    return (f"usr/lib/{TRIPLETS[architecture]}", "usr/lib", "usr/local/lib")


def is_library(path: str, architecture: str) -> bool:
    """Whether ``path`` (relative) is a versioned shared library ldconfig would list."""
    directory, name = posixpath.split(path)
    return directory in library_dirs(architecture) and bool(_LIBRARY.match(name))


def _libcmp(a: str, b: str) -> int:
    """glibc's ``_dl_cache_libcmp``: digit runs compare as numbers and sort after others."""
    i = j = 0
    while i < len(a) and j < len(b):
        if a[i].isdigit() and b[j].isdigit():
            m, n = i, j
            while m < len(a) and a[m].isdigit():
                m += 1
            while n < len(b) and b[n].isdigit():
                n += 1
            if int(a[i:m]) != int(b[j:n]):
                return int(a[i:m]) - int(b[j:n])
            i, j = m, n
        elif a[i].isdigit():
            return 1
        elif b[j].isdigit():
            return -1
        elif a[i] != b[j]:
            return ord(a[i]) - ord(b[j])
        else:
            i, j = i + 1, j + 1
    return (len(a) - i) - (len(b) - j)


def ld_so_cache(paths: Iterable[str], architecture: str) -> bytes:
    """The cache listing the libraries among ``paths`` (relative image paths), sorted as the
    loader's binary search expects (descending by ``_dl_cache_libcmp``); the first
    directory of ``library_dirs`` wins for a name found twice."""
    chosen: dict[str, str] = {}
    order = library_dirs(architecture)
    for path in sorted(
        (p for p in paths if is_library(p, architecture)),
        key=lambda p: order.index(posixpath.dirname(p)),
    ):
        chosen.setdefault(posixpath.basename(path), "/" + path)
    names = sorted(chosen, key=functools.cmp_to_key(_libcmp), reverse=True)
    start = _HEADER.size + _ENTRY.size * len(names)
    strings = bytearray()
    entries = bytearray()
    flags = _ELF_LIBC6 | ARCH_FLAGS[architecture]
    for name in names:
        key = start + len(strings)
        strings += name.encode() + b"\0"
        value = start + len(strings)
        strings += chosen[name].encode() + b"\0"
        entries += _ENTRY.pack(flags, key, value, 0, 0)
    header = _HEADER.pack(MAGIC, len(names), len(strings), _LITTLE_ENDIAN, 0)
    return header + bytes(entries) + bytes(strings)
