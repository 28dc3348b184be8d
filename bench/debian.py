"""Cold assembly of a ``debian-packages:`` run image, per architecture, from an empty cache.

    .venv/bin/python bench/debian.py [--runs 3] [--suite bookworm] [--arch amd64 --arch arm64]

Each run is a fresh interpreter (imports included) calling
``buildpacks.debian.assemble.assemble`` with an empty cache directory and the default pull
policy: the three ``InRelease`` files fetched and verified, the ``Packages`` indexes fetched,
checked and scanned, the packages resolved, their ``.deb`` files fetched and checked, and the
layers written. The architectures take turns within each run, so that the machine's load
weighs on them alike. Prints every time, the median and minimum per architecture, the
load average (1 min) around the runs, and the layer digests (the same for every run of an
architecture as long as the archive does not move).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# One cold assembly, in the child interpreter: prints the layer digests as JSON.
ASSEMBLE = """
import json, sys
from pathlib import Path
from buildpacks.debian import DEFAULT_MIRROR
from buildpacks.debian.assemble import assemble
from buildpacks.oci.blobs import BlobStore
from buildpacks.oci.model import Platform

spec, arch, cache = sys.argv[1:4]
image = assemble(
    spec, Platform("linux", arch), BlobStore(Path(cache) / "blobs"), DEFAULT_MIRROR,
    "if-not-present", lambda line: None,
)
print(json.dumps([layer.digest for layer in image.layers]))
"""


def cold(spec: str, arch: str) -> tuple[float, list[str]]:
    """Seconds of one cold assembly in a new interpreter, and the layers it gave."""
    with tempfile.TemporaryDirectory(prefix="bench-debian-") as cache:
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", ASSEMBLE, spec, arch, cache],
            capture_output=True,
            text=True,
            cwd=REPO,
        )
        seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"assembly for {arch} failed:\n{done.stderr}")
    return seconds, json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--suite", default="bookworm")
    parser.add_argument("--arch", action="append", dest="archs")
    args = parser.parse_args()
    archs = args.archs or ["amd64", "arm64"]
    spec = f"debian-packages:{args.suite}"
    times: dict[str, list[float]] = {arch: [] for arch in archs}
    layers: dict[str, set[tuple[str, ...]]] = {arch: set() for arch in archs}
    loads = [os.getloadavg()[0]]
    for run in range(args.runs):
        for arch in archs:
            seconds, digests = cold(spec, arch)
            times[arch].append(seconds)
            layers[arch].add(tuple(digests))
            loads.append(os.getloadavg()[0])
            print(f"run {run + 1} {arch}: {seconds:.2f} s", file=sys.stderr)
    print(f"| cold assembly, empty cache ({spec}) | runs | min | median |")
    print("|---|---|---|---|")
    for arch in archs:
        runs = " / ".join(f"{t:.2f}" for t in times[arch])
        print(
            f"| {arch} | {runs} s | {min(times[arch]):.2f} s | "
            f"**{statistics.median(times[arch]):.2f} s** |"
        )
    print(f"\nload average (1 min) around the runs: {min(loads):.1f} to {max(loads):.1f}")
    for arch in archs:
        for digests in sorted(layers[arch]):
            print(f"{arch} layers: {', '.join(d[7:19] for d in digests)}")


if __name__ == "__main__":
    main()
