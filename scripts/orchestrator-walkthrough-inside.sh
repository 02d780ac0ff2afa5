#!/usr/bin/env bash
# Run by orchestrator-walkthrough.sh inside the fresh container, as root: README's
# "Run the orchestrator for a team", command by command (ADDR for 127.0.0.1).
set -euo pipefail
A=${ADDR:-127.0.44.1}
step() { printf '\n==== %s\n' "$*"; }
export DEBIAN_FRONTEND=noninteractive
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d   # container only

step "apt-get install"
apt-get update -q >/dev/null
apt-get install -y -q --no-install-recommends postgresql redis-server nginx python3-venv \
  openssh-server gnupg dpkg-dev apt-utils rpm createrepo-c git >/tmp/apt.log 2>&1 || { tail -20 /tmp/apt.log; exit 1; }
echo "installed: $(dpkg-query -W -f='${Package} ${Version}\n' postgresql redis-server nginx python3-venv | tr '\n' ' ')"

step "PostgreSQL and Redis on $A (container only: a real machine has them running on 127.0.0.1)"
sed -i "s/^#\?listen_addresses = .*/listen_addresses = '$A'/" /etc/postgresql/15/main/postgresql.conf
sed -i "s/^bind .*/bind $A/" /etc/redis/redis.conf
pg_ctlcluster 15 main start
service redis-server start >/dev/null
rm -f /usr/sbin/policy-rc.d

step "dropship into a virtualenv"
python3 -m venv /opt/dropship
/opt/dropship/bin/pip install -q "$(ls /dist/dropship-*.whl)[scale]" 2>&1 | grep -v "is ignored" || true
ln -sf /opt/dropship/bin/dropship /opt/dropship/bin/prefect /usr/local/bin/
dropship --help >/dev/null && /opt/dropship/bin/python -c 'import dropship, prefect, prefect_redis; print("dropship", dropship.__version__, "prefect", prefect.__version__)'

step "the database"
sudo -u postgres createuser prefect && sudo -u postgres createdb -O prefect prefect
sudo -u postgres psql -q -c "ALTER USER prefect PASSWORD 'CHANGE-ME'"

step "/etc/dropship"
install -d -m 0700 /etc/dropship
(
  umask 077
  printf 'DROPSHIP_DATABASE_URL=%s\nDROPSHIP_REDIS_URL=%s\n' \
    "postgresql+asyncpg://prefect:CHANGE-ME@$A:5432/prefect" "redis://$A:6379/0" > /etc/dropship/server.env
  echo "admin:$(openssl rand -hex 16)" > /etc/dropship/auth
  echo "PREFECT_API_AUTH_STRING=$(cat /etc/dropship/auth)" > /etc/dropship/worker.env
)
ls -l /etc/dropship

step "dropship server units"
dropship server units --auth-string-file /etc/dropship/auth --host "$A" --out /etc/systemd/system
ls /etc/systemd/system/dropship-*

step "the units' ExecStart, by hand (no systemd here)"
run_unit() {
  local unit=/etc/systemd/system/$1.service envs=() line file
  while IFS= read -r line; do
    case "$line" in
      Environment=*) envs+=("${line#Environment=}") ;;
      EnvironmentFile=*)
        file=${line#EnvironmentFile=}; file=${file#-}
        if [ -f "$file" ]; then while IFS= read -r l; do [ -n "$l" ] && envs+=("$l"); done <"$file"; fi ;;
    esac
  done <"$unit"
  local cmd; cmd=$(sed -n 's/^ExecStart=//p' "$unit")
  echo "$1: $cmd"
  # shellcheck disable=SC2086
  env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root "${envs[@]}" $cmd \
    >"/var/log/$1.log" 2>&1 &
}
run_unit dropship-server
auth=$(cat /etc/dropship/auth)
for i in $(seq 240); do
  curl -sf -u "$auth" "http://$A:4200/api/health" >/dev/null && break
  sleep 1
done
curl -sf -u "$auth" "http://$A:4200/api/health" >/dev/null || { tail -30 /var/log/dropship-server.log; exit 1; }
echo "server healthy after ${i} s:"; cat /var/log/dropship-server.log
echo "without the auth string: HTTP $(curl -s -o /dev/null -w '%{http_code}' "http://$A:4200/api/flows/filter" -X POST)"
run_unit dropship-worker

step "a project, its blocks and deployments (README: Release your own project; Running it for a project)"
export PREFECT_API_URL=http://$A:4200/api PREFECT_API_AUTH_STRING=$auth
mkdir -p /srv/hello && cd /srv/hello
git init -q -b main .
cat > build.sh <<'SH'
#!/bin/sh
set -eu
root=build/deb
rm -rf build out && mkdir -p "$root/DEBIAN" "$root/usr/share/doc/hello" out
echo "hello $DROPSHIP_VERSION" > "$root/usr/share/doc/hello/README"
printf 'Package: hello\nVersion: %s\nArchitecture: amd64\nMaintainer: w <w@example.invalid>\nDescription: walkthrough\n' \
  "$DROPSHIP_VERSION" > "$root/DEBIAN/control"
dpkg-deb --root-owner-group -Zgzip --build "$root" "out/hello_${DROPSHIP_VERSION}_amd64.deb" >/dev/null
SH
dropship init --arch amd64 --format deb >/dev/null
sed -i 's|^build = .*|build = ["sh", "build.sh"]|; s|^artifacts = .*|artifacts = ["out/*.deb"]|' dropship.toml
grep -n '^\[\|^build\|^artifacts\|^name\|^provider' dropship.toml
git add -A && git -c user.name=w -c user.email=w@example.invalid commit -qm "hello" \
  && git -c user.name=w -c user.email=w@example.invalid tag -a v1.0.0 -m v1.0.0
dropship blocks --generate "hello release key" --email release@example.org --repo-path /srv/repo
dropship check
dropship deployments apply --manifest /srv/hello/dropship.toml

step "a release through the worker unit"
started=$SECONDS
prefect --no-prompt deployment run release/release-tag -p tag=v1.0.0 | tail -3
for i in $(seq 600); do
  state=$(/opt/dropship/bin/python - <<'PY'
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowFilter, FlowFilterName
with get_client(sync_client=True) as c:
    runs = c.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["release"])))
    print(runs[0].state.name if runs and runs[0].state else "none")
PY
)
  case "$state" in Completed|Failed|Crashed|Cancelled) break ;; esac
  sleep 2
done
echo "release flow run: $state after $((SECONDS - started)) s"
find /srv/repo/current/ -name "*.deb" -o -name Release | sed 's|^|published: |'
if [ "$state" != Completed ]; then
  tail -5 /var/log/dropship-worker.log
  for log in $(find /var/lib/dropship -name "*.log" -path "*machines*" 2>/dev/null | head -5); do echo "-- $log"; tail -5 "$log"; done
  exit 1
fi

step "apt-get installs the published package"
install -D -m 0644 /srv/repo/current/keys/hello-release.gpg /etc/apt/keyrings/hello.gpg
echo "deb [signed-by=/etc/apt/keyrings/hello.gpg] file:/srv/repo/current stable main" > /etc/apt/sources.list.d/hello.list
apt-get update -q -o Dir::Etc::sourcelist=/dev/null -o Dir::Etc::sourceparts=/etc/apt/sources.list.d >/dev/null
apt-get install -y -q hello=1.0.0 >/dev/null && cat /usr/share/doc/hello/README
echo "walkthrough: OK"
