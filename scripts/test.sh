#!/usr/bin/env bash
# Sets up what the tests need and runs them all: format, lints, the no_std build, the test suite,
# and the shipped models checked with onnx and onnxruntime.
# Usage: scripts/test.sh        (CI runs exactly this through .ci/run)
# Needs: a Rust toolchain and python3 (for the torch venv host-trainer links against);
# the real data in ../shared/data beside the checkout, or DRSCREEN_DATA pointing at it.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo >/dev/null || { echo "cargo not found: install Rust (https://rustup.rs)" >&2; exit 1; }
rustup component add rustfmt clippy >/dev/null 2>&1 || true
# One full build, not an edit loop: incremental caches would add ~1 GB of disk for nothing.
export CARGO_INCREMENTAL=0
df -h . | awk 'NR==2 {print "== disk: " $4 " free before the build"}'

echo "== screening side builds without libtorch or Python"
env -u LIBTORCH -u LIBTORCH_USE_PYTORCH PATH="$(dirname "$(command -v cargo)"):/usr/bin:/bin" cargo build -q -p edge-runtime
echo "== no_std core"; cargo build -q -p drscreen-core --no-default-features

echo "== torch venv (host-trainer)"
scripts/setup-torch-venv.sh
# shellcheck source=/dev/null
source scripts/torch-env.sh

echo "== fmt"; cargo fmt --all --check
echo "== clippy"; cargo clippy --workspace --all-targets --all-features -- -D warnings
echo "== tests"; cargo test --workspace --all-features
echo "== the shipped models in the reference tools (onnx.checker; onnxruntime vs the golden files)"
scripts/setup-ref-venv.sh
.venv-ref/bin/python scripts/check_models.py
du -sh target .venv .venv-ref 2>/dev/null | awk '{printf "== disk used: %s %s\n", $2, $1}'
