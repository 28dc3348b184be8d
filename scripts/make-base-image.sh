#!/usr/bin/env bash
# Makes a local Debian base image with Python 3.11, as an OCI layout, for offline builds and tests.
# Docker Hub (python:X.Y-slim) cannot be reached on these machines; this gives the same shape.
# Usage: make-base-image.sh [LAYOUT_DIR]   (default ~/.cache/python-buildpacks-testbed/debian-python)
# BASE_PACKAGES (default python3,ca-certificates) names the Debian packages to include.
# Prints the oci-layout reference to use as base-image. Needs root, debootstrap and umoci.
set -euo pipefail
layout=${1:-${XDG_CACHE_HOME:-$HOME/.cache}/python-buildpacks-testbed/debian-python}
tag=bookworm
if [ -f "$layout/index.json" ] && grep -q "\"$tag\"" "$layout/index.json"; then
  echo "oci-layout:$layout:$tag"
  exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "making the local Debian base image (debootstrap, about a minute) in $layout" >&2
debootstrap --variant=minbase --include="${BASE_PACKAGES:-python3,ca-certificates}" bookworm "$work/rootfs" \
  http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 \
  || { tail -20 "$work/debootstrap.log" >&2; exit 1; }
# Slim it the way python:X.Y-slim is slimmed: no apt lists, docs or caches.
rm -rf "$work"/rootfs/var/lib/apt/lists/* "$work"/rootfs/var/cache/apt/* \
  "$work"/rootfs/usr/share/doc/* "$work"/rootfs/usr/share/man/* "$work"/rootfs/usr/share/locale/*
tmp_layout="$layout.tmp.$$"
rm -rf "$tmp_layout"
mkdir -p "$(dirname "$layout")"
umoci init --layout "$tmp_layout"
umoci new --image "$tmp_layout:$tag"
umoci unpack --image "$tmp_layout:$tag" "$work/bundle" >/dev/null
cp -a "$work/rootfs/." "$work/bundle/rootfs/"
umoci repack --image "$tmp_layout:$tag" "$work/bundle"
umoci config --image "$tmp_layout:$tag" \
  --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --config.env LANG=C.UTF-8 --config.cmd python3 --os linux --architecture amd64 \
  --config.label io.buildpacks.base.distro.name=debian \
  --config.label io.buildpacks.base.distro.version=12
umoci gc --layout "$tmp_layout"
rm -rf "$layout"
mv "$tmp_layout" "$layout"
echo "oci-layout:$layout:$tag"
