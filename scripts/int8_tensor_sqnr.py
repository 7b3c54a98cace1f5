#!/usr/bin/env python3
"""Which uint8 tensors of an int8 file are the coarsest: for every tensor the `ConvInteger` form
requantizes (`QuantizeLinear` with scale 1, whose input is the value in quanta), its spread in
quanta on real photos, the signal-to-quantization-noise ratio that gives (10 log10(12 var), the
rounding being uniform noise of 1/12 quantum^2), the share of a signed tensor's values that
saturate (outside the calibrated range), and how wide its
channels are against the tensor's range (a per-tensor scale is set by the widest channel).

    .venv-ref/bin/python scripts/int8_tensor_sqnr.py models/drscreen-default-int8.onnx \
        out/cache/idrid224 [--split val] [--photos 8] [--show 12]

CACHE is a host-trainer prepared cache (`host-trainer prepare`): `--photos` photos spread over
one of its splits (preprocessed RGB8) are the inputs, identity view.
"""
import argparse
import json
import pathlib

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("cache")
    ap.add_argument("--split", default="val")
    ap.add_argument("--photos", type=int, default=8)
    ap.add_argument("--show", type=int, default=12)
    a = ap.parse_args()

    m = onnx.load(a.model)
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    requant = [
        n for n in m.graph.node if n.op_type == "QuantizeLinear" and n.input[1] == "requant.one"
    ]
    if not requant:
        raise SystemExit(f"{a.model}: no ConvInteger-form requantization (QuantizeLinear, scale 1)")
    for n in requant:
        m.graph.output.append(helper.make_tensor_value_info(n.input[0], onnx.TensorProto.FLOAT, None))
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])

    cache = pathlib.Path(a.cache)
    manifest = json.loads((cache / "manifest.json").read_text())
    size = manifest["spec"]["size"]
    if a.split not in manifest["splits"]:
        raise SystemExit(f"{cache}: no {a.split} split (it has {', '.join(manifest['splits'])})")
    val = manifest["splits"][a.split]
    raw = np.fromfile(cache / val["file"], dtype=np.uint8)
    if raw.size != val["count"] * size * size * 3:
        raise SystemExit(f"{cache}: {val['file']} holds {raw.size} bytes, not {val['count']} photos")
    photos = raw.reshape(val["count"], size, size, 3)[:: max(1, val["count"] // a.photos)][: a.photos]
    x = photos.astype(np.float32).transpose(0, 3, 1, 2) / np.float32(255.0)
    outs = sess.run([n.input[0] for n in requant], {sess.get_inputs()[0].name: x})

    producer = {o: n for n in m.graph.node for o in n.output}

    def name(q):
        # The requantizing Mul's constant is named after the convolution or residual sum.
        mul = producer.get(q.input[0])
        if mul is not None and mul.op_type == "Mul" and len(mul.input) == 2:
            for k in (".requant", ".recip_scale"):
                if mul.input[1].endswith(k):
                    return mul.input[1][: -len(k)]
        return q.output[0]

    rows = []
    for n, v in zip(requant, outs):
        zp = float(inits[n.input[2]])
        u = v + zp
        # Saturated: outside the uint8 range. Only a signed tensor (zero point > 0) has no
        # activation clamp that its range stands for (a ReLU6 output's 0 and 6 are the ReLU6).
        clipped = float(np.mean((u < -0.5) | (u > 255.5))) if zp > 0 else 0.0
        inside = np.clip(u, 0, 255)
        sqnr = 10 * np.log10(12 * inside.var() + 1e-12)
        per_channel = np.abs(v).transpose(1, 0, 2, 3).reshape(v.shape[1], -1).max(axis=1)
        width = max(zp, 255 - zp)
        rows.append((sqnr, name(n), v.shape[1], inside.std(), clipped, zp, np.median(per_channel) / width))
    rows.sort()
    worst_clip = max(rows, key=lambda r: r[4])
    signed = [r[4] for r in rows if r[5] > 0]
    print(f"most saturated signed tensor: {worst_clip[1]}, {100 * worst_clip[4]:.4f} % of its values; "
          f"mean over the {len(signed)} signed tensors {100 * np.mean(signed):.5f} %")
    print(f"{a.model}: {len(rows)} requantized tensors, {len(photos)} {a.split} photos of {cache}")
    print(f"median SQNR {np.median([r[0] for r in rows]):.1f} dB; the coarsest:")
    print("SQNR dB | tensor | channels | std (quanta) | saturated | zero point | median channel range / tensor range")
    for r in rows[: a.show]:
        print(f"{r[0]:5.1f} | {r[1]} | {r[2]} | {r[3]:.1f} | {r[4]:.4f} | {r[5]:.0f} | {r[6]:.2f}")


if __name__ == "__main__":
    main()
