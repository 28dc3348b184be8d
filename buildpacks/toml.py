"""Reading TOML files with errors that name the file and line."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from buildpacks.errors import BuildError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file; a missing, unreadable or malformed file is a ``BuildError``."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BuildError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise BuildError(f"{path}: cannot be read ({e})") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise BuildError(f"{path}: invalid TOML: {e}") from None
