"""Verified ``.deb`` files turned into reproducible layers, with what their maintainer scripts
would have done written declaratively instead: no script runs.

Paths are written merged-/usr (``lib/x`` as ``usr/lib/x``), as Debian has installed them since
bookworm, so a layer never turns a base's ``/lib -> usr/lib`` link into a directory. Each
package gets its dpkg record in ``/var/lib/dpkg/status.d/`` (as distroless does) so scanners
see it."""

from __future__ import annotations

import io
import posixpath
import re
import shlex
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from buildpacks.debian.archive import Deb
from buildpacks.errors import BuildError
from buildpacks.oci.blobs import BlobStore
from buildpacks.oci.layer import compress
from buildpacks.oci.model import Layer

MERGED = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
STATUS_D = "var/lib/dpkg/status.d"
# Fields of a Packages entry that describe the archive copy, not the installed package.
_ARCHIVE_ONLY = ("Filename", "Size", "SHA256")
# Maintainer-script work an image cannot do without: these packages' scripts are replaced by
# what ``declarative_files`` writes. Anything else that creates users is refused by name.
HANDLED = {
    "ca-certificates": "the CA bundle /etc/ssl/certs/ca-certificates.crt",
    "tzdata": "/etc/localtime and /etc/timezone (UTC)",
    "base-files": "/tmp, /root and /etc/os-release",
    "base-passwd": "/etc/passwd and /etc/group",
    "libc-bin": "/etc/ld.so.cache",
}
_USERS = re.compile(r"\b(adduser|useradd|addgroup|groupadd)\b")
_ALTERNATIVE = re.compile(r"update-alternatives\s+--install\s+([^\n;|&]+)")


def merged(path: str) -> str:
    """``path`` (relative, no ``./``) as it lies on a merged-/usr system."""
    head, _, rest = path.partition("/")
    return f"usr/{head}/{rest}".rstrip("/") if head in MERGED else path


@dataclass
class Unpacked:
    """What a package's scripts would have set up, gathered while its data is copied."""

    alternatives: dict[str, tuple[int, str, str]] = field(default_factory=dict)

    def alternative(self, name: str, priority: int, link: str, target: str) -> None:
        """Record an ``update-alternatives --install``: the highest priority wins, the
        first one seen on a tie."""
        if name not in self.alternatives or self.alternatives[name][0] < priority:
            self.alternatives[name] = (priority, link, target)

    def update(self, other: Unpacked) -> None:
        """Add what ``other`` gathered, as if its packages had come after these."""
        for name, (priority, link, target) in other.alternatives.items():
            self.alternative(name, priority, link, target)


def handle_scripts(deb: Deb, postinst: str, unpacked: Unpacked) -> None:
    """Handle or refuse what ``postinst`` does that the image needs."""
    if deb.name in HANDLED:
        return
    if _USERS.search(postinst):
        raise BuildError(
            f"Debian package {deb.name}: its maintainer script creates system users or "
            "groups, which an assembled image does not run; choose a base that has it installed"
        )
    for match in _ALTERNATIVE.finditer(postinst.replace("\\\n", " ")):
        words = shlex.split(match[1], comments=True)
        if len(words) < 4 or any("$" in w for w in words[:4]) or not words[3].isdigit():
            raise BuildError(
                f"Debian package {deb.name}: its maintainer script runs update-alternatives "
                f"with computed arguments ({match[0].strip()!r}), which is not handled"
            )
        unpacked.alternative(words[1], int(words[3]), words[0], words[2])


def _status_record(deb: Deb) -> str:
    fields = {k: v for k, v in deb.fields.items() if k not in _ARCHIVE_ONLY}
    fields["Status"] = "install ok installed"
    order = ["Package", "Status", *(k for k in fields if k not in ("Package", "Status"))]
    return "".join(f"{k}: {fields[k]}\n" for k in order)


class LayerWriter:
    """An uncompressed tar being written: directory entries once each, then gzipped into a
    blob by ``finish``."""

    def __init__(self, mtime: int) -> None:
        self.spool = tempfile.TemporaryFile()  # noqa: SIM115  (closed by finish)
        self.tar = tarfile.open(fileobj=self.spool, mode="w", format=tarfile.PAX_FORMAT)  # noqa: SIM115
        self.mtime = mtime
        self.dirs: set[str] = set()
        self.paths: list[str] = []  # files and links written, for /etc/ld.so.cache

    def directory(self, path: str, mode: int = 0o755, mtime: int | None = None) -> None:
        if not path or path in self.dirs:
            return
        self.directory(posixpath.dirname(path))
        self.dirs.add(path)
        info = tarfile.TarInfo(path + "/")
        info.type, info.mode, info.mtime = (
            tarfile.DIRTYPE,
            mode,
            self.mtime if mtime is None else mtime,
        )
        self.tar.addfile(info)

    def file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        self.directory(posixpath.dirname(path))
        info = tarfile.TarInfo(path)
        info.size, info.mode, info.mtime = len(data), mode, self.mtime
        self.tar.addfile(info, io.BytesIO(data))

    def symlink(self, path: str, target: str) -> None:
        self.directory(posixpath.dirname(path))
        info = tarfile.TarInfo(path)
        info.type, info.linkname, info.mode, info.mtime = tarfile.SYMTYPE, target, 0o777, self.mtime
        self.tar.addfile(info)

    def package(self, deb: Deb, path: Path, unpacked: Unpacked) -> dict[str, bytes]:
        """Copy a ``.deb``'s data in; return the files of it asked for by name (the CA
        certificates) for the declarative files."""
        from debian.debfile import DebError, DebFile

        wanted: dict[str, bytes] = {}
        try:
            package = DebFile(str(path))
            control = package.control
            postinst = (
                control.get_content("postinst", encoding="utf-8")
                if control.has_file("postinst")
                else ""
            )
            md5sums = control.get_content("md5sums") if control.has_file("md5sums") else b""
            data = package.data.tgz()
        except (DebError, OSError, tarfile.TarError, KeyError) as e:
            raise BuildError(f"{deb.url}: not a readable .deb ({e})") from None
        handle_scripts(deb, postinst, unpacked)
        for member in data:
            name = member.name.removeprefix("./").strip("/")
            if not name or name in MERGED:
                continue
            name = merged(name)
            if member.isdir():
                self.directory(name, member.mode, member.mtime)
                continue
            self.directory(posixpath.dirname(name))
            info = tarfile.TarInfo(name)
            info.mode, info.mtime, info.uid, info.gid = (
                member.mode,
                member.mtime,
                member.uid,
                member.gid,
            )
            info.type = member.type
            if member.issym():
                original = member.name.removeprefix("./").strip("/")
                target = member.linkname
                if name != original and not target.startswith("/"):
                    # Moved under usr/: keep the link pointing where it pointed.
                    base = posixpath.dirname("/" + original)
                    target = posixpath.normpath(posixpath.join(base, target))
                info.linkname = target
                self.tar.addfile(info)
                self.paths.append(name)
            elif member.islnk():
                info.linkname = merged(member.linkname.removeprefix("./").strip("/"))
                self.tar.addfile(info)
            elif member.isfile():
                stream = data.extractfile(member)
                content = stream.read() if stream else b""
                info.size = len(content)
                self.tar.addfile(info, io.BytesIO(content))
                self.paths.append(name)
                if name.startswith("usr/share/ca-certificates/") and name.endswith(".crt"):
                    wanted[name] = content
            # Device nodes and fifos have no place in an image built without root: skipped.
        self.file(f"{STATUS_D}/{deb.name}", _status_record(deb).encode())
        if md5sums:
            self.file(f"{STATUS_D}/{deb.name}.md5sums", md5sums)
        return wanted

    def finish(self, store: BlobStore) -> Layer:
        self.tar.close()
        self.spool.seek(0)
        try:
            return compress(store, self.spool)
        finally:
            self.spool.close()


def ca_bundle(certificates: dict[str, bytes]) -> bytes:
    """What ``update-ca-certificates`` writes with every certificate enabled (the default)."""
    parts = []
    for _, pem in sorted(certificates.items()):
        parts.append(pem if pem.endswith(b"\n") else pem + b"\n")
    return b"".join(parts)


def passwd(user_id: int, group_id: int) -> tuple[bytes, bytes]:
    """``/etc/passwd`` and ``/etc/group`` with root, the image user and nobody; no logins."""
    users = (
        "root:x:0:0:root:/root:/usr/sbin/nologin\n"
        f"cnb:x:{user_id}:{group_id}:cnb:/workspace:/usr/sbin/nologin\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
    )
    groups = f"root:x:0:\ncnb:x:{group_id}:\nnogroup:x:65534:\n"
    return users.encode(), groups.encode()


def write_alternatives(writer: LayerWriter, unpacked: Unpacked) -> None:
    """The links ``update-alternatives --install`` would make, highest priority winning."""
    for name, (_, link, target) in sorted(unpacked.alternatives.items()):
        writer.symlink(f"etc/alternatives/{name}", target)
        writer.symlink(merged(link.lstrip("/")), f"/etc/alternatives/{name}")
