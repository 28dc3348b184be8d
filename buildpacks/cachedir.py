"""Where the build cache lives; light, so the up-to-date check can find it first thing."""

from __future__ import annotations

from pathlib import Path


def cache_dir(configured: str | None) -> Path:
    """``configured`` (the ``cache-dir`` setting) if given, else the user's cache directory."""
    import platformdirs

    return Path(configured or platformdirs.user_cache_dir("python-buildpacks")).expanduser()
