"""What the project says about itself: metadata from the built wheel (so dynamic versions
and any build backend are covered), and the files beside ``pyproject.toml`` that pick the
Python version and configure the build."""

from __future__ import annotations

import configparser
import re
import zipfile
from dataclasses import dataclass, field
from email.parser import HeaderParser
from pathlib import Path
from typing import Any

from buildpacks.errors import BuildError
from buildpacks.toml import read_toml


@dataclass(frozen=True)
class Project:
    """A Python project about to become an image."""

    root: Path
    name: str
    version: str
    requires_python: str | None = None
    summary: str | None = None
    license: str | None = None
    urls: dict[str, str] = field(default_factory=dict)
    requires_dist: tuple[str, ...] = ()
    scripts: dict[str, str] = field(default_factory=dict)
    tool_config: dict[str, Any] = field(default_factory=dict)
    python_version_file: str | None = None
    procfile: dict[str, str] = field(default_factory=dict)


def read_pyproject(root: Path) -> dict[str, Any]:
    """The parsed ``pyproject.toml`` of ``root`` ({} when there is none)."""
    path = root / "pyproject.toml"
    return read_toml(path) if path.exists() else {}


def read_python_version_file(root: Path) -> str | None:
    """The first version named in ``.python-version`` (pyenv and uv format), if any."""
    path = root / ".python-version"
    if not path.is_file():
        return None
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            return line
    return None


def read_procfile(root: Path) -> dict[str, str]:
    """Process types of a ``Procfile`` (``type: command`` lines), if there is one."""
    path = root / "Procfile"
    if not path.is_file():
        return {}
    processes = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, sep, command = line.partition(":")
        if not sep or not re.fullmatch(r"[A-Za-z0-9_.-]+", name.strip()) or not command.strip():
            raise BuildError(
                f"{path}: line {number}: expected `type: command`, got {line.strip()!r}"
            )
        processes[name.strip()] = command.strip()
    return processes


def tool_config(pyproject: dict[str, Any]) -> dict[str, Any]:
    table = pyproject.get("tool", {}).get("buildpacks", {})
    if not isinstance(table, dict):
        raise BuildError("pyproject.toml: [tool.buildpacks] must be a table")
    return table


def _urls(meta: Any) -> dict[str, str]:
    urls = {}
    for value in meta.get_all("Project-URL") or []:
        label, _, url = value.partition(",")
        urls[label.strip()] = url.strip()
    if meta.get("Home-page"):
        urls.setdefault("Homepage", meta["Home-page"])
    return urls


def read_wheel(wheel: Path) -> tuple[Any, dict[str, str]]:
    """The METADATA headers and the console scripts of a wheel."""
    try:
        with zipfile.ZipFile(wheel) as zf:
            names = zf.namelist()
            dist_info = next(
                n.split("/")[0] for n in names if n.split("/")[0].endswith(".dist-info")
            )
            metadata = HeaderParser().parsestr(zf.read(f"{dist_info}/METADATA").decode())
            scripts: dict[str, str] = {}
            if f"{dist_info}/entry_points.txt" in names:
                parser = configparser.ConfigParser(delimiters=("=",), interpolation=None)
                parser.optionxform = str  # type: ignore[assignment,method-assign]
                parser.read_string(zf.read(f"{dist_info}/entry_points.txt").decode())
                if parser.has_section("console_scripts"):
                    scripts = dict(parser.items("console_scripts"))
    except (OSError, zipfile.BadZipFile, StopIteration, KeyError) as e:
        raise BuildError(f"{wheel}: not a readable wheel ({e})") from None
    return metadata, scripts


def load_project(root: Path, **metadata: Any) -> Project:
    """The project at ``root`` with core ``metadata`` (fields of ``Project``) given by a
    build tool, and the build configuration and ``.python-version`` read from ``root``."""
    return Project(
        root=root,
        tool_config=tool_config(read_pyproject(root)),
        python_version_file=read_python_version_file(root),
        procfile=read_procfile(root),
        **metadata,
    )


def project_from_wheel(root: Path, wheel: Path) -> Project:
    """The project at ``root`` as described by the wheel built from it."""
    meta, scripts = read_wheel(wheel)
    return load_project(
        root,
        name=meta["Name"],
        version=meta["Version"],
        requires_python=meta.get("Requires-Python"),
        summary=meta.get("Summary"),
        license=meta.get("License-Expression") or meta.get("License"),
        urls=_urls(meta),
        requires_dist=tuple(meta.get_all("Requires-Dist") or ()),
        scripts=scripts,
    )
