#!/usr/bin/env bash
# Long run of the newest-wins history check (tests/history.rs): three account-server processes
# on one durable redis-server, concurrent POSTs and GETs, faults injected throughout.
#   bash scripts/soak.sh            # 600 s, random seed (printed)
#   SECS=120 SEED=42 bash scripts/soak.sh
#   ONLY=nats bash scripts/soak.sh   # just the directory-store + NATS run (ONLY=redis: the other)
# Bounded: it stops by itself after SECS seconds plus convergence; 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/install-test-deps.sh >/dev/null
export NAS_HISTORY_SECS="${SECS:-600}"
if [ -n "${SEED:-}" ]; then export NAS_HISTORY_SEED="$SEED"; fi
filter=()
case "${ONLY:-}" in
  redis) filter=(history_of_concurrent) ;;
  nats) filter=(history_on_a_directory) ;;
esac
exec cargo test --release --test history -- --nocapture --test-threads 1 "${filter[@]}"
