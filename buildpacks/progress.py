"""Progress of transfers: per-blob bars with bytes and rate on a terminal (rich), one plain
line per blob otherwise (CI logs)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

Advance = Callable[[int], None]


def human(size: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1000
    return f"{size:.1f} GB"


class Transfers:
    """Reports blob transfers through ``log`` or, on a terminal, as rich progress bars."""

    def __init__(self, log: Callable[[str], None], tty: bool | None = None) -> None:
        self.log = log
        self.tty = sys.stderr.isatty() if tty is None else tty

    @contextmanager
    def blob(self, verb: str, name: str, total: int) -> Iterator[Advance]:
        start = time.monotonic()
        if self.tty:
            # rich is imported only here: it costs a tenth of a second at every start.
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TransferSpeedColumn,
            )

            columns = (
                TextColumn(f"{verb} {name}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
            )
            with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
                task = bar.add_task(name, total=total)
                yield lambda n: bar.advance(task, n)
        else:
            yield lambda n: None
        seconds = max(time.monotonic() - start, 1e-6)
        self.log(f"{verb} {name}: {human(total)} in {seconds:.2f} s ({human(total / seconds)}/s)")
