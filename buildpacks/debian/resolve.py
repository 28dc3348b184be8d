"""The dependency closure of some Debian packages, as apt would pick it: the candidate of a
name is its highest version across the suite's archives; ``Pre-Depends`` and ``Depends``
are followed, alternatives tried in order, virtual packages met through ``Provides``,
version constraints checked. Pure: indexes in, packages out."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from buildpacks.debian.archive import Deb
from buildpacks.errors import BuildError

# Packages that exist only to run maintainer scripts (configuration prompts, the package
# manager, info indexes; awk for base-files' scripts, openssl for ca-certificates' bundle,
# which assemble writes itself): nothing runs them in an assembled image, so a dependency on
# one is met without installing it, as distroless does. Asked for by name, they are installed.
SCRIPT_ONLY = frozenset(
    {
        "awk",
        "openssl",
        "debconf",
        "debconf-2.0",
        "cdebconf",
        "dpkg",
        "install-info",
        "init-system-helpers",
        "perl-base",
        "ucf",
        "sensible-utils",
    }
)

_OPS = {
    ">=": lambda c: c >= 0,
    "<=": lambda c: c <= 0,
    ">>": lambda c: c > 0,
    "<<": lambda c: c < 0,
    "=": lambda c: c == 0,
    ">": lambda c: c >= 0,  # obsolete spellings dpkg still reads as >= and <=
    "<": lambda c: c <= 0,
}


def satisfies(version: str | None, constraint: tuple[str, str] | None) -> bool:
    """Whether ``version`` meets a ``(op, version)`` constraint (None: any version)."""
    from debian.debian_support import version_compare

    if constraint is None:
        return True
    if version is None:
        return False
    op, wanted = constraint
    return _OPS[op](version_compare(version, wanted))


@dataclass
class Universe:
    """The candidates of a suite for one architecture, and who provides each virtual name."""

    candidates: dict[str, Deb] = field(default_factory=dict)
    providers: dict[str, list[tuple[Deb, str | None]]] = field(default_factory=dict)

    @classmethod
    def of(cls, debs: Iterable[Deb]) -> Universe:
        from debian.debian_support import version_compare

        universe = cls()
        for deb in debs:
            current = universe.candidates.get(deb.name)
            if current is None or version_compare(deb.version, current.version) > 0:
                universe.candidates[deb.name] = deb
        for deb in universe.candidates.values():
            for name, version in _provided(deb.provides):
                universe.providers.setdefault(name, []).append((deb, version))
        for entries in universe.providers.values():
            entries.sort(key=lambda e: e[0].name)
        return universe


# A Provides item in its usual spelling: a name, perhaps "(= version)".
_PROVIDED = re.compile(r"\s*([a-z0-9][a-z0-9+.-]*)(?:\s*\(\s*=\s*([^\s()]+)\s*\))?\s*")


def _provided(text: str) -> list[tuple[str, str | None]]:
    """The ``(name, version or None)`` a Provides field offers. Thousands of candidates
    provide something: the usual spelling is read with one regular expression, anything
    else by deb822's relation parser."""
    items = [_PROVIDED.fullmatch(item) for item in text.split(",")] if text.strip() else []
    if all(items):
        return [(m[1], m[2]) for m in items if m]
    return [
        (item["name"], item["version"][1] if item.get("version") else None)
        for group in _relations(text)
        for item in group
    ]


def _relations(text: str) -> list[list[dict]]:
    from debian.deb822 import PkgRelation

    return PkgRelation.parse_relations(text) if text.strip() else []


def _describe(item: dict) -> str:
    version = item.get("version")
    return f"{item['name']} ({version[0]} {version[1]})" if version else item["name"]


def resolve(
    universe: Universe,
    roots: Iterable[str],
    installed: Mapping[str, str] | None = None,
) -> list[Deb]:
    """The packages to unpack so that ``roots`` and all they depend on are present, sorted by
    name; ``installed`` (name to version, e.g. a base image's dpkg database) counts as
    present when its version fits. Unknown names and unsatisfiable dependencies are
    ``BuildError``s naming the package or the chain that leads to it."""
    installed = dict(installed or {})
    chosen: dict[str, Deb] = {}
    why: dict[str, str] = {}  # package -> the package whose dependency pulled it in
    queue: list[str] = []

    def chain(name: str) -> str:
        links = [name]
        while links[-1] in why:
            links.append(why[links[-1]])
        return " → ".join(reversed(links))

    for root in roots:
        if root in universe.candidates:
            if root not in chosen and root not in installed:
                chosen[root] = universe.candidates[root]
                queue.append(root)
        elif root in universe.providers:
            deb = universe.providers[root][0][0]
            if deb.name not in chosen and deb.name not in installed:
                chosen[deb.name] = deb
                queue.append(deb.name)
        else:
            near = difflib.get_close_matches(root, list(universe.candidates), n=3, cutoff=0.75)
            hint = f"; did you mean {', '.join(near)}?" if near else ""
            raise BuildError(f"system-packages: Debian has no package {root!r}{hint}")

    def present(item: dict) -> bool:
        name, constraint = item["name"], item.get("version")
        if name in SCRIPT_ONLY:
            return True
        if name in chosen and satisfies(chosen[name].version, constraint):
            return True
        if name in installed and satisfies(installed[name], constraint):
            return True
        return any(
            p.name in chosen or p.name in installed
            for p, version in universe.providers.get(name, [])
            if constraint is None or satisfies(version, constraint)
        )

    def candidate(item: dict) -> Deb | None:
        name, constraint = item["name"], item.get("version")
        deb = universe.candidates.get(name)
        if deb is not None and satisfies(deb.version, constraint):
            return deb
        for provider, version in universe.providers.get(name, []):
            if constraint is None or satisfies(version, constraint):
                return provider
        return None

    while queue:
        name = queue.pop(0)
        deb = chosen[name]
        text = ", ".join(t for t in (deb.fields.get("Pre-Depends"), deb.fields.get("Depends")) if t)
        for group in _relations(text):
            if any(present(item) for item in group):
                continue
            pick = next((d for d in map(candidate, group) if d is not None), None)
            if pick is None:
                wanted = " | ".join(_describe(item) for item in group)
                have = [
                    f"{i['name']} {universe.candidates[i['name']].version}"
                    for i in group
                    if i["name"] in universe.candidates
                ]
                found = f" (the suite has {', '.join(have)})" if have else ""
                raise BuildError(f"unsatisfiable dependency: {chain(name)} → {wanted}{found}")
            if pick.name in chosen:
                # A candidate is already chosen but too old for this constraint: no other
                # version is offered, so the dependency cannot be met.
                raise BuildError(
                    f"unsatisfiable dependency: {chain(name)} → "
                    f"{' | '.join(_describe(item) for item in group)}"
                )
            chosen[pick.name] = pick
            why[pick.name] = name
            queue.append(pick.name)
    return sorted(chosen.values(), key=lambda d: d.name)
