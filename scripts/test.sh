#!/usr/bin/env bash
# Installs the real test services, then runs the whole workspace test suite.
# Extra arguments go to `cargo test --workspace`, e.g. `bash scripts/test.sh -- --nocapture`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/install-test-deps.sh
exec cargo test --workspace "$@"
