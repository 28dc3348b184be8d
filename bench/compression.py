"""What ``layer-compression`` changes, and how far a cold build is from its floor.

    .venv/bin/python bench/compression.py ARCHIVE [--repeat 5]
    .venv/bin/python bench/compression.py --floor [--repeat 3]

With ARCHIVE: takes the layers of ARCHIVE that are ours (those the run image does not have:
the CNB metadata names it) as tars, then compresses each the way a build does — gzip at level
1 for the dependencies layer and 6 for the others, or zstd at level 3 — and prints, per
compression, the median total time and the total size. Decompression is not timed: it is
the puller's cost, and both are fast.

With ``--floor``: the heavy project of ``bench/run.py`` (the example + numpy and pandas, the
same wheelhouse served on loopback, the same compiled requirements.txt), on the debootstrap
Debian base (``scripts/make-base-image.sh``). Hatch's build environment is made once, outside
the measurements. Then, in turns, ``--repeat`` times each:

- **cold**: ``hatch build -t image`` with an empty ``BP_CACHE_DIR`` and uv cache, for gzip
  (the default) and for ``BP_LAYER_COMPRESSION=zstd``;
- **uv**: the unavoidable install: ``uv pip install`` of the same pins, with the same command
  the dependencies buildpack runs (``buildpacks.builtin.dependencies.install``), into an empty
  directory with an empty uv cache, from the same wheelhouse;
- **compress**: the unavoidable compression: the image's own layers (dependencies, app, SBOM,
  process types, config) taken from the cold build's archive as uncompressed tars in memory,
  compressed as one stream each on one thread — zlib at our levels, or zstd level 3 — with
  no tar writing, hashing or file I/O;

Each cold build and each uv install starts after ``os.sync()``: the dirty pages the step
before wrote (an 80 MB archive, uv's cache) are not written back during the next one.
Then prints the medians, the floor (uv + compress) and the ratio cold / floor, per
compression; then, per compression, the warm edit (one-line edit of the source, then
``hatch build -t image``; median of ``--repeat``) and the image size (compressed layers).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.phases import intervals, stamped  # noqa: E402
from bench.run import HEAVY, Wheelhouse, developer_env, edit, example_pins, make_project  # noqa: E402
from buildpacks.builtin import Runtime  # noqa: E402
from buildpacks.builtin.dependencies import GZIP_LEVEL, install  # noqa: E402
from buildpacks.locks import Target, read_lock  # noqa: E402
from buildpacks.oci.blobs import BlobStore  # noqa: E402
from buildpacks.oci.layer import ZSTD_LEVEL, compress, open_layer  # noqa: E402
from buildpacks.oci.model import Platform  # noqa: E402
from buildpacks.oci.source import open_source  # noqa: E402
from tests import testbed  # noqa: E402

COMPRESSIONS = ("gzip", "zstd")
# The cold build's intervals: (label, the first output line that ends it), as bench/phases.py.
COLD_MARKS = [
    ("Hatch starts; hatchling and our imports, configuration", "===> ANALYZING"),
    ("analyze: the run image opened", "Run image "),
    (
        "its Python found (cold: its layers read, once for the SBOM too); the wheel (hatchling)",
        "Building image",
    ),
    # The line "Installing dependencies" is printed once the wheel-gap check, which runs
    # while uv installs, has passed: uv has begun by then.
    (
        "detect, restore, the runtime buildpack; uv started, the wheel-gap check",
        "Installing dependencies",
    ),
    (
        "dependencies (the rest of uv's install, the venv arranged, its layer written); "
        "the application layer",
        "Application ",
    ),
    ("processes", "===> EXPORTING"),
    ("export: launch and SBOM layers, the archive finished", "Archive"),
    ("close: the scratch directory removed; Hatch reports and exits", None),
]
LIFECYCLE = "io.buildpacks.lifecycle.metadata"


def our_layers(archive: Path, store: BlobStore) -> list[tuple[str, bytes]]:
    """(cache key's layer name, uncompressed tar) of every layer above the run image."""
    with open_source(f"oci-archive:{archive}", Platform.parse("linux/amd64"), store) as source:
        metadata = json.loads(source.config["config"]["Labels"][LIFECYCLE])
        base_top = metadata["runImage"]["topLayer"]
        start = source.diff_ids.index(base_top) + 1
        layers = []
        for i in range(start, len(source.diff_ids)):
            with open_layer(source.layer(i)) as stream:
                layers.append((source.layer_descriptors[i].digest, stream.read()))
    return layers


def compress_floor(layers: list[tuple[str, bytes]], compression: str) -> float:
    """Seconds to compress ``layers`` in memory, one stream each, on one thread: gzip's
    deflate at the build's levels (the biggest layer, the dependencies', at GZIP_LEVEL), or
    zstd at ZSTD_LEVEL."""
    import zstandard

    biggest = max(len(tar) for _, tar in layers)
    started = time.perf_counter()
    for _, tar in layers:
        if compression == "zstd":
            zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(tar)
        else:
            level = GZIP_LEVEL if len(tar) == biggest else 6
            c = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS)
            c.compress(tar)
            c.flush()
            zlib.crc32(tar)
    return time.perf_counter() - started


def uv_floor(project: Path, runtime: Runtime, wheelhouse: str, work: Path) -> float:
    """Seconds for the dependencies buildpack's own install command, the project's pins,
    into an empty directory with an empty uv cache, from ``wheelhouse``."""
    target = Target(runtime.version, "x86_64")
    locked = read_lock(project / "requirements.txt", target)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    # install() runs uv in this process's environment: the cache is named there.
    os.environ["UV_CACHE_DIR"] = str(work / "uv-cache")
    try:
        started = time.perf_counter()
        install(locked, work / "target", runtime, ["--no-index", "--find-links", wheelhouse], work)
        return time.perf_counter() - started
    finally:
        del os.environ["UV_CACHE_DIR"]
        shutil.rmtree(work, ignore_errors=True)


def hatch_image(project: Path, env: dict[str, str]) -> list[tuple[float, str]]:
    """``hatch build -t image``: each line of its output with the time it arrived."""
    return stamped(
        [str(Path(sys.executable).parent / "hatch"), "build", "-t", "image"], project, env
    )


def floor(repeat: int) -> int:
    """The ``--floor`` report (see the module's docstring)."""
    work = Path(tempfile.mkdtemp(prefix="bp-floor-"))
    wheelhouse = Wheelhouse([*example_pins(), *HEAVY])
    try:
        project = make_project("heavy", work, wheelhouse)
        env = developer_env(
            testbed.clean_env(
                **testbed.plugin_env(testbed.build_wheelhouse(work / "plugin")),
                HATCH_DATA_DIR=str(work / "hatch"),
                BP_BASE_IMAGE=testbed.debootstrap_base(),
                UV_FIND_LINKS=wheelhouse.url,
                UV_NO_INDEX="1",
            )
        )

        def cold_env(compression: str, cache: Path) -> dict[str, str]:
            shutil.rmtree(cache, ignore_errors=True)
            shutil.rmtree(project / "dist", ignore_errors=True)
            return {
                **env,
                "BP_CACHE_DIR": str(cache),
                "UV_CACHE_DIR": str(cache / "uv"),
                "BP_LAYER_COMPRESSION": compression,
            }

        lines = hatch_image(project, cold_env("gzip", work / "warmup"))  # Hatch's environment
        output = "".join(line for _, line in lines)
        found = re.search(r"Python (\S+) at (\S+); wheels for (\S+)", output)
        if found is None:
            raise RuntimeError(f"no runtime line in the build's output:\n{output}")
        version, interpreter, platform = found.groups()
        runtime = Runtime(interpreter, version, ".".join(version.split(".")[:2]), platform)
        times: dict[str, list[float]] = {}
        phases: dict[str, dict[str, list[float]]] = {}
        layers: dict[str, list[tuple[str, bytes]]] = {}
        sizes: dict[str, int] = {}
        store = BlobStore(work / "bench-blobs")
        for _ in range(repeat):
            for compression in COMPRESSIONS:
                cold = cold_env(compression, work / f"cache-{compression}")
                os.sync()  # no writeback of the step before falls in this one
                lines = hatch_image(project, cold)
                times.setdefault(f"cold {compression}", []).append(lines[-1][0])
                for label, seconds in intervals(lines, COLD_MARKS).items():
                    phases.setdefault(compression, {}).setdefault(label, []).append(seconds)
                archive = next((project / "dist").glob("*.tar"))
                _, manifest, config = testbed.read_archive_manifest(archive)
                metadata = json.loads(config["config"]["Labels"][LIFECYCLE])
                base = config["rootfs"]["diff_ids"].index(metadata["runImage"]["topLayer"]) + 1
                sizes[compression] = sum(layer["size"] for layer in manifest["layers"])
                sizes[f"ours {compression}"] = sum(
                    layer["size"] for layer in manifest["layers"][base:]
                )
                if compression == "gzip":
                    layers["tars"] = our_layers(archive, store)
            os.sync()
            times.setdefault("uv", []).append(
                uv_floor(project, runtime, wheelhouse.url, work / "uv-floor")
            )
            for compression in COMPRESSIONS:
                times.setdefault(f"compress {compression}", []).append(
                    compress_floor(layers["tars"], compression)
                )
        warm: dict[str, list[float]] = {}
        for compression in COMPRESSIONS:
            cache = work / f"cache-{compression}"
            warm_env = {**env, "BP_CACHE_DIR": str(cache), "UV_CACHE_DIR": str(cache / "uv")}
            warm_env["BP_LAYER_COMPRESSION"] = compression
            shutil.rmtree(project / "dist", ignore_errors=True)
            hatch_image(project, warm_env)  # this compression's archive in dist/
            for n in range(repeat):
                edit(project, n)
                warm.setdefault(compression, []).append(hatch_image(project, warm_env)[-1][0])
    finally:
        wheelhouse.server.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    med = {name: statistics.median(values) for name, values in times.items()}
    raw = sum(len(tar) for _, tar in layers["tars"])
    print(
        f"heavy project: {len(layers['tars'])} layers of ours, {raw / 1e6:.1f} MB as tars; "
        f"medians of {repeat}\n"
    )
    print(
        "| compression | cold | uv install | compress | floor | cold / floor | warm edit "
        "| image size | our layers |"
    )
    print("|---" * 9 + "|")
    for compression in COMPRESSIONS:
        bottom = med["uv"] + med[f"compress {compression}"]
        print(
            f"| {compression} | {med[f'cold {compression}']:.2f} s | {med['uv']:.2f} s "
            f"| {med[f'compress {compression}']:.2f} s | {bottom:.2f} s "
            f"| {med[f'cold {compression}'] / bottom:.2f} "
            f"| {statistics.median(warm[compression]):.2f} s | {sizes[compression] / 1e6:.2f} MB "
            f"| {sizes[f'ours {compression}'] / 1e6:.2f} MB |"
        )
    print("\nWhere the cold build's time goes (medians; the build's output lines stamped):\n")
    print("| interval | " + " | ".join(COMPRESSIONS) + " |")
    print("|---" * (1 + len(COMPRESSIONS)) + "|")
    for label, _ in COLD_MARKS:
        cells = [f"{statistics.median(phases[c][label]):.2f} s" for c in COMPRESSIONS]
        print(f"| {label} | " + " | ".join(cells) + " |")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("archive", type=Path, nargs="?")
    parser.add_argument("--floor", action="store_true", help="cold build against its floor")
    parser.add_argument("--repeat", type=int, default=None)
    args = parser.parse_args()
    if args.floor:
        return floor(args.repeat or 3)
    if args.archive is None:
        parser.error("an ARCHIVE, or --floor")
    args.repeat = args.repeat or 5
    with tempfile.TemporaryDirectory(prefix="bp-compression-") as tmp:
        store = BlobStore(Path(tmp) / "blobs")
        layers = our_layers(args.archive, store)
        biggest = max(len(tar) for _, tar in layers)
        print(f"{len(layers)} layers, {sum(len(t) for _, t in layers) / 1e6:.1f} MB as tars")
        for compression in ("gzip", "zstd"):
            times, size = [], 0
            for _ in range(args.repeat):
                started = time.perf_counter()
                size = 0
                for _, tar in layers:
                    level = GZIP_LEVEL if len(tar) == biggest else 6
                    layer = compress(store, io.BytesIO(tar), level, compression)
                    size += layer.descriptor.size
                times.append(time.perf_counter() - started)
            print(
                f"{compression}: {statistics.median(times):.3f} s (median of {args.repeat}), "
                f"{size / 1e6:.2f} MB"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
