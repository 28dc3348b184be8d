"""The wheel-gap check: before anything is installed, every pinned dependency must have a
wheel for every platform of the image, since dependencies are never built from source
(``uv pip install --no-build``). One error names each package and platform without one,
with the nearest version that has one.

The check itself (``find_gaps``) is a pure function over file names and wheel tags. The
file names come from ``uv.lock`` when it lists them, else from the package index's simple
API (PEP 691 JSON, or PEP 503 HTML from indexes that speak only that), fetched in parallel
and kept a short while under the cache directory.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.tags import Tag
from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version

from buildpacks.builtin import Runtime
from buildpacks.builtin.application import Host, image_tags, this_host
from buildpacks.errors import BuildError
from buildpacks.locks import Locked, Target, pinned, uv_lock_files
from buildpacks.oci.auth import redact
from buildpacks.oci.blobs import write_atomic

# How long an index page fetched is trusted before it is asked again (new releases appear;
# a pinned version's files rarely change). pull-policy never trusts it forever.
PAGE_LIFETIME = 600
WHEELS_ONLY = (
    "dependencies are installed from wheels only, never built from source: pin versions "
    "that ship wheels for every platform of the image, or choose another base"
)
ACCEPT = "application/vnd.pypi.simple.v1+json, text/html;q=0.1"
FETCHERS = 8


# -- plain data and the pure check ----------------------------------------------------------


@dataclass(frozen=True)
class Dist:
    """A file of a release as the index lists it (a wheel or an sdist)."""

    filename: str
    requires_python: str | None = None
    yanked: bool = False


@dataclass(frozen=True)
class Pin:
    """A dependency pinned to one version, with the files known for that version."""

    name: str
    version: str
    files: tuple[Dist, ...]


@dataclass(frozen=True)
class WheelTarget:
    """One platform of the image: the wheel tags its Python accepts."""

    platform: str  # linux/arm64
    tags: frozenset[Tag]
    python: str  # X.Y.Z (or X.Y): candidates whose Requires-Python excludes it are not offered
    description: str = ""  # shown with the platform, e.g. "CPython 3.11, aarch64-manylinux_2_36"


@dataclass(frozen=True)
class Gap:
    """A pinned dependency without a wheel for a platform, and what would have one."""

    name: str
    version: str
    platform: str
    nearest: str | None  # the nearest version with a wheel for the platform, if one is known
    searched: bool  # whether the index's other versions were looked at


def wheel_target(platform: str, runtime: Runtime, host: Host | None = None) -> WheelTarget:
    """The target of an image's ``platform`` whose Python is ``runtime``; ``host`` is the
    machine building it (its own ``linux_<arch>`` wheels may fit, as for the app wheel)."""
    return WheelTarget(
        platform,
        frozenset(image_tags(runtime, host)),
        runtime.version,
        f"CPython {runtime.minor}, {runtime.wheel_platform}",
    )


def _wheel_tags(filename: str) -> frozenset[Tag] | None:
    """The tags of a wheel file name; None for an sdist or a name that is not a wheel's."""
    if not filename.endswith(".whl"):
        return None
    try:
        return parse_wheel_filename(filename)[3]
    except InvalidWheelFilename:
        return None


def _fits(dist: Dist, target: WheelTarget) -> bool:
    tags = _wheel_tags(dist.filename)
    return bool(tags and tags & target.tags)


def _admits(requires_python: str | None, python: str) -> bool:
    if not requires_python:
        return True
    try:
        return SpecifierSet(requires_python).contains(python, prereleases=True)
    except (InvalidSpecifier, InvalidVersion):
        return True  # an index's malformed metadata is uv's to judge, not a reason to refuse


def version_of(filename: str) -> Version | None:
    """The version in a wheel or sdist file name; None when it is neither."""
    try:
        if filename.endswith(".whl"):
            return parse_wheel_filename(filename)[1]
        return parse_sdist_filename(filename)[1]
    except (InvalidWheelFilename, InvalidSdistFilename, InvalidVersion):
        return None


def nearest_version(pinned: Version, candidates: Iterable[Version]) -> Version | None:
    """The version closest to ``pinned`` among ``candidates``: newer of the same major
    first, then older of the same major, then newer, then older."""
    known = set(candidates)
    newer = sorted(v for v in known if v > pinned)
    older = sorted((v for v in known if v < pinned), reverse=True)
    for group in (
        [v for v in newer if v.major == pinned.major],
        [v for v in older if v.major == pinned.major],
        newer,
        older,
    ):
        if group:
            return group[0]
    return None


def find_gaps(
    pins: Sequence[Pin],
    targets: Sequence[WheelTarget],
    releases: Mapping[str, Sequence[Dist]] | None = None,
) -> list[Gap]:
    """Each pin and target with no wheel among the pin's files whose tags the target accepts
    (a ``py3-none-any`` wheel fits every target; an sdist fits none). ``releases``: every
    file the index lists for a project (by canonical name), to find the nearest version
    that has a wheel for the target (not yanked, not a pre-release unless the pin is one,
    its Requires-Python admitting the target's Python)."""
    releases = releases or {}
    gaps = []
    for target in targets:
        for pin in pins:
            if any(_fits(dist, target) for dist in pin.files):
                continue
            key = canonicalize_name(pin.name)
            nearest = None
            try:
                wanted = Version(pin.version)
            except InvalidVersion:
                wanted = None
            if wanted is not None and key in releases:
                candidates = {
                    version
                    for dist in releases[key]
                    if not dist.yanked
                    and _fits(dist, target)
                    and _admits(dist.requires_python, target.python)
                    and (version := version_of(dist.filename)) is not None
                    and (wanted.is_prerelease or not version.is_prerelease)
                }
                found = nearest_version(wanted, candidates)
                nearest = str(found) if found is not None else None
            gaps.append(Gap(pin.name, pin.version, target.platform, nearest, key in releases))
    return gaps


def gap_message(gaps: Sequence[Gap], targets: Sequence[WheelTarget]) -> str:
    """The one error line for ``gaps``: per platform, each package and version without a
    wheel and the nearest version with one."""
    described = {t.platform: t.description for t in targets}
    parts = []
    for platform in dict.fromkeys(g.platform for g in gaps):
        items = []
        for gap in (g for g in gaps if g.platform == platform):
            if gap.nearest:
                hint = f"nearest with one: {gap.nearest}"
            elif gap.searched:
                hint = "no version has one"
            else:
                hint = "other versions unknown"
            items.append(f"{gap.name} {gap.version} ({hint})")
        where = f"{platform} ({described[platform]})" if described.get(platform) else platform
        parts.append(f"no wheel for {where}: " + ", ".join(items))
    return "; ".join(parts) + "; " + WHEELS_ONLY


# -- pins from the requirements a lock gives ------------------------------------------------


def pinned_requirements(text: str, target: Target) -> list[tuple[str, str]]:
    """``(name, version)`` of each requirement of ``text`` (requirements.txt syntax, as
    ``locks`` produces it) pinned to one version and applying to ``target``."""
    found = []
    for logical in text.replace("\\\n", " ").splitlines():
        line = re.split(r"\s--hash[ =]", re.sub(r"(^|\s)#.*$", "", logical))[0].strip()
        if not line or line.startswith("-"):
            continue
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            continue  # locks has refused what it cannot read; uv reports the rest
        marker = str(requirement.marker) if requirement.marker else None
        if requirement.url or not pinned(requirement) or not target.applies(marker, line):
            continue
        version = next(iter(requirement.specifier)).version
        found.append((requirement.name, version))
    return found


# -- the package index, with a short-lived cache --------------------------------------------


class Unavailable(Exception):
    """An index page could not be had (unreachable, an error status, offline and not cached)."""


def _anchors(html: str) -> list[Dist]:
    """The files of a PEP 503 project page: its anchors."""
    from html.parser import HTMLParser  # indexes that speak only HTML are few

    files: list[Dist] = []

    class Anchors(HTMLParser):
        attrs: dict[str, str | None] | None = None
        text = ""

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            if tag == "a":
                self.attrs, self.text = dict(attrs), ""

        def handle_data(self, data: str) -> None:
            if self.attrs is not None:
                self.text += data

        def handle_endtag(self, tag: str) -> None:
            if tag == "a" and self.attrs is not None:
                href = urlsplit(self.attrs.get("href") or "").path
                name = self.text.strip() or unquote(href.rsplit("/", 1)[-1])
                yanked = "data-yanked" in self.attrs
                files.append(Dist(name, self.attrs.get("data-requires-python"), yanked))
                self.attrs = None

    Anchors().feed(html)
    return files


def parse_page(content_type: str, body: bytes) -> list[Dist]:
    """The files of a project page, PEP 691 JSON or PEP 503 HTML."""
    if "json" in content_type:
        data = json.loads(body)
        return [
            Dist(f["filename"], f.get("requires-python"), bool(f.get("yanked")))
            for f in data.get("files", [])
        ]
    return _anchors(body.decode("utf-8", "replace"))


def _to_json(files: Sequence[Dist]) -> list[dict[str, Any]]:
    # PEP 691's own keys, so a record reads as what the index said.
    return [
        {"filename": d.filename, "requires-python": d.requires_python, "yanked": d.yanked}
        for d in files
    ]


@dataclass
class Index:
    """Project pages of package indexes, each cached under ``cache_dir`` by its URL."""

    cache_dir: Path
    offline: bool  # pull-policy never: the cache only, whatever its age
    client: Any = None  # an httpx.Client, made on the first fetch

    def _record(self, url: str) -> Path:
        # Keyed by the URL without its credentials: they change nothing the index lists.
        name = hashlib.sha256(redact(url).encode()).hexdigest()
        return self.cache_dir / "index-pages" / f"{name}.json"

    def page(self, url: str) -> list[Dist] | None:
        """The files a project page lists; None when the index does not have the project."""
        record = self._record(url)
        try:
            cached = json.loads(record.read_text())
            known = _from_record(cached)
            age = time.time() - record.stat().st_mtime
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            cached, known, age = None, None, 0.0  # none, or damaged: asked again
        if cached is not None and (self.offline or age < PAGE_LIFETIME):
            return known
        if self.offline:
            raise Unavailable(f"{redact(url)} is not cached and pull-policy is never")
        import httpx

        headers = {"Accept": ACCEPT}
        if cached is not None and cached.get("etag"):
            headers["If-None-Match"] = cached["etag"]
        try:
            response = self.client.get(url, headers=headers)
        except httpx.HTTPError as e:
            raise Unavailable(f"{redact(url)}: {type(e).__name__} {redact(str(e))}") from None
        if response.status_code == 304 and cached is not None:
            record.touch()
            return known
        if response.status_code in (404, 410):
            files = None
        elif response.status_code == 200:
            try:
                files = parse_page(response.headers.get("content-type", ""), response.content)
            except (ValueError, KeyError, TypeError) as e:
                raise Unavailable(f"{redact(url)}: not a simple API page ({e})") from None
        else:
            raise Unavailable(f"{redact(url)} answered HTTP {response.status_code}")
        page = {"files": None if files is None else _to_json(files)}
        write_atomic(record, json.dumps({**page, "etag": response.headers.get("etag")}))
        return files

    def project(self, name: str, indexes: Sequence[str]) -> list[Dist] | None:
        """The files of ``name`` on the first of ``indexes`` that has it, as uv's default
        index strategy picks; None when none has it."""
        for index in indexes:
            files = self.page(f"{index.rstrip('/')}/{canonicalize_name(name)}/")
            if files is not None:
                return files
        return None

    def projects(
        self, wanted: Mapping[str, Sequence[str]]
    ) -> tuple[dict[str, list[Dist]], list[str]]:
        """The files of each project of ``wanted`` (canonical name to the indexes to ask, in
        order), fetched in parallel; and why the projects that could not be had are not."""
        names = sorted(wanted)
        if not names:
            return {}, []
        import httpx

        if not self.offline and self.client is None:
            self.client = httpx.Client(timeout=20.0, follow_redirects=True)
        found: dict[str, list[Dist]] = {}
        problems: list[str] = []

        def one(name: str) -> tuple[str, list[Dist] | None, str | None]:
            try:
                return name, self.project(name, wanted[name]), None
            except Unavailable as e:
                return name, None, str(e)

        try:
            with ThreadPoolExecutor(min(FETCHERS, max(1, len(names)))) as pool:
                for name, files, problem in pool.map(one, names):
                    if files is not None:
                        found[name] = files
                    elif problem:
                        problems.append(problem)
        finally:
            if self.client is not None:
                self.client.close()
                self.client = None
        return found, problems


def _from_record(data: dict[str, Any]) -> list[Dist] | None:
    if data.get("files") is None:
        return None
    return [
        Dist(f["filename"], f.get("requires-python"), bool(f.get("yanked"))) for f in data["files"]
    ]


# -- the check a build runs -----------------------------------------------------------------


@dataclass(frozen=True)
class PlatformDependencies:
    """What one platform of the image installs: its Python, the target its markers were
    evaluated for, and the requirements a lock (or the project) gives for it."""

    platform: str  # linux/arm64
    runtime: Runtime
    target: Target
    locked: Locked


def check_wheels(
    platforms: Sequence[PlatformDependencies],
    lock: Path | None,
    indexes: Sequence[str],
    cache_dir: Path,
    offline: bool,
    log: Callable[[str], None],
) -> None:
    """Raise one ``BuildError`` naming every pinned dependency and platform without a wheel,
    with the nearest version that has one. ``lock``: the lock file the requirements come
    from (``uv.lock`` lists each version's files, so no index is asked unless a gap is
    found); ``indexes``: the indexes uv installs from, in the order it asks them; ``offline``:
    pull-policy never, when only cached index pages are used. What cannot be checked (an
    index unreachable, a page not cached offline) is logged, and left to the installer."""
    host = this_host()
    targets = [wheel_target(p.platform, p.runtime, host) for p in platforms]
    wanted = {p.platform: pinned_requirements(p.locked.text, p.target) for p in platforms}
    every = sorted({_key(*pin) for pins in wanted.values() for pin in pins})
    if not every:
        return
    in_lock = uv_lock_files(lock) if lock is not None and lock.name == "uv.lock" else {}
    locked = {_key(*key): entry for key, entry in in_lock.items()}
    index = Index(cache_dir, offline)
    releases, problems = index.projects({n: indexes for n, v in every if (n, v) not in locked})
    if problems:
        log(
            "warning: the wheels of some dependencies are not checked before installing: "
            + "; ".join(sorted(set(problems)))
        )
    files: dict[tuple[str, str], tuple[Dist, ...]] = {}
    for name, version in every:
        if (name, version) in locked:
            files[name, version] = tuple(Dist(f) for f in locked[name, version].files)
        elif name in releases:
            found = tuple(d for d in releases[name] if _same(version_of(d.filename), version))
            if found:  # else the index lacks the version: uv says so
                files[name, version] = found
    gaps = _gaps(targets, wanted, files, releases)
    # The lock named gaps: the index of each such project tells the nearest version.
    nearest_from: dict[str, Sequence[str]] = {}
    for gap in gaps:
        name, version = _key(gap.name, gap.version)
        if name not in releases:
            registry = locked[name, version].index
            nearest_from[name] = [registry] if registry else indexes
    if nearest_from:
        found_later, later = index.projects(nearest_from)
        if later:
            log("warning: other versions are not known: " + "; ".join(sorted(set(later))))
        releases.update(found_later)
        gaps = _gaps(targets, wanted, files, releases)
    if gaps:
        raise BuildError(gap_message(gaps, targets))


def _key(name: str, version: str) -> tuple[str, str]:
    """A pin as a key: canonical name, normalized version."""
    try:
        return canonicalize_name(name), str(Version(version))
    except InvalidVersion:
        return canonicalize_name(name), version


def _same(version: Version | None, pinned_version: str) -> bool:
    try:
        return version is not None and version == Version(pinned_version)
    except InvalidVersion:
        return False


def _gaps(
    targets: Sequence[WheelTarget],
    wanted: Mapping[str, Sequence[tuple[str, str]]],
    files: Mapping[tuple[str, str], tuple[Dist, ...]],
    releases: Mapping[str, Sequence[Dist]],
) -> list[Gap]:
    """``find_gaps`` per platform, on the pins whose files are known."""
    gaps = []
    for target in targets:
        pins = [
            Pin(name, version, files[key])
            for name, version in wanted[target.platform]
            if (key := _key(name, version)) in files
        ]
        gaps += find_gaps(pins, [target], releases)
    return gaps
