#!/usr/bin/env bash
# Load test: GET of a cached account JWT from our server vs. nginx serving the same JWT file
# statically. Same connections, same duration, alternating rounds in one run; the server under
# test is pinned to CPU 0 and wrk to CPU 1. Bounded in time (ROUNDS x 2 x DURATION) and stops
# everything it started on exit. Everything binds 127.0.0.1.
#
#   bash benches/http_load.sh            # defaults: 3 rounds, 10s, 256 connections
#   ROUNDS=5 DURATION=20s CONNS=64 bash benches/http_load.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
CONNS=${CONNS:-256}
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

. benches/lib.sh
KEY=$(sub_of account_a)
mkdir -p "$work/store" "$work/www/jwt/v1/accounts"
cp "$FIX/account_a.jwt" "$work/www/jwt/v1/accounts/$KEY"

P_OURS=$(free_port); P_NGINX=$(free_port)

cat > "$work/nas.conf" <<CONF
operatorjwtpath: "$PWD/$FIX/operator_signing_keys.jwt"
http { host: "127.0.0.1", port: $P_OURS, workers: 1 }
store { dir: "$work/store" }
logging { colors: false }
CONF
taskset -c 0 "$BIN" -c "$work/nas.conf" 2>"$work/nas.log" &
pids+=($!); OURS_PID=$!

cat > "$work/nginx.conf" <<CONF
user root;
worker_processes 1;
daemon off;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  default_type application/jwt;
  server {
    listen 127.0.0.1:$P_NGINX;
    root $work/www;
  }
}
CONF
taskset -c 0 "$NGINX" -c "$work/nginx.conf" -p "$work" &
pids+=($!)

for _ in $(seq 50); do curl -sf -o /dev/null "http://127.0.0.1:$P_OURS/healthz" && break; sleep 0.1; done
# The account goes in the way nsc push sends it.
curl -sf -H 'Content-Type: application/jwt' --data-binary "@$FIX/account_a.jwt" "http://127.0.0.1:$P_OURS/jwt/v1/accounts/$KEY"
for url in "http://127.0.0.1:$P_OURS/jwt/v1/accounts/$KEY" "http://127.0.0.1:$P_NGINX/jwt/v1/accounts/$KEY"; do
  for _ in $(seq 50); do curl -sf -o /dev/null "$url" && break; sleep 0.1; done
  curl -sf -o /dev/null "$url" || { echo "not answering: $url"; cat "$work"/*.log; exit 1; }
done
sleep 0.5
NGINX_WORKER=$(pgrep -P "$(cat "$work/nginx.pid")" | head -1)

ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)

run() { # name pid url
  local before after out
  before=$(ticks "$2")
  out=$(taskset -c 1 wrk -t1 -c"$CONNS" -d"$DURATION" --latency "$3")
  after=$(ticks "$2")
  local rps p50 p99 reqs
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  reqs=$(awk '/requests in/ {print $1}' <<<"$out")
  local cpu_us
  cpu_us=$(awk -v t=$((after - before)) -v hz="$HZ" -v n="$reqs" 'BEGIN {printf "%.1f", t / hz * 1e6 / n}')
  echo "$1 $rps $p50 $p99 $cpu_us"
}

echo "| round | server | req/s | p50 | p99 | server CPU µs/req |"
echo "|---|---|---|---|---|---|"
results=()
for r in $(seq "$ROUNDS"); do
  for s in ours nginx; do
    if [ $s = ours ]; then line=$(run ours "$OURS_PID" "http://127.0.0.1:$P_OURS/jwt/v1/accounts/$KEY")
    else line=$(run nginx "$NGINX_WORKER" "http://127.0.0.1:$P_NGINX/jwt/v1/accounts/$KEY"); fi
    results+=("$line")
    read -r name rps p50 p99 cpu <<<"$line"
    echo "| $r | $name | $rps | $p50 | $p99 | $cpu |"
  done
done
printf '%s\n' "${results[@]}" | awk '
  { n[$1]++; rps[$1]+=$2; cpu[$1]+=$5 }
  END {
    printf "\nmean req/s: ours %.0f, nginx %.0f, ratio ours/nginx %.2f\n", rps["ours"]/n["ours"], rps["nginx"]/n["nginx"], (rps["ours"]/n["ours"])/(rps["nginx"]/n["nginx"])
    printf "mean server CPU per request: ours %.1f µs, nginx %.1f µs, ratio %.2f\n", cpu["ours"]/n["ours"], cpu["nginx"]/n["nginx"], (cpu["ours"]/n["ours"])/(cpu["nginx"]/n["nginx"])
  }'
echo "machine: $(nproc) cores, $(awk -F: '/model name/ {print $2; exit}' /proc/cpuinfo | xargs), wrk -t1 -c$CONNS -d$DURATION, rounds $ROUNDS"
