#!/usr/bin/env python3
"""Where onnxruntime and tract part ways on an int8 file: every intermediate tensor of MODEL made a
graph output, run on one golden input in onnxruntime (here) and in tract (the `dump_tensors`
example of edge-runtime), compared tensor by tensor in graph order.

    .venv-ref/bin/python scripts/compare_int8_layers.py models/drscreen-default-int8.onnx \
        [--inputs models/drscreen-default-int8.golden-inputs.npy] [--sample 0] [--ort-opt all|basic|none]

uint8 tensors are compared in quanta (one step of the tensor's scale); float ones in absolute
value. The first tensor that differs by more than one quantum is where to look.
"""
import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, shape_inference

ROOT = Path(__file__).resolve().parent.parent
OPT = {
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
}


def with_every_tensor_as_output(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    inferred = shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info}
    types.update({v.name: v.type.tensor_type.elem_type for v in inferred.graph.output})
    existing = [o.name for o in model.graph.output]
    names = list(existing)
    for node in model.graph.node:
        for out in node.output:
            if out and out not in names and out in types:
                names.append(out)
                model.graph.output.append(helper.make_tensor_value_info(out, types[out], None))
    return model, names


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path)
    ap.add_argument("--inputs", type=Path, help="golden inputs .npy (default: beside the model)")
    ap.add_argument("--sample", type=int, default=0)
    ap.add_argument("--ort-opt", choices=OPT, default="all")
    ap.add_argument("--show", type=int, default=40, help="rows to print")
    ap.add_argument("--save", type=Path, help="write both runtimes' tensors to this .npz")
    a = ap.parse_args()
    inputs = a.inputs or a.model.with_name(a.model.stem + ".golden-inputs.npy")
    x = np.load(inputs)
    # Golden inputs are RGB8 photos [K, H, W, 3] (before /255 and TTA) or model inputs.
    x = x[a.sample]
    if x.dtype == np.uint8:
        x = (x.astype(np.float32) / 255.0).transpose(2, 0, 1)
    x = np.ascontiguousarray(x[None].astype(np.float32))

    model = onnx.load(str(a.model))
    op_of = {o: n.op_type for n in model.graph.node for o in n.output}
    model, names = with_every_tensor_as_output(model)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        path = tmp / "all-outputs.onnx"
        onnx.save(model, str(path))
        np.save(tmp / "input.npy", x)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.graph_optimization_level = OPT[a.ort_opt]
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        ort_out = sess.run(names, {sess.get_inputs()[0].name: x})
        subprocess.run(
            ["cargo", "run", "--release", "-q", "-p", "edge-runtime", "--example", "dump_tensors", "--",
             str(path), str(tmp / "input.npy"), str(tmp / "tract")],
            check=True, cwd=ROOT,
        )
        tract_out = [np.load(tmp / "tract" / f"{i}.npy") for i in range(len(names))]

    if a.save:
        np.savez(a.save, input=x, **{f"ort/{n}": o for n, o in zip(names, ort_out)},
                 **{f"tract/{n}": t for n, t in zip(names, tract_out)})
    print(f"{a.model} sample {a.sample}, onnxruntime {ort.__version__} (optimisation {a.ort_opt}) vs tract\n")
    print("| # | tensor | op | dtype | max diff | differing | mean diff |")
    print("|---|---|---|---|---|---|---|")
    first = None
    rows = []
    for i, (name, o, t) in enumerate(zip(names, ort_out, tract_out)):
        if o.shape != t.shape:
            rows.append(f"| {i} | {name} | {op_of.get(name, 'output')} | shape {o.shape} vs {t.shape} | | | |")
            continue
        if o.dtype == np.uint8:
            d = o.astype(np.int32) - t.astype(np.int32)
            unit = "q"
        else:
            d = o.astype(np.float64) - t.astype(np.float64)
            unit = ""
        m = float(np.abs(d).max()) if d.size else 0.0
        if first is None and o.dtype == np.uint8 and m > 1:
            first = (i, name)
        rows.append(
            f"| {i} | {name} | {op_of.get(name, 'output')} | {o.dtype} | {m:.4g}{unit} | "
            f"{(d != 0).mean() * 100:.2f} % | {float(d.mean()):+.4g} |"
        )
    for r in rows[: a.show]:
        print(r)
    if len(rows) > a.show:
        print(f"... {len(rows) - a.show} more")
    print(f"\nfirst uint8 tensor more than one quantum apart: {first}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
