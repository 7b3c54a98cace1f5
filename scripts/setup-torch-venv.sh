#!/usr/bin/env bash
# Project venv (.venv) with the PyTorch wheel that tch 0.26 links against (torch==2.13.0, ~4.7 GB;
# the same wheel carries CUDA, so a GPU machine trains on the GPU). Only host-trainer needs it.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
if ! .venv/bin/python -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '2.13.0')" 2>/dev/null; then
  # No pip cache: the wheels would take another ~3 GB of disk beside the venv.
  echo "installing torch 2.13.0 into .venv for host-trainer: a ~4.7 GB download, 5-15 minutes (once)"
  .venv/bin/pip install -q --no-cache-dir -r scripts/requirements-torch.txt
fi
