#!/usr/bin/env python3
"""Int8 files against their float file on every photo of a prepared cache split, in onnxruntime
(the same bits as tract on the `convinteger` forms): TTA probability difference (max; p99 by
nearest rank, as the export reports it, so the max itself below 100 photos; root mean square), per-view logit difference (mean: a shift; std: the noise), and the decisions that
differ at the contract's default threshold, with how many of them turn a referral into none and,
by the cache's labels, how many diseased eyes the int8 file loses (the float file refers them, the
int8 file does not) and gains.

`--camera-jitter SEED` gives every photo a seeded camera-like colour change first (per-channel
gains 0.85-1.15, gamma 0.8-1.25, as `host-trainer export --calib-jitter`): a label-free look at
how an int8 file reads photos that differ from its calibration set's camera.

    .venv-ref/bin/python scripts/int8_vs_float.py models/drscreen-default.onnx \
        models/drscreen-default-int8.onnx [more int8 files] --cache out/cache/srahim224 --split test

The views are the float file's contract TTA views; each file's outputs are kept beside it in
`--keep DIR` (default: none) so that a rerun only runs new files.
"""
import argparse
import json
import pathlib
import sys

import numpy as np
import onnx
import onnxruntime as ort

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from check_models import has_float_conv_between_quantized, views  # noqa: E402


def contract(path):
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    if "drscreen.contract" not in meta:
        raise SystemExit(f"{path}: no drscreen contract in its metadata")
    return json.loads(meta["drscreen.contract"])


def kept_path(keep, model, tag):
    """Where `--keep DIR` saves a file's per-view probabilities on one split (`tag`)."""
    return pathlib.Path(keep) / f"{pathlib.Path(model).name}.{tag}.npy"


def diseased_eyes(cache, manifest, split, n):
    """The cache's grades of one split, in the split's photo order."""
    entries = sorted((e for e in manifest["entries"] if e["split"] == split), key=lambda e: e["index"])
    if len(entries) != n:
        raise SystemExit(f"{cache}: the manifest lists {len(entries)} {split} photos, the split holds {n}")
    return np.array([bool(e["label"]) for e in entries])


def p99(d):
    """By nearest rank, as the export reports it (below 100 photos, the max)."""
    return np.percentile(d, 99, method="inverted_cdf")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("float_model")
    ap.add_argument("int8_models", nargs="+")
    ap.add_argument("--cache", required=True)
    ap.add_argument("--split", default="val")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--keep", metavar="DIR",
                    help="save each file's per-view probabilities in DIR and read them back on the next run; "
                         "they are keyed by file name and split, so delete them when a file is written again")
    ap.add_argument("--camera-jitter", type=int, metavar="SEED")
    a = ap.parse_args()

    c = contract(a.float_model)
    t = c["thresholds"][c["thresholds"]["default"]]
    cache = pathlib.Path(a.cache)
    manifest = json.loads((cache / "manifest.json").read_text())
    if a.split not in manifest["splits"]:
        raise SystemExit(f"{cache}: no {a.split} split (it has {', '.join(manifest['splits'])})")
    split = manifest["splits"][a.split]
    size = manifest["spec"]["size"]
    if size != c["input"]["width"]:
        raise SystemExit(f"{cache} holds {size} px photos, {a.float_model} reads {c['input']['width']} px")
    raw = np.fromfile(cache / split["file"], dtype=np.uint8)
    n = split["count"]
    if raw.size != n * size * size * 3:
        raise SystemExit(f"{cache}: {split['file']} holds {raw.size} bytes, not {n} photos")
    photos = raw.reshape(n, size, size, 3)
    diseased = diseased_eyes(cache, manifest, a.split, n)
    tag = a.split
    if a.camera_jitter is not None:
        rng = np.random.default_rng(a.camera_jitter)

        def jitter(x):
            gain, gamma = rng.uniform(0.85, 1.15, 3), rng.uniform(0.8, 1.25)
            return np.clip(255 * (x / 255.0) ** gamma * gain, 0, 255).round().astype(np.uint8)

        photos = np.stack([jitter(p) for p in photos])
        tag = f"{a.split}.jitter{a.camera_jitter}"
    def session_options(path):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = a.threads
        if has_float_conv_between_quantized(path):
            # A `--float-weights` file: onnxruntime's graph optimisations rewrite its
            # DequantizeLinear -> Conv -> QuantizeLinear sandwiches and change the outputs (0.92 ->
            # 0.95 on one photo, where tract and onnxruntime unoptimised agree); run it as written.
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            print(f"{path}: float convolutions between quantized tensors, onnxruntime's graph optimisations off")
        return opts

    def run(path):
        kept = kept_path(a.keep, path, tag) if a.keep else None
        if kept and kept.exists():
            return np.load(kept)
        try:
            sess = ort.InferenceSession(str(path), session_options(path), providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own types for unreadable files
            raise SystemExit(f"{path}: onnxruntime cannot load it: {e}")
        out = np.array([sess.run(None, {"input": views(p, c["tta"])})[0].ravel() for p in photos])
        if kept:
            kept.parent.mkdir(parents=True, exist_ok=True)
            np.save(kept, out)
        return out

    def logit(p):
        p = np.clip(p.astype(np.float64), 1e-7, 1 - 1e-7)
        return np.log(p / (1 - p))

    f = run(a.float_model)
    fp = f.mean(axis=1)
    refer = fp >= t
    jittered = "" if a.camera_jitter is None else f", camera jitter seed {a.camera_jitter}"
    print(f"{n} photos of {cache} ({a.split}{jittered}), threshold {t:.4f}, onnxruntime {ort.__version__}; "
          f"the float file refers {int(np.sum(refer & diseased))} of {int(diseased.sum())} diseased eyes")
    print("int8 file | max | p99 | rms | logit shift | logit std | agreement | flips (to no referral) "
          "| diseased eyes lost / gained")
    for path in a.int8_models:
        i = run(path)
        ip = i.mean(axis=1)
        d = np.abs(ip - fp)
        dl = logit(i) - logit(f)
        flips = refer != (ip >= t)
        down = flips & refer
        print(f"{pathlib.Path(path).name} | {d.max():.4f} | {p99(d):.4f} | "
              f"{np.sqrt(np.mean(d ** 2)):.4f} | {dl.mean():+.4f} | {dl.std():.4f} | "
              f"{100 * (1 - flips.mean()):.1f} % | {int(flips.sum())} ({int(down.sum())}) | "
              f"{int(np.sum(down & diseased))} / {int(np.sum(flips & ~refer & diseased))}")


if __name__ == "__main__":
    main()
