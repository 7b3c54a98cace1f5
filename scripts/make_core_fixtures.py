#!/usr/bin/env python3
"""Golden fixtures for drscreen-core: OpenCV's bytes for L*a*b*, CLAHE and resize.

Run by hand (not by CI) after changing the case list:
    scripts/setup-ref-venv.sh && .venv-ref/bin/python scripts/make_core_fixtures.py [--data ../shared/data]
Writes shared/tests/fixtures/core/: one folder per case with PNGs (lossless bytes) and manifest.json.
CI compares the Rust output with these files, byte for byte, without Python.

Every image is RGB (the PNGs store RGB; OpenCV is called with COLOR_RGB2Lab / COLOR_Lab2RGB).
"""
import argparse
import hashlib
import json
import pathlib
import shutil

import cv2
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "shared" / "tests" / "fixtures" / "core"


def write_png(path, img):
    # cv2.imwrite wants BGR for 3 channels; store RGB bytes exactly.
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    ok = cv2.imwrite(str(path), img, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    assert ok, path


def read_rgb(path):
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert bgr is not None, path
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def cases(data, rng):
    """Yields (name, rgb uint8 HxWx3, clip, (gx, gy), [(w, h), ...] resize targets)."""
    seed = [(96, 96)]
    # Random noise of many shapes, including sides that are not multiples of 8.
    for i, (h, w) in enumerate([(64, 64), (61, 83), (100, 37), (33, 250), (250, 33), (129, 131), (17, 9), (8, 8)]):
        yield f"random_{i}_{w}x{h}", rng.integers(0, 256, (h, w, 3), dtype=np.uint8), 2.0, (8, 8), seed + [(w + 7, h * 2), (max(1, w // 3), max(1, h // 2))]
    # Exact integer factors take OpenCV's "area fast" path (and INTER_LINEAR at 2x becomes INTER_AREA).
    yield "random_exact_factors_80x60", rng.integers(0, 256, (60, 80, 3), dtype=np.uint8), 2.0, (8, 8), [(40, 30), (20, 15), (16, 12), (40, 20), (27, 20)]
    # Tiny images: smaller than a tile, and than the grid.
    for h, w in [(1, 1), (3, 5), (5, 3), (7, 7), (2, 9)]:
        yield f"tiny_{w}x{h}", rng.integers(0, 256, (h, w, 3), dtype=np.uint8), 2.0, (8, 8), seed + [(w + 3, h + 2)]
    # Very wide and very tall.
    yield "wide_1000x9", rng.integers(0, 256, (9, 1000, 3), dtype=np.uint8), 2.0, (8, 8), seed + [(333, 4)]
    yield "row_200x1", rng.integers(0, 256, (1, 200, 3), dtype=np.uint8), 2.0, (8, 8), seed + [(50, 3)]
    yield "column_1x200", rng.integers(0, 256, (200, 1, 3), dtype=np.uint8), 2.0, (8, 8), seed + [(3, 50)]
    yield "tall_7x900", rng.integers(0, 256, (900, 7, 3), dtype=np.uint8), 2.0, (8, 8), seed + [(3, 450)]
    # Constant images.
    for v in (0, 255, 128):
        yield f"constant_{v}", np.full((50, 70, 3), v, np.uint8), 2.0, (8, 8), seed + [(35, 25)]
    # Saturated colours and smooth ramps (every hue corner, banding-prone gradients).
    sat = np.zeros((48, 64, 3), np.uint8)
    corners = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255), (255, 255, 255), (0, 0, 0)]
    for k, c in enumerate(corners):
        sat[:, k * 8:(k + 1) * 8] = c
    yield "saturated_bars", sat, 2.0, (8, 8), seed + [(32, 24), (128, 96)]
    x = np.linspace(0, 255, 200, dtype=np.float64)
    ramp = np.stack(np.broadcast_arrays(x[None, :], x[::-1, None] * 0.5, (x[None, :] + x[:, None]) % 256), -1).astype(np.uint8)
    yield "ramp_200", ramp, 2.0, (8, 8), seed + [(100, 100), (64, 50)]
    # Other clip limits and grids.
    base = rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)
    for clip, grid in [(0.0, (8, 8)), (1.0, (8, 8)), (4.0, (4, 4)), (40.0, (8, 8)), (2.0, (3, 5)), (2.0, (16, 16)), (0.5, (1, 1)), (3.0, (7, 2))]:
        yield f"params_clip{clip}_grid{grid[0]}x{grid[1]}", base, clip, grid, seed
    # Real fundus photos (downscaled copies; IDRiD CC BY 4.0, SRahim academic use).
    real = [
        ("idrid", "IDRiD_001_train.jpg"), ("idrid", "IDRiD_050_train.jpg"), ("idrid", "IDRiD_200_train.jpg"),
        ("srahim", "Patient001_L.jpg"), ("srahim", "Patient120_R.jpg"), ("srahim", "Patient254-R.jpg"), ("idrid", "IDRiD_300_train.jpg"),
    ]
    for k, (ds, name) in enumerate(real):
        path = data / ds / "images" / name
        if not path.exists():
            continue
        rgb = read_rgb(path)
        small = cv2.resize(rgb, (256 + 9 * k, 171 + 5 * k), interpolation=cv2.INTER_AREA)
        yield f"fundus_{ds}_{path.stem}", small, 2.0, (8, 8), seed + [(224, 224), (128, 85)]
        if k % 2 == 0:
            yield f"fundus_{ds}_{path.stem}_clip3_grid6", small, 3.0, (6, 6), seed
    # One full-size photo as the device sees it (1024x680), the real pipeline case.
    path = data / "idrid" / "images" / "IDRiD_001_train.jpg"
    if path.exists():
        yield "fundus_full_IDRiD_001", read_rgb(path), 2.0, (8, 8), seed + [(224, 224), (512, 340)]


def exhaustive_hashes():
    """SHA-256 of cvtColor over all 2^24 byte triples, in r-major order (r, g, b)."""
    idx = np.arange(1 << 24, dtype=np.uint32)
    trip = np.stack([(idx >> 16) & 255, (idx >> 8) & 255, idx & 255], -1).astype(np.uint8).reshape(4096, 4096, 3)
    lab = cv2.cvtColor(trip, cv2.COLOR_RGB2Lab)
    rgb = cv2.cvtColor(trip, cv2.COLOR_Lab2RGB)
    return hashlib.sha256(lab.tobytes()).hexdigest(), hashlib.sha256(rgb.tobytes()).hexdigest()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=pathlib.Path, default=ROOT.parent / "shared" / "data")
    args = ap.parse_args()
    cv2.setNumThreads(1)
    rng = np.random.default_rng(20261125)
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    manifest = {"opencv": cv2.__version__, "numpy": np.__version__, "cases": []}
    for name, rgb, clip, grid, targets in cases(args.data, rng):
        d = OUT / name
        d.mkdir()
        h, w = rgb.shape[:2]
        lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2Lab)
        clahe_l = cv2.createCLAHE(clipLimit=clip, tileGridSize=grid).apply(np.ascontiguousarray(lab[:, :, 0]))
        eq = cv2.cvtColor(cv2.merge([clahe_l, lab[:, :, 1], lab[:, :, 2]]), cv2.COLOR_Lab2RGB)
        full = not name.startswith("fundus_full")  # the full-size photo keeps only what the device uses
        write_png(d / "input.png", rgb)
        write_png(d / "equalised.png", eq)
        if full:
            write_png(d / "lab.png", lab)
            write_png(d / "lab2rgb.png", cv2.cvtColor(lab, cv2.COLOR_Lab2RGB))
            write_png(d / "clahe_l.png", clahe_l)
        resizes = []
        for tw, th in targets:
            for method, flag in (("linear", cv2.INTER_LINEAR), ("area", cv2.INTER_AREA)):
                for src_name, src in (("equalised", eq), ("input", rgb))[: 2 if full else 1]:
                    out = cv2.resize(src, (tw, th), interpolation=flag)
                    fname = f"resize_{src_name}_{method}_{tw}x{th}.png"
                    write_png(d / fname, out)
                    resizes.append({"source": src_name, "method": method, "width": tw, "height": th, "file": fname})
        manifest["cases"].append({
            "name": name, "width": w, "height": h, "stages": full, "clip_limit": clip, "tiles_x": grid[0], "tiles_y": grid[1],
            "resizes": resizes,
        })
    lab_hash, rgb_hash = exhaustive_hashes()
    manifest["exhaustive"] = {"rgb2lab_sha256": lab_hash, "lab2rgb_sha256": rgb_hash,
                              "order": "all 2^24 (r,g,b) triples, index = r<<16 | g<<8 | b"}
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"{len(manifest['cases'])} cases written to {OUT}")


if __name__ == "__main__":
    main()
