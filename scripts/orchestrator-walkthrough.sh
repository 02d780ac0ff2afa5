#!/usr/bin/env bash
# Follows README's "Run the orchestrator for a team" on a fresh Debian 12
# machine, played by a container of the emulator's stock image (debootstrapped
# from this machine's apt mirror, dropship/emulator/image.py) in a dockerd of
# its own, with the host's network: dropship is installed from a wheel of this
# checkout, then the stack, a project and a release through the worker unit.
#
#   bash scripts/orchestrator-walkthrough.sh        # as root; prints each step and how it went
#
# What differs from a real machine, and why:
# - no systemd in a container: the unit files are written as the README says,
#   listed, and their ExecStart run by hand with their Environment lines;
#   PostgreSQL and Redis are started with their Debian init scripts;
# - the host's network is shared with other work: PostgreSQL, Redis and the
#   stack listen on 127.0.44.1 (ADDR) instead of 127.0.0.1, and package
#   scripts don't start services while apt-get runs (policy-rc.d).
set -euo pipefail
cd "$(dirname "$0")/.."
ADDR=${ADDR:-127.0.44.1}
work=$(mktemp -d /tmp/dsw-XXXXXX)
chmod 755 "$work"
cleanup() {
  set +e
  [ -n "${DOCKER_HOST:-}" ] && docker rm -f dropship-walkthrough >/dev/null 2>&1
  [ -f "$work/dockerd.pid" ] && kill "$(cat "$work/dockerd.pid")" && sleep 3
  umount "$work/e/netns/default" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

.venv/bin/pip wheel -q --no-deps -w "$work/dist" . >"$work/wheel.log" 2>&1 || { tail -20 "$work/wheel.log"; exit 1; }
tarball=$(.venv/bin/python -c 'from dropship.emulator.image import ensure_tarball; print(ensure_tarball())')

dockerd --iptables=false --ip6tables=false --bridge=none --data-root "$work/data" --exec-root "$work/e" \
  --pidfile "$work/dockerd.pid" -H "unix://$work/d.sock" >"$work/dockerd.log" 2>&1 &
export DOCKER_HOST="unix://$work/d.sock"
for _ in $(seq 60); do docker version >/dev/null 2>&1 && break; sleep 1; done
docker import "$tarball" dropship-fresh:12 >/dev/null
docker run -d --name dropship-walkthrough --network host -v "$work/dist:/dist:ro" \
  -v "$PWD/scripts/orchestrator-walkthrough-inside.sh:/walkthrough.sh:ro" -e ADDR="$ADDR" \
  dropship-fresh:12 sleep infinity >/dev/null
docker exec dropship-walkthrough bash /walkthrough.sh
