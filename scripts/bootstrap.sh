#!/usr/bin/env bash
# Installs what the demo and the tests need on a fresh Debian machine: the Debian packages of
# the test bed (podman with runc, skopeo, umoci, docker-registry, debootstrap, oci-image-tool,
# qemu-user-static and binfmt-support, by which podman runs the arm64 images the tests build)
# and a virtual environment in .venv with this project and its test tools.
set -euo pipefail
cd "$(dirname "$0")/.."
sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
packages=(podman runc skopeo umoci docker-registry debootstrap oci-image-tool curl
  qemu-user-static binfmt-support)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "bootstrap: installing Debian packages: ${missing[*]}" >&2
  $sudo apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${missing[@]}" >/dev/null
fi
# arm64 programs run under qemu once the kernel's binfmt_misc knows it (only to run the
# images tests build; a build never runs the image's code). A fresh container may lack the
# mount, and binfmt-support registers emulators only when it is there.
if [ ! -e /proc/sys/fs/binfmt_misc/status ]; then
  $sudo mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
fi
if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
  $sudo update-binfmts --enable qemu-aarch64
fi
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]' 2>&1 | grep -v '^WARNING: Location' || true
.venv/bin/python -c "import buildpacks, hatch_buildpacks, pytest" # fails loudly if the install did
