#!/usr/bin/env bash
# GET throughput of a cached account with and without hostile clients (benches/attackers.py:
# 200 slow-body POSTs, 200 idle connections, a 1,000/s flood of foreign-signed POSTs, made-up
# methods), alternating rounds in one run. The server is pinned to CPU 0; wrk and the attackers
# share CPU 1. Bounded in time (ROUNDS x 2 x DURATION); stops everything it started; binds
# 127.0.0.1 only.
#
#   bash benches/attack.sh                 # defaults: 3 rounds, 10 s, 64 connections
#   ROUNDS=5 DURATION=20 bash benches/attack.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
CONNS=${CONNS:-64}
command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
. benches/lib.sh
KEY=$(sub_of account_a)
PORT=$(free_port)
cat > "$work/nas.conf" <<CONF
operatorjwtpath: "$PWD/$FIX/operator_signing_keys.jwt"
http { host: "127.0.0.1", port: $PORT, workers: 1 }
store { dir: "$work/store" }
logging { colors: false }
CONF
taskset -c 0 "$BIN" -c "$work/nas.conf" 2>"$work/nas.log" &
pids+=($!); PID=$!
for _ in $(seq 50); do curl -sf -o /dev/null "http://127.0.0.1:$PORT/healthz" && break; sleep 0.1; done
curl -sf -H 'Content-Type: application/jwt' --data-binary "@$FIX/account_a.jwt" "http://127.0.0.1:$PORT/jwt/v1/accounts/$KEY"
URL="http://127.0.0.1:$PORT/jwt/v1/accounts/$KEY"
curl -sf -o /dev/null "$URL"

rps_of() { taskset -c 1 wrk -t1 -c"$CONNS" -d"${DURATION}s" "$URL" | awk '/Requests\/sec/ {print $2}'; }

echo "| round | attack | GET req/s | attackers' counts |"
echo "|---|---|---|---|"
sum_base=0; sum_attack=0
for r in $(seq "$ROUNDS"); do
  base=$(rps_of)
  echo "| $r | none | $base | |"
  taskset -c 1 python3 benches/attackers.py "$PORT" "$((DURATION + 2))" "$FIX/account_foreign.jwt" "$KEY" >"$work/attack.out" &
  apid=$!; pids+=($apid)
  sleep 1  # let the attackers open their connections before measuring
  attacked=$(rps_of)
  wait "$apid" || true
  echo "| $r | all | $attacked | $(cat "$work/attack.out") |"
  sum_base=$(awk -v a="$sum_base" -v b="$base" 'BEGIN {print a + b}')
  sum_attack=$(awk -v a="$sum_attack" -v b="$attacked" 'BEGIN {print a + b}')
done
awk -v b="$sum_base" -v a="$sum_attack" -v n="$ROUNDS" 'BEGIN {printf "\nmean GET req/s: without attack %.0f, under attack %.0f, ratio %.2f\n", b/n, a/n, a/b}'
curl -s "http://127.0.0.1:$PORT/metrics" | grep -E '^nas_http_(open_connections|write_timeouts_total|requests_in_flight)[ {]' || true
echo "series of nas_http_requests_total: $(curl -s "http://127.0.0.1:$PORT/metrics" | grep -c '^nas_http_requests_total{')"
echo "server RSS: $(awk '/VmRSS/ {print $2, $3}' /proc/$PID/status), peak $(awk '/VmHWM/ {print $2, $3}' /proc/$PID/status)"
echo "machine: $(nproc) cores, $(awk -F: '/model name/ {print $2; exit}' /proc/cpuinfo | xargs), wrk -t1 -c$CONNS -d${DURATION}s, rounds $ROUNDS"
