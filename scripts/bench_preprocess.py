#!/usr/bin/env python3
"""Preprocessing benchmark: drscreen-core vs OpenCV on the same pixels, one thread, decode excluded.

    scripts/setup-ref-venv.sh && .venv-ref/bin/python scripts/bench_preprocess.py [--data ../shared/data]

Photos: IDRiD_001 (1024x680 as shipped in ../shared/data) and the same photo upscaled to 3888x2592
(INTER_CUBIC) to stand in for a full camera frame. Both sides get identical RGB bytes (saved as PNG).
OpenCV runs the seed chain (cvtColor, CLAHE on L, merge, cvtColor, resize INTER_LINEAR, /255) with
cv2.setNumThreads(1); drscreen-core runs `cargo bench --bench pipeline`. Prints a Markdown table.
"""
import argparse
import json
import os
import pathlib
import platform
import subprocess
import time

import cv2
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent


def opencv_pipeline(rgb, clahe):
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2Lab)
    l, a, b = cv2.split(lab)
    eq = cv2.cvtColor(cv2.merge([clahe.apply(l), a, b]), cv2.COLOR_Lab2RGB)
    x = cv2.resize(eq, (96, 96), interpolation=cv2.INTER_LINEAR).astype(np.float32) / 255.0
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def timed(f, runs):
    f()
    t = []
    for _ in range(runs):
        s = time.perf_counter()
        f()
        t.append((time.perf_counter() - s) * 1e3)
    t.sort()
    return t[len(t) // 2], t[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=pathlib.Path, default=ROOT.parent / "shared" / "data")
    args = ap.parse_args()
    cv2.setNumThreads(1)
    out = ROOT / "target" / "bench-photos"
    out.mkdir(parents=True, exist_ok=True)
    src = cv2.imread(str(args.data / "idrid" / "images" / "IDRiD_001_train.jpg"))
    photos = {"1024x680": src, "3888x2592": cv2.resize(src, (3888, 2592), interpolation=cv2.INTER_CUBIC)}
    paths = []
    for name, bgr in photos.items():
        p = out / f"fundus_{name}.png"
        cv2.imwrite(str(p), bgr)
        paths.append(p)
    env = dict(os.environ, RAYON_NUM_THREADS="1")
    res = subprocess.run(["cargo", "bench", "-q", "-p", "drscreen-core", "--bench", "pipeline", "--"] + [str(p) for p in paths],
                         cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    rust = [json.loads(l) for l in res.stdout.splitlines() if l.startswith("{")]
    clahe = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8))
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; OpenCV {cv2.__version__}, one thread\n")
    print("| photo | drscreen-core pipeline (ms, median) | OpenCV pipeline (ms, median) | ratio core/OpenCV |")
    print("|---|---|---|---|")
    for name, p in zip(photos, paths):
        rgb = cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB)
        runs = 15 if rgb.size > 12_000_000 else 50
        cv_med, _ = timed(lambda: opencv_pipeline(rgb, clahe), runs)
        ours = next(r for r in rust if r["photo"] == str(p) and r["stage"] == "pipeline")
        print(f"| {name} | {ours['median_ms']:.2f} | {cv_med:.2f} | {ours['median_ms'] / cv_med:.2f} |")
    print("\nStages of drscreen-core (median ms):\n")
    print("| photo | " + " | ".join(s for s in ["pipeline", "l_plane", "clahe_luts", "equalise_full_frame", "tta_5_views"]) + " |")
    print("|---|---|---|---|---|---|")
    for name, p in zip(photos, paths):
        row = {r["stage"]: r["median_ms"] for r in rust if r["photo"] == str(p)}
        print(f"| {name} | " + " | ".join(f"{row[s]:.2f}" for s in ["pipeline", "l_plane", "clahe_luts", "equalise_full_frame", "tta_5_views"]) + " |")
    # OpenCV's full-frame equalise for the like-for-like comparison of the full-resolution work.
    print("\nOpenCV full-frame equalise only (cvtColor + CLAHE + cvtColor, ms median):\n")
    for name, p in zip(photos, paths):
        rgb = cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB)
        def eq():
            lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2Lab)
            l, a, b = cv2.split(lab)
            return cv2.cvtColor(cv2.merge([clahe.apply(l), a, b]), cv2.COLOR_Lab2RGB)
        print(f"- {name}: {timed(eq, 15)[0]:.2f}")


if __name__ == "__main__":
    main()
