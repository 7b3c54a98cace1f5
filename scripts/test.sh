#!/usr/bin/env bash
# Sets up what the tests need and runs them all: format, lints, the no_std build, the test suite.
# Usage: scripts/test.sh        (CI runs exactly this through .ci/run)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo >/dev/null || { echo "cargo not found: install Rust (https://rustup.rs)" >&2; exit 1; }
rustup component add rustfmt clippy >/dev/null 2>&1 || true

echo "== fmt"; cargo fmt --all --check
echo "== clippy"; cargo clippy --workspace --all-targets --all-features -- -D warnings
echo "== no_std core"; cargo build -p drscreen-core --no-default-features
echo "== tests"; cargo test --workspace --all-features
