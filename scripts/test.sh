#!/usr/bin/env bash
# Installs the real test services, checks style (fmt, clippy, rustdoc with warnings denied),
# then runs the whole workspace test suite.
# Extra arguments go to `cargo test --workspace`, e.g. `bash scripts/test.sh -- --nocapture`.
# NAS_SKIP_LINT=1 skips the style checks (for quick local runs; CI never sets it).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/install-test-deps.sh
if [ "${NAS_SKIP_LINT:-}" != 1 ]; then
  cargo fmt --all -- --check
  cargo clippy --workspace --all-targets -- -D warnings
  # The shared backends are optional features: the binary must build without them.
  cargo clippy -p nats-account-server --no-default-features -- -D warnings
  RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps
fi
exec cargo test --workspace "$@"
