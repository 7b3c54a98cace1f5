#!/usr/bin/env python3
"""Screening latency: edge-runtime (tract) vs a Python peer (OpenCV decode + OpenCV preprocessing +
onnxruntime) on the same JPEGs and the same ONNX files, in one run.

    scripts/setup-ref-venv.sh && .venv-ref/bin/python scripts/bench_screen.py MODEL.onnx [MODEL.onnx ...]

Photos: IDRiD_001 as shipped (1024x680 JPEG) and the same photo upscaled to 3888x2592 (JPEG q92),
standing in for a camera frame. Both sides: decode, (edge: quality gate), preprocess, the contract's
5 TTA views, mean. The edge runs its views one call each, spread over 1 or 2 threads (the device
path), and, for comparison, all in one batched call; the peer makes one batched onnxruntime call
with 1 or 2 intra-op threads. Prints a Markdown table (medians, ms).
"""
import argparse
import json
import os
import pathlib
import resource
import subprocess
import time

import cv2
import numpy as np
import onnx
import onnxruntime as ort

ROOT = pathlib.Path(__file__).resolve().parent.parent


def peer(model, photo, threads, runs=15):
    m = onnx.load(str(model))
    contract = json.loads({p.key: p.value for p in m.metadata_props}["drscreen.contract"])
    s = contract["input"]["width"]
    c = contract["clahe"]
    clahe = cv2.createCLAHE(clipLimit=c["clip_limit"], tileGridSize=(c["tiles_x"], c["tiles_y"]))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    data = np.fromfile(photo, np.uint8)
    times = []
    for i in range(runs + 1):
        t0 = time.perf_counter()
        rgb = cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        t1 = time.perf_counter()
        lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2Lab)
        l, a, b = cv2.split(lab)
        eq = cv2.cvtColor(cv2.merge([clahe.apply(l), a, b]), cv2.COLOR_Lab2RGB)
        x = (cv2.resize(eq, (s, s), interpolation=cv2.INTER_LINEAR).astype(np.float32) / np.float32(255)).transpose(2, 0, 1)
        batch = np.ascontiguousarray(np.stack([x, x[:, :, ::-1], x[:, ::-1, :], x[:, ::-1, ::-1], np.clip(x * np.float32(1.1), 0, 1)]))
        t2 = time.perf_counter()
        p = sess.run(None, {"input": batch})[0].mean()
        t3 = time.perf_counter()
        if i:
            times.append(((t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3, (t3 - t0) * 1e3))
    return [float(np.median([t[k] for t in times])) for k in range(4)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="+", type=pathlib.Path)
    ap.add_argument("--data", type=pathlib.Path, default=ROOT.parent / "shared" / "data")
    a = ap.parse_args()
    out = ROOT / "target" / "bench-photos"
    out.mkdir(parents=True, exist_ok=True)
    src = a.data / "idrid" / "images" / "IDRiD_001_train.jpg"
    big = out / "IDRiD_001_3888x2592.jpg"
    cv2.imwrite(str(big), cv2.resize(cv2.imread(str(src)), (3888, 2592), interpolation=cv2.INTER_CUBIC), [cv2.IMWRITE_JPEG_QUALITY, 92])
    photos = [("1024x680", src), ("3888x2592", big)]
    subprocess.run(["cargo", "build", "-q", "--release", "-p", "edge-runtime", "--benches"], cwd=ROOT, check=True)
    print(f"{os.cpu_count()} cores; OpenCV {cv2.__version__}, onnxruntime {ort.__version__}\n")
    print("| model | photo | threads | edge views | edge total | decode | quality | preprocess | 5-view inference | peer total (OpenCV+ORT) | peer inference | ratio edge/peer |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    rss = {}
    for model in a.models:
        for threads, views in ((1, "per-view"), (2, "per-view"), (1, "one-batch")):
            flags = ["--one-batch"] if views == "one-batch" else []
            res = subprocess.run(["cargo", "bench", "-q", "-p", "edge-runtime", "--bench", "screening", "--", "--model", str(model.resolve()),
                                  "--threads", str(threads)] + flags + [str(p.resolve()) for _, p in photos], cwd=ROOT, check=True, capture_output=True, text=True)
            lines = [json.loads(l) for l in res.stdout.splitlines() if l.startswith("{")]
            rss[(model.name, threads, views)] = next(l["peak_rss_kb"] for l in lines if "peak_rss_kb" in l)
            for name, p in photos:
                e = next(l for l in lines if l.get("photo") == str(p.resolve()))
                d, pre, inf, tot = peer(model, p, threads)
                print(f"| {model.name} | {name} | {threads} | {views} | {e['total_ms']:.1f} | {e['decode_ms']:.1f} | {e['quality_ms']:.1f} | "
                      f"{e['preprocess_ms']:.1f} | {e['inference_ms']:.1f} | {tot:.1f} | {inf:.1f} | {e['total_ms'] / tot:.2f} |")
    print("\nPeak RSS of the edge bench process (model loaded, both photos screened):")
    for (m, t, v), kb in rss.items():
        print(f"- {m}, {t} thread(s), {v}: {kb / 1024:.0f} MiB")
    print(f"- Python peer process (all runs): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
