#!/usr/bin/env bash
# Release build of python-buildpacks: the wheel and the sdist, built by `uv build` from this
# checkout into OUT_DIR (default dist/). The version is written in one place,
# buildpacks/__init__.py (pyproject.toml reads it from there through [tool.hatch.version]).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="$(mkdir -p "${1:-$root/dist}" && cd "${1:-$root/dist}" && pwd)"
uv="${UV:-$(command -v uv || echo "$root/.venv/bin/uv")}"
[ -x "$uv" ] || { echo "error: uv not found: install it (pip install uv) or run scripts/bootstrap.sh" >&2; exit 1; }

version="$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$root/buildpacks/__init__.py")"
[ -n "$version" ] || { echo "error: no __version__ in buildpacks/__init__.py" >&2; exit 1; }
wheel="$out/python_buildpacks-$version-py3-none-any.whl"
sdist="$out/python_buildpacks-$version.tar.gz"
rm -f "$wheel" "$sdist"

"$uv" build --quiet --no-cache --out-dir "$out" "$root"
for file in "$wheel" "$sdist"; do
  [ -f "$file" ] || { echo "error: uv build did not write $file" >&2; exit 1; }
done
# The wheel's metadata must carry the same version (a stale pyproject would not).
python3 - "$wheel" "$version" <<'PY' || { echo "error: $wheel does not say Version: $version" >&2; exit 1; }
import sys, zipfile
wheel, version = sys.argv[1:]
metadata = zipfile.ZipFile(wheel).read(f"python_buildpacks-{version}.dist-info/METADATA").decode()
sys.exit(f"\nVersion: {version}\n" not in metadata)
PY
echo "python-buildpacks $version"
(cd "$out" && sha256sum "$(basename "$wheel")" "$(basename "$sdist")")
