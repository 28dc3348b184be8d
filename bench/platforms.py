"""Two platforms beside one, from the same run: the example built by ``hatch build -t image``
for linux/amd64 alone and for linux/amd64 + linux/arm64 (one index), on a two-platform Debian
base index in a local registry (made by ``podman manifest`` from the bases assembled for
each architecture).

    .venv/bin/python bench/platforms.py [--repeat 5]

Rows: cold (empty ``BP_CACHE_DIR``: base blobs pulled from the loopback registry, every layer
built; uv's download cache primed by a warm-up build of both platforms, so PyPI's network is
not measured; Hatch's build environment made once beforehand), warm edit to the archive (a
one-line edit of the example's server, then a build), and the bytes the registry stores
after a one-line edit is published (each edit its own line, so no blob is already there).
One and two platforms take turns within each repetition; each row is the median. Goals
(issue 14): cold two ≤ 1.6 x one, warm edit two ≤ 1.2 x one, bytes pushed two ≈ one (the app
layer, the only one that changes, is one blob shared by both platforms). The bytes are every
new blob the registry stores, then the layers among them: each platform's image also has a
config and a manifest of its own, which change with any layer (the config lists its diff IDs).
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

from tests import testbed  # noqa: E402  (the same real parts the tests use)

CASES = {"one": "linux/amd64", "two": "linux/amd64,linux/arm64"}


def build(project: Path, env: dict[str, str]) -> float:
    """``hatch build -t image`` of ``project``; its wall time in seconds."""
    start = time.perf_counter()
    result = testbed.hatch_build(project, env)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"build of {project} failed:\n{result.stdout}{result.stderr}")
    return elapsed


def edit(project: Path, text: str) -> None:
    """A one-line edit of the example's source."""
    server = project / "src" / "example_service" / "server.py"
    server.write_text(server.read_text() + f"# edit {text}\n")


def stored_blobs(registry_dir: Path) -> dict[Path, int]:
    """The registry's stored blobs and their sizes."""
    return {p: p.stat().st_size for p in (registry_dir / "data").rglob("blobs/sha256/*/*/data")}


def is_layer(blob: Path) -> bool:
    """Whether a stored blob is a layer (compressed tar), not a config, manifest or index."""
    return blob.read_bytes()[:1] != b"{"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bp-bench-platforms-"))
    registry = testbed.Registry(work / "registry")
    podman = testbed.Podman(Path(tempfile.mkdtemp(prefix="bp-pm-", dir="/tmp")))
    try:
        base = testbed.push_base_index(work / "base-cache", registry, podman, work / "base")
        # As a developer's machine runs it (these machines export PYTHONDONTWRITEBYTECODE).
        env = {k: v for k, v in testbed.clean_env().items() if k != "PYTHONDONTWRITEBYTECODE"}
        env.update(
            testbed.plugin_env(testbed.build_wheelhouse(work / "wheelhouse")),
            HATCH_DATA_DIR=str(work / "hatch-data"),
            BP_BASE_IMAGE=base,
            UV_CACHE_DIR=str(work / "uv-cache"),
        )
        warmup = testbed.copy_example(work / "warmup")
        build(warmup, {**env, "BP_PLATFORMS": CASES["two"], "BP_CACHE_DIR": str(work / "w")})
        results: dict[str, dict[str, list[float]]] = {c: {} for c in CASES}
        for turn in range(args.repeat):
            for case, platforms in CASES.items():
                project = work / f"{case}-{turn}"
                shutil.rmtree(project, ignore_errors=True)
                testbed.copy_example(project)
                case_env = {
                    **env,
                    "BP_PLATFORMS": platforms,
                    "BP_CACHE_DIR": str(work / f"cache-{case}-{turn}"),
                    "BP_IMAGE": f"{registry.host}/bench/{case}:{turn}",
                }
                row = results[case]
                row.setdefault("cold", []).append(build(project, case_env))
                edit(project, f"{case} {turn} 1")
                row.setdefault("warm edit to an archive", []).append(build(project, case_env))
                published = {**case_env, "BP_PUBLISH": "true"}
                build(project, published)
                before = stored_blobs(work / "registry")
                edit(project, f"{case} {turn} 2")
                build(project, published)
                new = {p: n for p, n in stored_blobs(work / "registry").items() if p not in before}
                row.setdefault("bytes pushed after a one-line edit", []).append(sum(new.values()))
                row.setdefault("  of which layers", []).append(
                    sum(n for p, n in new.items() if is_layer(p))
                )
                shutil.rmtree(work / f"cache-{case}-{turn}")
        print(f"{'':<36} {'one platform':>14} {'two platforms':>14} {'two / one':>10}")
        for row in results["one"]:
            one = statistics.median(results["one"][row])
            two = statistics.median(results["two"][row])
            unit = "B" if "bytes" in row or "layers" in row else "s"
            shown = (
                (f"{one:,.0f} B", f"{two:,.0f} B")
                if unit == "B"
                else (f"{one:.2f} s", f"{two:.2f} s")
            )
            print(f"{row:<36} {shown[0]:>14} {shown[1]:>14} {two / one:>9.2f}x")
        print(f"(medians of {args.repeat}; base {base})")
    finally:
        registry.stop()
        podman.remove()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
