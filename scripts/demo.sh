#!/usr/bin/env bash
# The main job on one photo. Builds edge-runtime (release) and runs it.
# Usage: scripts/demo.sh [PHOTO]   (default: a real IDRiD photo from the golden fixtures)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo >/dev/null || { echo "cargo not found: install Rust (https://rustup.rs)" >&2; exit 1; }
photo="${1:-shared/tests/fixtures/core/fundus_full_IDRiD_001/input.png}"
mkdir -p out
cargo build --release -q -p edge-runtime
bin=target/release/edge-runtime
"$bin" preprocess "$photo" --stage clahe --out out/equalised.png
"$bin" preprocess "$photo" --stage resized --out out/model-input.png
"$bin" preprocess "$photo" --stage resized --out out/model-input.npy
echo "wrote out/equalised.png (CLAHE on L*, full size), out/model-input.png and out/model-input.npy (what the network sees)"
