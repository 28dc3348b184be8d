#!/usr/bin/env bash
# Installs what the demo and the tests need on a fresh Debian machine: the Debian packages of
# the test bed (podman with runc, skopeo, umoci, docker-registry, debootstrap, oci-image-tool)
# and a virtual environment in .venv with this project and its test tools.
set -euo pipefail
cd "$(dirname "$0")/.."
packages=(podman runc skopeo umoci docker-registry debootstrap oci-image-tool curl)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "bootstrap: installing Debian packages: ${missing[*]}" >&2
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${missing[@]}" >/dev/null
fi
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]' 2>&1 | grep -v '^WARNING: Location' || true
.venv/bin/python -c "import buildpacks, hatch_buildpacks, pytest" # fails loudly if the install did
