# Shared by the load scripts in benches/ (sourced, not run): the binary under test, a work
# directory and the processes started, both removed on exit, and small helpers.

if [ -z "${BIN:-}" ]; then
  cargo build --release --quiet --bin nats-account-server
  BIN=${CARGO_TARGET_DIR:-target}/release/nats-account-server
fi

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

FIX=tests/fixtures/jwt
# The account key of a fixture entry of tests/fixtures/jwt/manifest.json.
sub_of() { python3 -c "import json;print([e for e in json.load(open('$FIX/manifest.json'))['entries'] if e['id']=='$1'][0]['sub'])"; }
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
