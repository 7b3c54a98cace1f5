#!/usr/bin/env python3
"""Checks shipped models with the reference tools: onnx.checker, then onnxruntime on the golden inputs.

    scripts/setup-ref-venv.sh && .venv-ref/bin/python scripts/check_models.py [models/NAME.onnx ...]

For each model: `onnx.checker.check_model(full_check=True)`, the contract JSON in metadata_props,
then the golden inputs (NAME.golden-inputs.npy: the preprocessed RGB8 photos) expanded into the
contract's TTA views in NumPy (float32, /255, flips, brightness x factor clipped to [0,1]) and run
in onnxruntime (one thread).
- float32 model: per-view probabilities must match the host's (tch) golden values within --tol
  (default 1e-4);
- int8 model: they must match tract's outputs for the same file (the golden file's
  `tract_per_view`, recorded at export) within --int8-tol (default 1/255, one 8-bit step of the
  probability); the distance to the host's float values is reported beside it.
Exits non-zero on any failure.
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


def has_float_conv_between_quantized(path):
    """Whether an int8 file keeps some convolutions' weights in float between uint8 activations."""
    graph = onnx.load(str(path), load_external_data=False).graph
    made_by = {o: n.op_type for n in graph.node for o in n.output}
    return any(n.op_type == "Conv" and made_by.get(n.input[0]) == "DequantizeLinear" for n in graph.node)


def check(model_path, tol, int8_tol):
    model = onnx.load(str(model_path))
    onnx.checker.check_model(model, full_check=True)
    meta = {p.key: p.value for p in model.metadata_props}
    contract = json.loads(meta["drscreen.contract"])
    golden = json.loads(model_path.with_suffix(".golden.json").read_text())
    inputs = np.load(model_path.with_suffix(".golden-inputs.npy"))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    if has_float_conv_between_quantized(model_path):
        # onnxruntime's graph optimisations rewrite a `--float-weights` file's
        # DequantizeLinear -> Conv -> QuantizeLinear sandwiches and change its outputs.
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"])
    int8 = golden.get("precision", "float32") == "int8"
    worst = vs_host = 0.0
    n = 0
    for sample, rgb in zip(golden["samples"], inputs):
        p = sess.run(None, {"input": views(rgb, contract["tta"])})[0].ravel()
        host = np.array(sample["per_view"], np.float32)
        ref = np.array(sample["tract_per_view"], np.float32) if int8 else host
        worst = max(worst, float(np.abs(p - ref).max()))
        vs_host = max(vs_host, float(np.abs(p - host).max()))
        n += 1
    bound = int8_tol if int8 else tol
    ok = worst <= bound
    against = "tract (same file)" if int8 else "host golden"
    extra = f"; vs host float max |diff| {vs_host:.2e}" if int8 else ""
    print(f"{model_path.name}: onnx.checker ok, contract v{contract['contract_version']} "
          f"{contract['input']['width']}px {'int8' if int8 else 'float32'}, onnxruntime "
          f"{ort.__version__} vs {against} on {n} photos: max |diff| {worst:.2e} "
          f"({'ok' if ok else f'FAIL > {bound}'}){extra}")
    return ok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="*", type=pathlib.Path)
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--int8-tol", type=float, default=1.0 / 255.0)
    a = ap.parse_args()
    models = a.models or sorted((ROOT / "models").glob("*.onnx"))
    if not models:
        sys.exit("no models given and none in models/")
    sys.exit(0 if all([check(m, a.tol, a.int8_tol) for m in models]) else 1)


if __name__ == "__main__":
    main()
