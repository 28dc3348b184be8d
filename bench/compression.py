"""What ``layer-compression`` changes: the time to compress an image's layers and their size.

    .venv/bin/python bench/compression.py ARCHIVE [--repeat 5]

Takes the layers of ARCHIVE that are ours (those the run image does not have: the CNB
metadata names it) as tars, then compresses each the way a build does — gzip at level 1
for the dependencies layer and 6 for the others, or zstd at level 3 — and prints, per
compression, the median total time and the total size. Decompression is not timed: it is
the puller's cost, and both are fast.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from buildpacks.builtin.dependencies import GZIP_LEVEL  # noqa: E402
from buildpacks.oci.blobs import BlobStore  # noqa: E402
from buildpacks.oci.layer import compress, open_layer  # noqa: E402
from buildpacks.oci.model import Platform  # noqa: E402
from buildpacks.oci.source import open_source  # noqa: E402


def our_layers(archive: Path, store: BlobStore) -> list[tuple[str, bytes]]:
    """(cache key's layer name, uncompressed tar) of every layer above the run image."""
    with open_source(f"oci-archive:{archive}", Platform.parse("linux/amd64"), store) as source:
        metadata = json.loads(source.config["config"]["Labels"]["io.buildpacks.lifecycle.metadata"])
        base_top = metadata["runImage"]["topLayer"]
        start = source.diff_ids.index(base_top) + 1
        layers = []
        for i in range(start, len(source.diff_ids)):
            with open_layer(source.layer(i)) as stream:
                layers.append((source.layer_descriptors[i].digest, stream.read()))
    return layers


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("archive", type=Path)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
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
