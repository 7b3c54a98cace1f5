#!/usr/bin/env python3
"""Inference latency of model files: tract (edge-runtime's profile_model example) vs onnxruntime,
same files, same run, batch 1 (one view) and batch 5 (all TTA views), 1 and 2 threads.

    scripts/setup-ref-venv.sh && .venv-ref/bin/python scripts/bench_models.py MODEL.onnx [...] [--runs 20]

Input size comes from each model's contract. Prints a Markdown table of per-call medians (ms; tract:
mean over --runs after a warm-up) and the ratio tract/onnxruntime.
"""
import argparse
import json
import os
import pathlib
import re
import subprocess
import time

import numpy as np
import onnx
import onnxruntime as ort

ROOT = pathlib.Path(__file__).resolve().parent.parent


def ort_ms(model, batch, size, threads, runs):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((batch, 3, size, size), dtype=np.float32)
    sess.run(None, {"input": x})
    t = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sess.run(None, {"input": x})
        t.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(t))


def tract_ms(model, batch, size, runs):
    exe = ROOT / "target" / "release" / "examples" / "profile_model"
    out = subprocess.run([str(exe), str(model), "--batch", str(batch), "--size", str(size),
                          "--runs", str(runs), "--top", "0"], check=True, capture_output=True, text=True).stdout
    return float(re.search(r"([0-9.]+) ms per run", out).group(1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="+", type=pathlib.Path)
    ap.add_argument("--runs", type=int, default=20)
    a = ap.parse_args()
    subprocess.run(["cargo", "build", "-q", "--release", "-p", "edge-runtime", "--example", "profile_model"], cwd=ROOT, check=True)
    print(f"{os.cpu_count()} cores; onnxruntime {ort.__version__}\n")
    # tract runs one thread (the edge spreads views over threads, not one call's kernels).
    print("| model | size | MB | batch | ORT threads | tract ms (1 thread) | onnxruntime ms | tract/ORT |")
    print("|---|---|---|---|---|---|---|---|")
    for m in a.models:
        meta = {p.key: p.value for p in onnx.load(str(m)).metadata_props}
        size = json.loads(meta["drscreen.contract"])["input"]["width"]
        mb = m.stat().st_size / 1e6
        for batch in (1, 5):
            t = tract_ms(m.resolve(), batch, size, a.runs)
            for threads in (1, 2):
                o = ort_ms(m, batch, size, threads, a.runs)
                print(f"| {m.name} | {size} | {mb:.1f} | {batch} | {threads} | {t:.1f} | {o:.1f} | {t / o:.2f} |", flush=True)


if __name__ == "__main__":
    main()
