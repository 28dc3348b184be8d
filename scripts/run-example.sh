#!/usr/bin/env bash
# The main job: builds example-project's image with `hatch build -t image`, loads it into
# podman, runs it and asks it over HTTP for its name and version.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
bash scripts/bootstrap.sh
work=$(mktemp -d)
podman=(podman --root "$work/podman" --runroot "$work/podman-run" --tmpdir "$work/libpod" --storage-driver overlay
        --runtime runc --cgroup-manager cgroupfs)
cleanup() { "${podman[@]}" rm -f -t 2 example-service >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT

if [ -z "${BP_BASE_IMAGE:-}" ]; then
  if curl -s -o /dev/null -m 5 https://registry-1.docker.io/v2/; then
    echo "Docker Hub is reachable: the base image is python:3.11-slim"
  else
    echo "Docker Hub cannot be reached from here: assembling the base from Debian's packages instead"
    export BP_BASE_IMAGE=debian-packages:bookworm
    echo "base image: $BP_BASE_IMAGE"
  fi
fi

# Hatch installs the plugin into its build environment: point it at this checkout's wheel.
.venv/bin/uv build --wheel -q --out-dir "$work/wheels" .
wheel=$(ls "$work"/wheels/python_buildpacks-*.whl)
echo "python-buildpacks @ file://$wheel" >"$work/override.txt"
export UV_OVERRIDE="$work/override.txt" HATCH_DATA_DIR="$work/hatch"

cd example-project
rm -rf dist
"$repo/.venv/bin/hatch" build -t image
archive=$(ls dist/*.tar)

"${podman[@]}" load -i "$archive"
port=${PORT:-8080}
"${podman[@]}" run -d --name example-service --network host --ulimit nofile=4096:4096 \
  --ulimit nproc=4096:4096 -e PORT="$port" example-service:0.1.0 >/dev/null
for _ in $(seq 50); do
  if body=$(curl -sf "http://127.0.0.1:$port/"); then
    echo "GET http://127.0.0.1:$port/ -> $body"
    exit 0
  fi
  sleep 0.2
done
echo "the container did not answer; its log:" >&2
"${podman[@]}" logs example-service >&2
exit 1
