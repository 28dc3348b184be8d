"""Looking into an image's filesystem without unpacking it: the layers are read in order
and whiteouts applied, keeping only the paths a caller asks about."""

from __future__ import annotations

import tarfile
from collections.abc import Callable
from dataclasses import dataclass

from buildpacks.oci.layer import iter_entries
from buildpacks.oci.model import Image

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"


@dataclass(eq=False, repr=False)
class Entry:
    """A file of the image's final filesystem: kind, link target, and content if asked for."""

    path: str
    kind: str  # "file", "dir", "symlink", "link", "other"
    linkname: str = ""
    content: bytes | None = None


def _kind(info: tarfile.TarInfo) -> str:
    if info.issym():
        return "symlink"
    if info.islnk():
        return "link"
    if info.isdir():
        return "dir"
    return "file" if info.isfile() else "other"


def find(
    image: Image,
    wanted: Callable[[str], bool],
    read: Callable[[str], bool] = lambda path: False,
) -> dict[str, Entry]:
    """The entries of the image whose path (relative, no leading slash) is ``wanted``;
    for those also ``read``, their content is loaded."""
    found: dict[str, Entry] = {}
    for layer in image.layers:
        for tar, info in iter_entries(layer):
            path = info.name.removeprefix("./").strip("/")
            directory, _, base = path.rpartition("/")
            if base == OPAQUE:
                prefix = directory + "/"
                for key in [k for k in found if k.startswith(prefix)]:
                    del found[key]
                continue
            if base.startswith(WHITEOUT):
                gone = f"{directory}/{base[len(WHITEOUT) :]}".lstrip("/")
                for key in [k for k in found if k == gone or k.startswith(gone + "/")]:
                    del found[key]
                continue
            if not wanted(path):
                continue
            content = None
            if info.isfile() and read(path):
                stream = tar.extractfile(info)
                content = stream.read() if stream else None
            found[path] = Entry(path, _kind(info), info.linkname, content)
    return found
