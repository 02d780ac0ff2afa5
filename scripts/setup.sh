#!/usr/bin/env bash
# Installs what dropship needs on a fresh Debian/Ubuntu machine: the system
# tools it drives (sshd, gpg, rpm, createrepo_c, dpkg-dev, dnf, an arm64 cross
# compiler for the example, nginx to serve repositories) and a virtualenv in
# .venv with dropship itself. `--test` adds what only the tests use (Chromium,
# to look at the release index page; Node.js and npm, for a real npm
# registry). Safe to re-run: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(openssh-server openssh-client gnupg rpm createrepo-c dpkg-dev apt-utils dnf dnf-plugins-core
          xz-utils git gcc libc6-dev gcc-aarch64-linux-gnu libc6-dev-arm64-cross nginx util-linux)
# The tests also boot emulated droplets as containers (their own dockerd, a
# debootstrap image), run a real registry, and a replicated orchestrator on
# PostgreSQL and Redis (started by the tests in their own folders, never as services).
if [ "${1:-}" = "--test" ]; then
  packages+=(chromium docker.io debootstrap skopeo docker-registry apache2-utils postgresql redis-server)
  # npm publishing is tested against a real verdaccio, which needs node and npm
  # (Debian 12's Node.js 18 and npm 9.2 do: checked in a bookworm chroot).
  # Only when they are missing: a Node.js from another source (NodeSource's
  # nodejs, which bundles npm) conflicts with Debian's npm package.
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    packages+=(nodejs npm)
  fi
fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "setup: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
    sudo=(sudo)
  fi
  echo "setup: installing ${missing[*]}"
  # Don't let package scripts start services (a system sshd would listen on
  # every address); dropship starts its own, on 127.0.0.1 only.
  policy=/usr/sbin/policy-rc.d
  created_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
    "${sudo[@]}" chmod 755 "$policy"
    created_policy=1
  fi
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if [ "$created_policy" = 1 ]; then "${sudo[@]}" rm -f "$policy"; fi
fi

python=$(command -v python3.11 || command -v python3)
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]' 2>&1 | grep -v "is ignored" || true
.venv/bin/python -c "import dropship, prefect; print('setup: dropship', dropship.__version__, 'with prefect', prefect.__version__)"
