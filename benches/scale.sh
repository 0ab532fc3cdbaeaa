#!/usr/bin/env bash
# Scale: a directory store of N generated account JWTs (benches/gen_accounts.rs), our server vs.
# nginx serving the same files (hard links: same inodes, same warm page cache). For each N:
#
#   start      start → first 200 of GET /jwt/v1/accounts/<a stored key> (N=0: the probe
#              /jwt/v1/accounts/), polled every 0.5 ms
#   background CPU seconds and RSS of the server after WINDOW seconds with no request (no NATS)
#   cold       first-touch GETs: every request a key never asked before (shuffled key list,
#              benches/keys.lua; a fresh server process per run): server pinned to CPU 0 with
#              wrk on CPU 1, nginx the same; then our server unpinned on both cores
#   cached     one hot key (plain wrk) vs. 10k random keys (keys.lua ORDER=random), all cached
#              before the run; server and nginx pinned to CPU 0, wrk on CPU 1
#   full       RSS with every stored account cached (cache sized to hold N), RSS per account
#
# CPU per request is the serving process's utime+stime (/proc/<pid>/stat) over the run divided by
# the requests wrk counted. Bounded in time (each run stops at DURATION or when its key list is
# used up; the fill runs N/2000 s + 3 s and reports its misses), binds 127.0.0.1, stops what it started (by PID) on exit and
# deletes the generated data.
#
#   bash benches/scale.sh                                  # N = 0, 100k, 1M; 60 s window
#   SIZES="0 100000" WINDOW=10 DURATION=5s bash benches/scale.sh      # a quick run
#   FULL_MAX=100000 ...                                    # fill the cache only up to this N
#   BIN=… GEN=… ...                                        # prebuilt server and generator
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SIZES=${SIZES:-"0 100000 1000000"}
WINDOW=${WINDOW:-60}
DURATION=${DURATION:-5s}
CONNS=${CONNS:-64}
ROUNDS=${ROUNDS:-2}
SEED=${SEED:-1}
FULL_MAX=${FULL_MAX:-1000000}
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

. benches/lib.sh
if [ -z "${GEN:-}" ]; then
  cargo build --release --quiet --example gen_accounts
  GEN=${CARGO_TARGET_DIR:-target}/release/examples/gen_accounts
fi
HZ=$(getconf CLK_TCK)
LUA=$PWD/benches/keys.lua

ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
metric() { curl -sf "http://127.0.0.1:$2/metrics" | awk -v m="$1" '$1==m {print $2}'; }
load_avg() { cut -d' ' -f1-3 /proc/loadavg; }

# Prints the wall-clock time (ns) of the first 200 from $1, polling every 0.5 ms for 30 s.
first_200() {
  python3 - "$1" <<'PY'
import http.client, sys, time, urllib.parse
u = urllib.parse.urlsplit(sys.argv[1])
end = time.time() + 30
while time.time() < end:
    try:
        c = http.client.HTTPConnection(u.hostname, u.port, timeout=1)
        c.request("GET", u.path)
        if c.getresponse().status == 200:
            print(time.time_ns())
            sys.exit(0)
        c.close()
    except OSError:
        pass
    time.sleep(0.0005)
sys.exit(1)
PY
}

# start_ours CPUS CACHE_ENTRIES: a fresh server on the data of $data (CPUS "" = unpinned);
# sets OURS_PID and P_OURS.
start_ours() {
  P_OURS=$(free_port)
  cat > "$work/nas.conf" <<CONF
operatorjwtpath: "$data/operator.jwt"
http { host: "127.0.0.1", port: $P_OURS }
store { dir: "$data/store" }
cache { maxentries: $2, maxbytes: 8589934592 }
logging { colors: false }
CONF
  if [ -n "$1" ]; then taskset -c "$1" "$BIN" -c "$work/nas.conf" 2>>"$work/nas.log" &
  else "$BIN" -c "$work/nas.conf" 2>>"$work/nas.log" & fi
  OURS_PID=$!
  pids+=("$OURS_PID")
  for _ in $(seq 200); do curl -sf -o /dev/null "http://127.0.0.1:$P_OURS/healthz" && return; sleep 0.05; done
  echo "server not answering"; cat "$work/nas.log"; exit 1
}
stop_ours() { kill "$OURS_PID" 2>/dev/null || true; wait "$OURS_PID" 2>/dev/null || true; }

start_nginx() {
  P_NGINX=$(free_port)
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
  server { listen 127.0.0.1:$P_NGINX; root $data/www; }
}
CONF
  taskset -c 0 "$NGINX" -c "$work/nginx.conf" -p "$work" &
  NGINX_MASTER=$!
  pids+=("$NGINX_MASTER")
  for _ in $(seq 100); do [ -s "$work/nginx.pid" ] && pgrep -P "$(cat "$work/nginx.pid")" >/dev/null && break; sleep 0.05; done
  NGINX_WORKER=$(pgrep -P "$(cat "$work/nginx.pid")" | head -1)
}
stop_nginx() { kill "$NGINX_MASTER" 2>/dev/null || true; wait "$NGINX_MASTER" 2>/dev/null || true; rm -f "$work/nginx.pid"; }

# measure PID WRK_CPUS URL [KEYS ORDER]: prints "req/s cpu_µs_per_req requests".
measure() {
  local before after out pin=()
  [ -n "$2" ] && pin=(taskset -c "$2")
  before=$(ticks "$1")
  if [ $# -gt 3 ]; then
    out=$(KEYS=$4 ORDER=$5 SEED=$SEED "${pin[@]}" wrk -t1 -c"$CONNS" -d"$DURATION" -s "$LUA" "$3")
  else
    out=$("${pin[@]}" wrk -t1 -c"$CONNS" -d"$DURATION" "$3")
  fi
  after=$(ticks "$1")
  local rps reqs
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  reqs=$(awk '/requests in/ {print $1}' <<<"$out")
  if grep -q "Non-2xx" <<<"$out"; then echo "non-2xx answers: $out" >&2; exit 1; fi
  awk -v r="$rps" -v t=$((after - before)) -v hz="$HZ" -v n="$reqs" \
    'BEGIN {printf "%.0f %.1f %d\n", r, t / hz * 1e6 / n, n}'
}

row() { echo "| $N | $1 | $2 | $3 | $4 | $5 |"; }

results=()
echo "machine: $(nproc) cores, $(awk -F: '/model name/ {print $2; exit}' /proc/cpuinfo | xargs), $(free -g | awk '/Mem/ {print $2}') GiB; wrk -t1 -c$CONNS -d$DURATION, window ${WINDOW}s, rounds $ROUNDS"
for N in $SIZES; do
  data=$work/data
  rm -rf "$data"
  gen_out=$("$GEN" --count "$N" --seed "$SEED" --out "$data" 2>&1)
  echo "N=$N: $gen_out (load $(load_avg))"
  python3 -c "import random,sys;k=open(sys.argv[1]).read().split();random.Random(int(sys.argv[3])).shuffle(k);open(sys.argv[2],'w').write('\n'.join(k)+('\n' if k else ''))" \
    "$data/keys.txt" "$work/shuffled.txt" "$SEED"
  head -10000 "$work/shuffled.txt" > "$work/hot10k.txt"
  first_key=$(head -1 "$data/keys.txt")
  # The page cache holds every file (and its inode) for both servers.
  find "$data/store" -name '*.jwt' -print0 | xargs -0 -r cat > /dev/null

  echo "| N | figure | ours | nginx | ratio | note |"
  echo "|---|---|---|---|---|---|"
  # Start → first 200, then the background window (unpinned, nothing asked meanwhile).
  url="http://127.0.0.1:PORT/jwt/v1/accounts/$first_key"
  [ "$N" = 0 ] && url="http://127.0.0.1:PORT/jwt/v1/accounts/"
  P_OURS=$(free_port)
  cat > "$work/nas.conf" <<CONF
operatorjwtpath: "$data/operator.jwt"
http { host: "127.0.0.1", port: $P_OURS }
store { dir: "$data/store" }
logging { colors: false }
CONF
  first_200 "${url/PORT/$P_OURS}" > "$work/first200" & poller=$!
  pids+=("$poller")
  sleep 0.3
  t0=$(date +%s%N)
  "$BIN" -c "$work/nas.conf" 2>>"$work/nas.log" &
  OURS_PID=$!; pids+=("$OURS_PID")
  wait "$poller" || { echo "no 200"; cat "$work/nas.log"; exit 1; }
  row start "$(awk -v a="$t0" -v b="$(cat "$work/first200")" 'BEGIN {printf "%.1f ms", (b - a) / 1e6}')" – – "process start → first 200 (poller 0.5 ms)"
  sleep "$WINDOW"
  row background "$(awk -v t="$(ticks "$OURS_PID")" -v hz="$HZ" 'BEGIN {printf "%.2f s CPU", t / hz}'), RSS $(( $(rss_kib "$OURS_PID") / 1024 )) MiB" – – "first ${WINDOW}s after start, one GET, no NATS"
  stop_ours
  [ "$N" = 0 ] && continue

  # First touch: pinned (server and nginx on CPU 0, wrk on CPU 1), then ours on both cores.
  start_nginx
  for r in $(seq "$ROUNDS"); do
    start_ours 0 "$N"
    read -r o_rps o_cpu o_n <<<"$(measure "$OURS_PID" 1 "http://127.0.0.1:$P_OURS" "$work/shuffled.txt" seq)"
    stop_ours
    read -r n_rps n_cpu n_n <<<"$(measure "$NGINX_WORKER" 1 "http://127.0.0.1:$P_NGINX" "$work/shuffled.txt" cycle)"
    row "cold, pinned, round $r: req/s" "$o_rps" "$n_rps" "$(awk -v a="$o_rps" -v b="$n_rps" 'BEGIN {printf "%.2f", a / b}')" "$o_n / $n_n requests; ours asked each key once$([ "$o_n" -ge "$N" ] && echo ' (LIST USED UP: req/s understated)')"
    row "cold, pinned, round $r: CPU µs/req" "$o_cpu" "$n_cpu" "$(awk -v a="$o_cpu" -v b="$n_cpu" 'BEGIN {printf "%.2f", a / b}')" ""
    results+=("cold_pinned $o_rps $o_cpu $n_rps $n_cpu")
    start_ours "" "$N"
    read -r u_rps u_cpu u_n <<<"$(measure "$OURS_PID" "" "http://127.0.0.1:$P_OURS" "$work/shuffled.txt" seq)"
    stop_ours
    row "cold, unpinned (2 cores), round $r: req/s" "$u_rps" – "$(awk -v a="$u_rps" -v b="$o_rps" 'BEGIN {printf "%.2f", a / b}') × pinned" "$u_n requests; CPU $u_cpu µs/req"
  done

  # Cached: one hot key vs. 10k random keys, every key loaded before the run.
  start_ours 0 "$N"
  KEYS=$work/hot10k.txt ORDER=seq taskset -c 1 wrk -t1 -c"$CONNS" -d$(( $(wc -l < "$work/hot10k.txt") / 1500 + 2 ))s -s "$LUA" "http://127.0.0.1:$P_OURS" >/dev/null
  curl -sf -o /dev/null "http://127.0.0.1:$P_OURS/jwt/v1/accounts/$first_key"
  misses=$(metric nas_cache_misses_total "$P_OURS")
  for r in $(seq "$ROUNDS"); do
    read -r h_rps h_cpu _ <<<"$(measure "$OURS_PID" 1 "http://127.0.0.1:$P_OURS/jwt/v1/accounts/$first_key")"
    read -r nh_rps nh_cpu _ <<<"$(measure "$NGINX_WORKER" 1 "http://127.0.0.1:$P_NGINX/jwt/v1/accounts/$first_key")"
    read -r x_rps x_cpu _ <<<"$(measure "$OURS_PID" 1 "http://127.0.0.1:$P_OURS" "$work/hot10k.txt" random)"
    read -r nx_rps nx_cpu _ <<<"$(measure "$NGINX_WORKER" 1 "http://127.0.0.1:$P_NGINX" "$work/hot10k.txt" random)"
    row "cached, one hot key, round $r: req/s" "$h_rps" "$nh_rps" "$(awk -v a="$h_rps" -v b="$nh_rps" 'BEGIN {printf "%.2f", a / b}')" "CPU µs/req ours $h_cpu, nginx $nh_cpu"
    row "cached, 10k random keys, round $r: req/s" "$x_rps" "$nx_rps" "$(awk -v a="$x_rps" -v b="$nx_rps" 'BEGIN {printf "%.2f", a / b}')" "CPU µs/req ours $x_cpu, nginx $nx_cpu"
    row "random / hot CPU, round $r" "$(awk -v a="$x_cpu" -v b="$h_cpu" 'BEGIN {printf "%.2f", a / b}')" "$(awk -v a="$nx_cpu" -v b="$nh_cpu" 'BEGIN {printf "%.2f", a / b}')" – ""
    results+=("cached $h_rps $h_cpu $nh_rps $nh_cpu $x_rps $x_cpu $nx_rps $nx_cpu")
  done
  after=$(metric nas_cache_misses_total "$P_OURS")
  row "cache misses during cached runs" "$((after - misses))" – – "after $misses warm-up misses"
  stop_ours
  stop_nginx

  # The whole store cached: RSS per cached account.
  if [ "$N" -le "$FULL_MAX" ]; then
    start_ours "" "$N"
    base=$(rss_kib "$OURS_PID")
    KEYS=$work/shuffled.txt ORDER=seq wrk -t1 -c"$CONNS" -d$(( N / 2000 + 3 ))s -s "$LUA" "http://127.0.0.1:$P_OURS" >/dev/null
    misses=$(metric nas_cache_misses_total "$P_OURS")
    full=$(rss_kib "$OURS_PID")
    row "whole store cached: RSS" "$((full / 1024)) MiB" – – "$misses misses; start RSS $((base / 1024)) MiB; $(awk -v a="$full" -v b="$base" -v n="$N" 'BEGIN {printf "%.2f KiB", (a - b) / n}') per cached account"
    stop_ours
  fi
done
printf '%s\n' "${results[@]}" | awk '
  $1=="cold_pinned" { n++; orps+=$2; ocpu+=$3; nrps+=$4; ncpu+=$5 }
  $1=="cached" { m++; h+=$3; nh+=$5; x+=$7; nx+=$9; hr+=$2; nhr+=$4 }
  END {
    if (n) printf "\nall sizes, cold pinned: CPU/req ours/nginx %.2f, req/s ours/nginx %.2f\n", ocpu/ncpu, orps/nrps
    if (m) printf "all sizes, cached: random/hot CPU ours %.2f (nginx %.2f); hot key req/s ours/nginx %.2f\n", x/h, nx/nh, hr/nhr
  }'
echo "load average at the end: $(load_avg)"
