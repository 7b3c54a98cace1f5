#!/usr/bin/env python3
"""Whether an int8 file's error on one set of photos predicts its error on another: reads what
`int8_vs_float.py --keep DIR` kept for the float file and each int8 file on IDRiD's training and
validation splits and SRahim's test split, and prints per file the validation max and rms, the
p99 and rms on the training photos the file was *not* calibrated on (its golden JSON records how
many photos and the offset; `host-trainer`'s `calibration_indices` picks them), the p99 pooled
over those and the validation photos, SRahim's p99, rms and diseased eyes lost, and then the rank
correlations (Spearman, tied ranks averaged) between those figures over the files.

    for s in "idrid224 train" "idrid224 val" "srahim224 test"; do set -- $s
      .venv-ref/bin/python scripts/int8_vs_float.py models/drscreen-default.onnx FILES... \\
          --cache out/cache/$1 --split $2 --keep out/keep; done
    .venv-ref/bin/python scripts/int8_draws.py models/drscreen-default.onnx FILES... --keep out/keep

p99 is by nearest rank, as the export and `int8_vs_float.py` report it; the threshold is the
float file's contract default.
"""
import argparse
import json
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from int8_vs_float import contract, diseased_eyes, kept_path, p99  # noqa: E402


def rms(d):
    return float(np.sqrt(np.mean(d**2)))


def ranks(a):
    """Ranks from 0 with ties given their mean rank."""
    a = np.asarray(a, dtype=np.float64)
    order = np.argsort(a, kind="stable")
    r = np.empty(len(a))
    r[order] = np.arange(len(a))
    for v in np.unique(a):
        tied = a == v
        r[tied] = r[tied].mean()
    return r


def spearman(a, b):
    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def calibration_indices(length, n, offset):
    """The training photos `host-trainer export --calib n --calib-offset offset` calibrates on."""
    return {(i * length // n + offset) % length for i in range(n)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("float_model")
    ap.add_argument("int8_models", nargs="+")
    ap.add_argument("--keep", required=True, metavar="DIR", help="what int8_vs_float.py --keep kept")
    ap.add_argument("--srahim", default="out/cache/srahim224")
    a = ap.parse_args()
    keep = pathlib.Path(a.keep)

    def kept(path, split):
        f = kept_path(keep, path, split)
        if not f.exists():
            raise SystemExit(f"{f} is missing: run int8_vs_float.py {path} ... --split {split} --keep {keep}")
        return np.load(f).mean(axis=1)  # TTA probability per photo

    ft, fv, fs = (kept(a.float_model, s) for s in ("train", "val", "test"))
    c = contract(a.float_model)
    t = c["thresholds"][c["thresholds"]["default"]]
    srahim = pathlib.Path(a.srahim)
    diseased = diseased_eyes(srahim, json.loads((srahim / "manifest.json").read_text()), "test", len(fs))
    rows = []
    for path in a.int8_models:
        golden = pathlib.Path(path).parent / (pathlib.Path(path).stem + ".golden.json")
        if not golden.exists():
            raise SystemExit(f"{golden} is missing: it records how {path} was calibrated")
        q = json.loads(golden.read_text())["quantization"]
        held = sorted(set(range(len(ft))) - calibration_indices(
            len(ft), q["calibration_photos"], q.get("calibration_offset", 0)))
        dt = np.abs(kept(path, "train")[held] - ft[held])
        dv = np.abs(kept(path, "val") - fv)
        qs = kept(path, "test")
        ds = np.abs(qs - fs)
        lost = int(np.sum((fs >= t) & (qs < t) & diseased))
        rows.append(dict(name=pathlib.Path(path).name, val_max=float(dv.max()), val_rms=rms(dv),
                         train_p99=p99(dt), train_rms=rms(dt), held=len(held),
                         pooled_p99=p99(np.concatenate([dt, dv])), srahim_p99=p99(ds),
                         srahim_rms=rms(ds), lost=lost))
    print("int8 file | val max | val rms | held-out training p99 / rms (photos) | pooled IDRiD p99 "
          "| SRahim p99 | SRahim rms | SRahim diseased eyes lost")
    for r in rows:
        print(f"{r['name']} | {r['val_max']:.3f} | {r['val_rms']:.4f} | {r['train_p99']:.3f} / "
              f"{r['train_rms']:.4f} ({r['held']}) | {r['pooled_p99']:.3f} | {r['srahim_p99']:.3f} | "
              f"{r['srahim_rms']:.4f} | {r['lost']}")
    pooled = np.array([r["pooled_p99"] for r in rows])
    print(f"\npooled IDRiD p99 over {len(rows)} files: median {np.median(pooled):.3f}, "
          f"range {pooled.min():.3f}-{pooled.max():.3f}, {int(np.sum(pooled <= 0.03))} at or below 0.03")
    if len(rows) < 4:
        return
    print("\nthis figure | against | rank r")
    for x, y in [("train_p99", "val_max"), ("train_p99", "srahim_p99"), ("train_rms", "val_rms"),
                 ("train_rms", "srahim_rms"), ("val_rms", "srahim_rms"), ("val_max", "srahim_p99"),
                 ("train_rms", "lost"), ("val_max", "lost"), ("pooled_p99", "srahim_p99")]:
        print(f"{x} | {y} | {spearman([r[x] for r in rows], [r[y] for r in rows]):+.2f}")


if __name__ == "__main__":
    main()
