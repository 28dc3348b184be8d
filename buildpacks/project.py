"""What the project says about itself: metadata from the built wheel (so dynamic versions
and any build backend are covered), and the files beside ``pyproject.toml`` that pick the
Python version and configure the build."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from buildpacks.errors import BuildError
from buildpacks.toml import read_toml


@dataclass(frozen=True, eq=False, repr=False)
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
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise BuildError(f"{path}: not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    processes = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, sep, command = line.partition(":")
        name = name.strip()
        if not sep or not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or name in (".", ".."):
            raise BuildError(
                f"{path}: line {number}: expected `type: command` with a type of letters, "
                f"digits, '.', '_' or '-', got {line.strip()!r}"
            )
        if not command.strip():
            raise BuildError(f"{path}: line {number}: process {name!r} has an empty command")
        processes[name] = command.strip()
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


def _console_scripts(entry_points: str | None) -> dict[str, str]:
    if entry_points is None:
        return {}
    import configparser  # the wheel's readers only: a no-op build reads no wheel

    parser = configparser.ConfigParser(delimiters=("=",), interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(entry_points)
    return dict(parser.items("console_scripts")) if parser.has_section("console_scripts") else {}


def read_wheel(wheel: Path) -> tuple[Any, dict[str, str]]:
    """The METADATA headers and the console scripts of a wheel."""
    import zipfile  # a no-op build reads no wheel
    from email.parser import HeaderParser

    try:
        with zipfile.ZipFile(wheel) as zf:
            names = zf.namelist()
            dist_info = next(
                n.split("/")[0] for n in names if n.split("/")[0].endswith(".dist-info")
            )
            metadata = HeaderParser().parsestr(zf.read(f"{dist_info}/METADATA").decode())
            entry_points = f"{dist_info}/entry_points.txt"
            scripts = _console_scripts(
                zf.read(entry_points).decode() if entry_points in names else None
            )
    except (OSError, zipfile.BadZipFile, StopIteration, KeyError) as e:
        raise BuildError(f"{wheel}: not a readable wheel ({e})") from None
    return metadata, scripts


def read_dist_info(directory: Path) -> tuple[Any, dict[str, str]]:
    """The METADATA headers and console scripts of a ``.dist-info`` directory (what a PEP
    517 backend's ``prepare_metadata_for_build_wheel`` writes, before any wheel)."""
    from email.parser import HeaderParser  # a no-op build reads no metadata

    try:
        metadata = HeaderParser().parsestr((directory / "METADATA").read_text(encoding="utf-8"))
        entry_points = directory / "entry_points.txt"
        scripts = _console_scripts(
            entry_points.read_text(encoding="utf-8") if entry_points.is_file() else None
        )
    except OSError as e:
        raise BuildError(f"{directory}: not a readable .dist-info ({e})") from None
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
    """The project at ``root`` as described by the wheel built from it (or by the
    ``.dist-info`` directory its backend prepared)."""
    meta, scripts = read_dist_info(wheel) if wheel.is_dir() else read_wheel(wheel)
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


def _poetry_clause(text: str) -> str:
    parts = []
    for item in (p.strip() for p in text.replace(" ", "").split(",") if p.strip()):
        if item == "*":
            continue
        if item[0] in "^~" and item[1:2] != "=":
            numbers = [int(n) for n in item[1:].split(".") if n.isdigit()]
            if item[0] == "^":
                first = next((i for i, n in enumerate(numbers) if n != 0), len(numbers) - 1)
                upper = [*numbers[:first], numbers[first] + 1]
            else:
                upper = [numbers[0], numbers[1] + 1] if len(numbers) > 1 else [numbers[0] + 1]
            parts += [f">={'.'.join(map(str, numbers))}", f"<{'.'.join(map(str, upper))}"]
        elif item[0].isdigit():
            parts.append(f"=={item}")
        else:
            parts.append(item)
    return ",".join(parts)


def poetry_constraint(text: str) -> str:
    """A Poetry version constraint (``^3.11``, ``~3.10``, ``3.11.*``) as a PEP 440 specifier;
    alternatives (``^3.11 || ^3.12``) stay joined by ``||``, which ``config`` reads as "or"."""
    return " || ".join(_poetry_clause(alt) for alt in re.split(r"\|\|?", text) if alt.strip())


def with_extra(requirement: str, extra: str) -> str:
    """``requirement`` as a Requires-Dist entry of ``extra`` (its own marker kept)."""
    name, sep, marker = requirement.partition(";")
    condition = f"extra == {extra!r}"
    return f"{name.strip()}; ({marker.strip()}) and {condition}" if sep else f"{name}; {condition}"


def _license(value: Any) -> str | None:
    if isinstance(value, dict):
        return value.get("text") or value.get("file")
    return value


def static_project(root: Path) -> Project | None:
    """The project from ``pyproject.toml`` alone (PEP 621, else Poetry's table) when name,
    version and dependencies are static there; None when a build backend must be asked."""
    pyproject = read_pyproject(root)
    table = pyproject.get("project")
    if isinstance(table, dict) and "name" in table:
        dynamic = set(table.get("dynamic", []))
        if "version" not in table and "version" not in dynamic:
            raise BuildError(
                'pyproject.toml: [project] has no version; set version = "X.Y" or list '
                '"version" in dynamic with a version source for the build backend'
            )
        if {"version", "dependencies", "scripts", "optional-dependencies"} & dynamic:
            return None
        requires = list(table.get("dependencies", []))
        for extra, items in (table.get("optional-dependencies") or {}).items():
            requires += [with_extra(item, extra) for item in items]
        return load_project(
            root,
            name=table["name"],
            version=str(table["version"]),
            requires_python=table.get("requires-python"),
            summary=table.get("description"),
            license=_license(table.get("license")),
            urls=dict(table.get("urls") or {}),
            requires_dist=tuple(requires),
            scripts=dict(table.get("scripts") or {}),
        )
    poetry = pyproject.get("tool", {}).get("poetry")
    if isinstance(poetry, dict) and "name" in poetry and "version" in poetry:
        python = (poetry.get("dependencies") or {}).get("python")
        scripts = {
            name: value if isinstance(value, str) else value.get("reference", "")
            for name, value in (poetry.get("scripts") or {}).items()
        }
        return load_project(
            root,
            name=poetry["name"],
            version=str(poetry["version"]),
            requires_python=poetry_constraint(python) if isinstance(python, str) else None,
            summary=poetry.get("description"),
            license=poetry.get("license"),
            urls={
                k: v
                for k, v in (
                    ("Homepage", poetry.get("homepage")),
                    ("Repository", poetry.get("repository")),
                )
                if v
            },
            scripts=scripts,
        )
    return None


def provisional_project(root: Path) -> Project:
    """What is known of a project whose backend must give its metadata (dynamic fields,
    ``setup.cfg``, ``setup.py``) before it is built: its name, and ``requires-python`` where
    it is written statically; enough to check configuration and base before the wheel."""
    table = read_pyproject(root).get("project")
    table = table if isinstance(table, dict) else {}
    requires = (
        None if "requires-python" in table.get("dynamic", []) else table.get("requires-python")
    )
    setup_cfg = root / "setup.cfg"
    if requires is None and setup_cfg.is_file():
        import configparser  # for setup.cfg only

        parser = configparser.ConfigParser(interpolation=None)
        try:
            parser.read_string(setup_cfg.read_text(encoding="utf-8"))
            requires = parser.get("options", "python_requires", fallback=None)
        except configparser.Error:
            pass  # setuptools reports it when it builds the wheel
    return load_project(
        root, name=table.get("name") or root.resolve().name, version="0", requires_python=requires
    )


def source_project(root: Path) -> Project:
    """An application with no ``pyproject.toml``: named after its directory; its source is
    copied to /workspace, its dependencies come from its lock or requirements file."""
    return load_project(root, name=root.resolve().name, version="latest")
