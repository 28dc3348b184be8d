"""Building for several platforms: each phase runs once per platform with the configuration
narrowed to it, its log lines and failures named by it (``[linux/arm64] ...``). With one
platform nothing is renamed, so a single-platform build reads as it always did."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from buildpacks.config import BuildConfig
from buildpacks.errors import BuildError


class AcrossPlatforms(BuildError):
    """A failure about several platforms at once, which names them itself."""


@dataclass(eq=False, repr=False)
class Target:
    """One platform of a build: the configuration narrowed to it and its log."""

    config: BuildConfig
    log: Callable[[str], None]
    named: bool  # whether log lines and errors name the platform (the build has several)

    @contextmanager
    def naming(self) -> Iterator[None]:
        """A ``BuildError`` raised inside names this platform when the build has several."""
        try:
            yield
        except BuildError as e:
            if not self.named or isinstance(e, AcrossPlatforms):
                raise
            raise BuildError(f"[{self.config.platform}] {e}") from None


def targets(config: BuildConfig, log: Callable[[str], None]) -> list[Target]:
    """Each platform of ``config``, in the order they were given."""
    if len(config.platforms) <= 1:
        return [Target(config, log, False)]
    return [
        Target(
            dataclasses.replace(config, platform=platform, platforms=(platform,)),
            lambda line, p=platform: log(f"[{p}] {line}"),
            True,
        )
        for platform in config.platforms
    ]
