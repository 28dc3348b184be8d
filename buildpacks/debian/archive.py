"""The Debian archive, verified end to end: ``InRelease`` against the Debian archive keys
(shipped with this package; a private mirror's own keys with ``debian-keyring``), each
``Packages`` index against the SHA-256 its ``InRelease`` lists, each ``.deb`` against the
SHA-256 its ``Packages`` entry lists. Indexes are cached, decompressed, by their digest;
``.deb`` files are kept in the blob store by digest."""

from __future__ import annotations

import hashlib
import lzma
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path

from buildpacks.errors import BuildError
from buildpacks.oci.blobs import BlobStore, write_atomic

KEYRING = Path(__file__).parent / "keys" / "debian-archive-keyring.gpg"
COMPONENT = "main"
# Fields of a Packages entry the build needs: to resolve, to fetch, and to record in
# /var/lib/dpkg/status.d for scanners.
FIELDS = (
    "Package",
    "Version",
    "Architecture",
    "Multi-Arch",
    "Essential",
    "Priority",
    "Section",
    "Source",
    "Maintainer",
    "Installed-Size",
    "Pre-Depends",
    "Depends",
    "Provides",
    "Homepage",
    "Description",
    "Filename",
    "Size",
    "SHA256",
)


@dataclass(frozen=True)
class Archive:
    """One signed archive of a suite, e.g. ``bookworm-security`` under ``.../debian-security``."""

    url: str  # the archive root, e.g. http://deb.debian.org/debian
    dist: str  # e.g. bookworm, bookworm-updates, bookworm-security

    @property
    def in_release(self) -> str:
        return f"{self.url}/dists/{self.dist}/InRelease"


def archives(mirror: str, codename: str) -> tuple[Archive, ...]:
    """The suite, its ``-updates`` and its ``-security`` archive (the security archive lives
    beside the mirror, under ``<mirror>-security``, as Debian's own mirrors lay it out)."""
    mirror = mirror.rstrip("/")
    return (
        Archive(mirror, codename),
        Archive(mirror, f"{codename}-updates"),
        Archive(f"{mirror}-security", f"{codename}-security"),
    )


@dataclass(frozen=True)
class Deb:
    """One binary package of an index: what resolving needs read up front, the rest of its
    entry parsed only when a resolution picks it (an index has tens of thousands)."""

    name: str
    version: str
    provides: str  # its Provides field, "" if none
    stanza: str  # its whole Packages entry
    archive: str  # the archive root its Filename is relative to

    @cached_property
    def fields(self) -> dict[str, str]:
        """The ``FIELDS`` present in its entry, in entry order (Description: first line)."""
        from debian.deb822 import Packages

        fields = dict(Packages(self.stanza, fields=list(FIELDS)).items())
        if "Description" in fields:
            fields["Description"] = fields["Description"].split("\n", 1)[0]
        return fields

    @property
    def architecture(self) -> str:
        return self.fields["Architecture"]

    @property
    def sha256(self) -> str:
        return self.fields["SHA256"]

    @property
    def url(self) -> str:
        return f"{self.archive}/{self.fields['Filename']}"


@cache
def _certs(keyring: Path) -> list:
    """The certificates of an OpenPGP keyring file (binary or armored)."""
    import pysequoia

    try:
        data = keyring.read_bytes()
    except OSError as e:
        raise BuildError(f"debian-keyring {keyring}: cannot be read ({e.strerror})") from None
    try:
        certs = pysequoia.Cert.split_bytes(data)
    except (RuntimeError, ValueError) as e:
        reason = str(e).splitlines()[0] if str(e) else "unreadable"
        raise BuildError(f"debian-keyring {keyring}: not an OpenPGP keyring ({reason})") from None
    if not certs:
        raise BuildError(f"debian-keyring {keyring}: not an OpenPGP keyring (no key in it)")
    return certs


def verify_in_release(data: bytes, what: str, keyring: Path = KEYRING) -> bytes:
    """The signed text of an ``InRelease`` file if a key of ``keyring`` (by default the
    Debian archive keys) signed it."""
    import pysequoia

    certs = _certs(keyring)
    keys = "the Debian archive keys" if keyring == KEYRING else f"debian-keyring {keyring}"
    try:
        verified = pysequoia.verify(bytes=data, store=lambda ids: certs)
    except (RuntimeError, ValueError) as e:
        reason = str(e).splitlines()[0] if str(e) else "no valid signature"
        raise BuildError(
            f"{what}: OpenPGP signature does not verify with {keys} ({reason})"
        ) from None
    if not verified.valid_sigs:
        raise BuildError(f"{what}: OpenPGP signature does not verify with {keys}")
    return verified.bytes


def index_digests(signed: bytes, dist: str, what: str) -> dict[str, tuple[str, int]]:
    """``path -> (sha256, size)`` from a verified ``InRelease``, after checking it is the
    release asked for (a valid signature on another suite's file is no answer)."""
    from debian.deb822 import Release

    release = Release(signed.decode("utf-8"))
    names = {release.get("Codename", ""), release.get("Suite", "")}
    codename = dist.split("-")[0]
    if not names & {dist, codename} and release.get("Codename") != codename:
        raise BuildError(f"{what}: it describes {release.get('Codename')!r}, not {dist!r}")
    return {e["name"]: (e["sha256"], int(e["size"])) for e in release.get("SHA256", [])}


class Fetcher:
    """Fetches from the mirror; one HTTP client per build, errors naming the mirror.
    ``keyring`` holds the keys the mirror's ``InRelease`` files must be signed with."""

    def __init__(
        self, mirror: str, log: Callable[[str], None], keyring: Path | None = None
    ) -> None:
        self.mirror = mirror
        self.log = log
        self.keyring = keyring or KEYRING
        self._client = None
        self._lock = threading.Lock()  # indexes and .debs are fetched from several threads

    def get(self, url: str) -> bytes:
        import httpx

        with self._lock:
            if self._client is None:
                self._client = httpx.Client(timeout=60.0, follow_redirects=True)
            client = self._client
        try:
            response = client.get(url)
        except httpx.HTTPError as e:
            raise BuildError(
                f"Debian mirror {self.mirror} is unreachable ({url}: {e}); "
                "check the network or set debian-mirror"
            ) from None
        if response.status_code != 200:
            raise BuildError(
                f"Debian mirror {self.mirror}: {url} answered HTTP {response.status_code}; "
                "check debian-mirror"
            )
        return response.content

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def _cache_name(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def cached_in_release(archive: Archive, cache_root: Path) -> Path:
    """Where the ``InRelease`` file of ``archive`` is kept: unless the pull policy is
    ``always``, it alone decides which packages an assembly uses."""
    return cache_root / "inrelease" / _cache_name(archive.in_release)


def _field(stanza: str, name: str) -> str | None:
    """The value of field ``name`` (not the first) of a deb822 stanza, folded lines kept as
    deb822 keeps them, without parsing the rest."""
    start = stanza.find(f"\n{name}:")
    if start < 0:
        return None
    end = stanza.find("\n", start + 1)
    while end >= 0 and stanza[end + 1 : end + 2] in (" ", "\t"):
        end = stanza.find("\n", end + 1)
    value = stanza[start + len(name) + 2 : None if end < 0 else end]
    return value.strip()


def parse_packages(text: str, archive: str) -> list[Deb]:
    """The entries of a ``Packages`` index that name a downloadable package. Only the fields
    a resolution reads first (Package, Version, Provides) are read here; deb822 parses an
    entry when its other fields are used."""
    debs = []
    for stanza in text.split("\n\n"):
        stanza = stanza.strip("\n")
        if not stanza.startswith("Package:"):
            continue
        name = stanza[8 : stanza.find("\n")].strip() if "\n" in stanza else ""
        version = _field(stanza, "Version")
        if name and version and "\nFilename:" in stanza and "\nSHA256:" in stanza:
            debs.append(Deb(name, version, _field(stanza, "Provides") or "", stanza, archive))
    return debs


def load_index(
    archive: Archive,
    architecture: str,
    cache_root: Path,
    fetcher: Fetcher,
    pull_policy: str,
) -> tuple[str, Callable[[], list[Deb]]]:
    """The digest of the verified ``Packages`` index of ``archive`` for ``architecture``,
    and a function loading its packages (only a resolution needs them).

    ``InRelease`` is fetched when the pull policy asks (``always``, or ``if-not-present``
    with none cached) and verified every time it is used; the parsed index is cached by
    the digest ``InRelease`` gives, so an unchanged index is never parsed twice.
    """
    signed_path = cached_in_release(archive, cache_root)
    data = None
    if pull_policy != "always":
        try:
            data = signed_path.read_bytes()
        except OSError:
            if pull_policy == "never":
                raise BuildError(
                    f"{archive.in_release} is not in the local cache and pull-policy is never; "
                    "build once with pull-policy if-not-present"
                ) from None
    fresh = data is None
    if data is None:
        data = fetcher.get(archive.in_release)
    signed = verify_in_release(data, archive.in_release, fetcher.keyring)
    if fresh:
        signed_path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(signed_path, data.decode("utf-8"))
    path = f"{COMPONENT}/binary-{architecture}/Packages.xz"
    digests = index_digests(signed, archive.dist, archive.in_release)
    if path not in digests:
        raise BuildError(
            f"{archive.in_release} lists no {path}: the archive has no architecture "
            f"{architecture!r}"
        )
    sha256, _size = digests[path]
    return sha256, lambda: _entries(archive, path, sha256, cache_root, fetcher, pull_policy)


def _entries(
    archive: Archive, path: str, sha256: str, cache_root: Path, fetcher: Fetcher, pull_policy: str
) -> list[Deb]:
    # The verified index, decompressed: scanning it again costs less than any parsed form.
    cached = cache_root / "packages" / f"{sha256}.txt"
    try:
        return parse_packages(cached.read_text("utf-8"), archive.url)
    except (OSError, UnicodeDecodeError):
        pass
    url = f"{archive.url}/dists/{archive.dist}/{path}"
    if pull_policy == "never":
        raise BuildError(f"{url} is not in the local cache and pull-policy is never")
    compressed = fetcher.get(url)
    actual = hashlib.sha256(compressed).hexdigest()
    if actual != sha256:
        raise BuildError(
            f"{url}: SHA-256 {actual} does not match {sha256} from {archive.in_release}"
        )
    try:
        text = lzma.decompress(compressed).decode("utf-8")
    except (lzma.LZMAError, UnicodeDecodeError) as e:
        raise BuildError(f"{url}: not a readable Packages.xz ({e})") from None
    write_atomic(cached, text)
    return parse_packages(text, archive.url)


def fetch_deb(deb: Deb, store: BlobStore, fetcher: Fetcher) -> Path:
    """The ``.deb`` file, from the store or downloaded, its SHA-256 checked either way."""
    digest = f"sha256:{deb.sha256}"
    if store.has(digest):
        return store.path(digest)
    data = fetcher.get(deb.url)
    return store.put_stream([data], digest, f"{deb.url} (SHA-256 from its Packages index)")


def fetch_debs(debs: list[Deb], store: BlobStore, fetcher: Fetcher) -> dict[str, Path]:
    """``fetch_deb`` for each package, several at a time (the archive's latency, not its
    bandwidth, is what a few dozen small files cost)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=8) as pool:
        paths = pool.map(lambda deb: fetch_deb(deb, store, fetcher), debs)
        return {deb.name: path for deb, path in zip(debs, paths, strict=True)}
