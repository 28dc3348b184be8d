"""Cold and warm build times of the real projects of the test corpus (``tests/corpus.py``),
each by its own route (``hatch build -t image``, ``python -m build -C image=true`` or
``buildpacks build``), on the local Debian base.

    .venv/bin/python bench/corpus.py [--repeat 3]

cold: our cache empty (``BP_CACHE_DIR``), nothing in ``dist/``; uv's own download cache is the
machine's, as a developer's would be. warm: the same project again after a one-line edit of
one of its source files. Each figure is the median of ``--repeat`` runs, each on a fresh copy.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.run import developer_env  # noqa: E402
from tests import testbed  # noqa: E402
from tests.corpus import CASES  # noqa: E402


def timed_build(case, root: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    result = case.build(root, env)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{case.name}: build failed\n{result.stdout}{result.stderr}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("names", nargs="*", help="projects (default: all)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bp-corpus-bench-"))
    try:
        base = testbed.debootstrap_base()
        wheelhouse = testbed.build_wheelhouse(work / "wheelhouse")
        print("| project | backend | route | cold | warm |\n|---|---|---|---|---|")
        for name in args.names or CASES:
            case = CASES[name]
            cold, warm = [], []
            for n in range(args.repeat):
                run = work / f"{name}-{n}"
                env = developer_env(
                    testbed.clean_env(
                        **testbed.plugin_env(wheelhouse),
                        HATCH_DATA_DIR=str(work / "hatch-data"),
                        BP_BASE_IMAGE=base,
                        BP_CACHE_DIR=str(run / "cache"),
                    )
                )
                root = case.make(run / "project")
                cold.append(timed_build(case, root, env))
                with (root / case.edit).open("a") as f:
                    f.write(f"\n# edit {n}\n")
                warm.append(timed_build(case, root, env))
            print(
                f"| {name} | {case.backend} | {case.route} | "
                f"{statistics.median(cold):.2f} s | {statistics.median(warm):.2f} s |",
                flush=True,
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
