"""Where the time of a warm ``hatch build -t image`` goes, phase by phase.

    .venv/bin/python bench/phases.py [--repeat 9]

Builds the example project (local Debian base, fresh Hatch environment made once), then
times, over ``--repeat`` runs each: a one-line edit, a no-op, and a no-op with the up-to-date
record removed (the whole lifecycle). Each line the build prints is stamped as it arrives
(hatchling runs unbuffered), so the intervals between Hatch's own lines, ours and the
lifecycle's ``===> PHASE`` lines are the phases. Prints the median of each interval.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.run import developer_env  # noqa: E402
from tests import testbed  # noqa: E402

# (label, the first line that ends the interval); intervals missing from a run are skipped.
MARKS = [
    ("Hatch: start, read the project, check the build environment", "Syncing dependencies"),
    (
        "Hatch: check the target's dependencies, start hatchling; hatchling and our imports, "
        "metadata, up-to-date check, config",
        "===> ANALYZING",
    ),
    ("analyze (run image from the local store, its Python)", "Run image "),
    ("wheel (hatchling)", "Building image"),
    ("detect", "===> RESTORING"),
    ("restore (previous archive's labels)", "===> BUILDING"),
    ("build (buildpacks: runtime, dependencies, app, processes)", "===> EXPORTING"),
    ("export (config, labels, SBOM layer, finish the archive)", "Archive"),
    ("Hatch: check the target's dependencies, start hatchling; up-to-date check", "up to date"),
    ("close (release the old archive, temp files), exit; Hatch reports and exits", None),
]


def stamped(command: list[str], cwd: Path, env: dict[str, str]) -> list[tuple[float, str]]:
    start = time.perf_counter()
    lines = [(0.0, "")]
    with subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append((time.perf_counter() - start, line))
    if proc.returncode != 0:
        raise RuntimeError("".join(line for _, line in lines))
    lines.append((time.perf_counter() - start, "<exit>"))
    return lines


def intervals(
    lines: list[tuple[float, str]], marks: list[tuple[str, str | None]] = MARKS
) -> dict[str, float]:
    """The time between marks: label -> seconds; marks missing from the lines are skipped."""
    found: dict[str, float] = {}
    last = 0.0
    for label, mark in marks:
        if mark is None:
            at = lines[-1][0]
        else:
            hits = [t for t, line in lines if mark in line]
            if not hits:
                continue
            at = hits[0]
        found[label] = at - last
        last = at
    found["total"] = lines[-1][0]
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=9)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bp-phases-"))
    try:
        project = testbed.copy_example(work / "example")
        env = developer_env(
            testbed.clean_env(
                **testbed.plugin_env(testbed.build_wheelhouse(work / "plugin")),
                HATCH_DATA_DIR=str(work / "hatch"),
                BP_BASE_IMAGE=testbed.debootstrap_base(),
                BP_CACHE_DIR=str(work / "cache"),
            )
        )
        hatch = [str(Path(sys.executable).parent / "hatch"), "build", "-t", "image"]
        for _ in range(2):  # the Hatch environment, the caches, the bytecode
            stamped(hatch, project, env)
        server = project / "src" / "example_service" / "server.py"
        runs: dict[str, list[dict[str, float]]] = {"warm edit": [], "no-op": [], "whole": []}
        for n in range(args.repeat):
            server.write_text(server.read_text() + f"# phases {n}\n")
            runs["warm edit"].append(intervals(stamped(hatch, project, env)))
            runs["no-op"].append(intervals(stamped(hatch, project, env)))
            shutil.rmtree(work / "cache" / "uptodate")
            runs["whole"].append(intervals(stamped(hatch, project, env)))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    labels = [label for label, _ in MARKS] + ["total"]
    print("| interval | warm edit | no-op | no-op, whole lifecycle |")
    print("|---|---|---|---|")
    for label in labels:
        cells = []
        for kind in ("warm edit", "no-op", "whole"):
            values = [run[label] for run in runs[kind] if label in run]
            cells.append(f"{statistics.median(values) * 1000:.0f} ms" if values else "-")
        print(f"| {label} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
