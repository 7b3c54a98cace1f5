#!/usr/bin/env python3
"""Fresh random photos of random sizes through `edge-runtime preprocess` vs OpenCV (not fixtures).

    cargo build --release -p edge-runtime
    .venv-ref/bin/python scripts/check_preprocess_random.py --n 200 [--seed S] [--data ../shared/data]

Images: uniform noise, smooth random fields, and random crops/rescales of real fundus photos.
Each is written as PNG, run through both stages (clahe -> PNG, resized -> .npy), and compared
with OpenCV byte for byte (the .npy as float32 x/255). Exits non-zero on any difference.
"""
import argparse
import pathlib
import subprocess
import sys
import tempfile

import cv2
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent


def photo(rng, data_imgs):
    h, w = int(rng.integers(1, 900)), int(rng.integers(1, 1300))
    kind = rng.integers(0, 3)
    if kind == 0 or not data_imgs:
        return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    if kind == 1:
        small = rng.integers(0, 256, (max(1, h // 16), max(1, w // 16), 3), dtype=np.uint8)
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    src = cv2.cvtColor(cv2.imread(str(data_imgs[rng.integers(len(data_imgs))])), cv2.COLOR_BGR2RGB)
    y0, x0 = int(rng.integers(0, src.shape[0] // 2)), int(rng.integers(0, src.shape[1] // 2))
    crop = src[y0:, x0:]
    return cv2.resize(crop, (w, h), interpolation=cv2.INTER_AREA)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--data", type=pathlib.Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--bin", type=pathlib.Path, default=ROOT / "target" / "release" / "edge-runtime")
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    data_imgs = sorted((args.data / "idrid" / "images").glob("*.jpg")) + sorted((args.data / "srahim" / "images").glob("*.jpg"))
    clahe = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8))
    bad = 0
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        for i in range(args.n):
            rgb = photo(rng, data_imgs)
            cv2.imwrite(str(tmp / "in.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2Lab)
            eq = cv2.cvtColor(cv2.merge([clahe.apply(np.ascontiguousarray(lab[:, :, 0])), lab[:, :, 1], lab[:, :, 2]]), cv2.COLOR_Lab2RGB)
            want = cv2.resize(eq, (96, 96), interpolation=cv2.INTER_LINEAR).astype(np.float32) / 255.0
            want = want.transpose(2, 0, 1)[None]
            for stage, out in (("clahe", "eq.png"), ("resized", "x.npy")):
                subprocess.run([str(args.bin), "preprocess", str(tmp / "in.png"), "--out", str(tmp / out), "--stage", stage], check=True)
            got_eq = cv2.cvtColor(cv2.imread(str(tmp / "eq.png")), cv2.COLOR_BGR2RGB)
            got = np.load(tmp / "x.npy")
            ok_eq, ok_x = np.array_equal(got_eq, eq), np.array_equal(got, want)
            if not (ok_eq and ok_x):
                bad += 1
                print(f"MISMATCH #{i} {rgb.shape}: clahe {'ok' if ok_eq else 'DIFF'}, resized {'ok' if ok_x else 'DIFF'}")
    print(f"{args.n - bad}/{args.n} random photos identical to OpenCV {cv2.__version__} (clahe stage and resized tensor)")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
