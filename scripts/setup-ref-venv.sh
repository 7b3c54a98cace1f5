#!/usr/bin/env bash
# Python reference venv (.venv-ref): OpenCV, NumPy for golden fixtures and benchmark peers.
# Not needed to build or run drscreen; scripts/test.sh uses it to check the shipped models.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv-ref/bin/python ] || python3 -m venv .venv-ref
.venv-ref/bin/pip install -q -r scripts/requirements-ref.txt
