#!/usr/bin/env python3
"""Checks shipped models with the reference tools: onnx.checker, then onnxruntime on the golden inputs.

    scripts/setup-ref-venv.sh && .venv-ref/bin/python scripts/check_models.py [models/NAME.onnx ...]

For each model: `onnx.checker.check_model(full_check=True)`, the contract JSON in metadata_props,
then the golden inputs (NAME.golden-inputs.npy: the preprocessed RGB8 photos) expanded into the
contract's TTA views in NumPy (float32, /255, flips, brightness x factor clipped to [0,1]) and run
in onnxruntime (one thread). Per-view probabilities must match the host's (tch) golden values
within --tol (float default 1e-4). Exits non-zero on any failure.
"""
import argparse
import json
import pathlib
import sys

import numpy as np
import onnx
import onnxruntime as ort

ROOT = pathlib.Path(__file__).resolve().parent.parent


def views(rgb, tta):
    x = rgb.astype(np.float32) / np.float32(255.0)
    x = x.transpose(2, 0, 1)  # CHW
    out = []
    for v in tta:
        if v == "identity":
            out.append(x)
        elif v == "flip_h":
            out.append(x[:, :, ::-1])
        elif v == "flip_v":
            out.append(x[:, ::-1, :])
        elif v == "flip_h_v":
            out.append(x[:, ::-1, ::-1])
        elif isinstance(v, dict) and "brightness" in v:
            out.append(np.clip(x * np.float32(v["brightness"]), 0, 1))
        else:
            raise ValueError(f"unknown view {v}")
    return np.ascontiguousarray(np.stack(out), dtype=np.float32)


def check(model_path, tol):
    model = onnx.load(str(model_path))
    onnx.checker.check_model(model, full_check=True)
    meta = {p.key: p.value for p in model.metadata_props}
    contract = json.loads(meta["drscreen.contract"])
    golden = json.loads(model_path.with_suffix(".golden.json").read_text())
    inputs = np.load(model_path.with_suffix(".golden-inputs.npy"))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"])
    worst = 0.0
    for sample, rgb in zip(golden["samples"], inputs):
        p = sess.run(None, {"input": views(rgb, contract["tta"])})[0].ravel()
        worst = max(worst, float(np.abs(p - np.array(sample["per_view"], np.float32)).max()))
    ok = worst <= tol
    print(f"{model_path.name}: onnx.checker ok, contract v{contract['contract_version']} "
          f"{contract['input']['width']}px, onnxruntime {ort.__version__} vs host golden on "
          f"{len(golden['samples'])} photos: max |diff| {worst:.2e} ({'ok' if ok else f'FAIL > {tol}'})")
    return ok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="*", type=pathlib.Path)
    ap.add_argument("--tol", type=float, default=1e-4)
    a = ap.parse_args()
    models = a.models or sorted((ROOT / "models").glob("*.onnx"))
    if not models:
        sys.exit("no models given and none in models/")
    sys.exit(0 if all([check(m, a.tol) for m in models]) else 1)


if __name__ == "__main__":
    main()
