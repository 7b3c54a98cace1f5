#!/usr/bin/env bash
# The main job: screen fundus photos with the shipped default model (models/drscreen-default.onnx).
# Builds edge-runtime (release; no libtorch, no Python needed) and runs it.
# Usage: scripts/demo.sh [PHOTO ...]
#   default photos: a real IDRiD photo (CC BY 4.0) from the test fixtures, a synthetic grade-4
#   photo, a degraded (blurred) copy of the real one, and a file that is not an image.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo >/dev/null || { echo "cargo not found: install Rust (https://rustup.rs)" >&2; exit 1; }
mkdir -p out
echo "building edge-runtime (release; a few minutes the first time, seconds after)"
cargo build --release -q -p edge-runtime
bin=target/release/edge-runtime
if [ "$#" -gt 0 ]; then
  photos=("$@")
else
  "$bin" preprocess edge-runtime/tests/fixtures/fundus_rgb.jpg --stage clahe --out out/equalised.png
  photos=(edge-runtime/tests/fixtures/fundus_rgb.jpg models/golden/synth_grade4.jpeg README.md)
fi
"$bin" screen "${photos[@]}" --log out/drscreen-results.jsonl
echo "results log: out/drscreen-results.jsonl (one JSON line per photo, fsync'd before each line above was printed)"
