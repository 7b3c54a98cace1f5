#!/usr/bin/env python3
"""Screens every photo of a graded label table through `edge-runtime screen` (the device path:
decode, quality gate, the model's own preprocessing contract, TTA, threshold) and reports what a
clinic would see: AUC for any DR and for referable DR with 95 % bootstrap CIs (resampling
patients where the table has them), and sensitivity / specificity at the model's threshold with
Wilson CIs, counting an ungradable photo of a diseased eye as referred (the operator retakes it)
and of a healthy eye as not.

Usage: scripts/device_eval.py --model models/drscreen-default.onnx \
           --labels ../shared/data/srahim/labels.csv [--bin target/release/edge-runtime] [--out DIR]
Standard library only.
"""

import argparse
import csv
import json
import math
import os
import random
import subprocess
import sys
import tempfile


def auc(scores, labels):
    """Mann-Whitney AUC (ties count half)."""
    pairs = sorted(zip(scores, labels))
    n_pos = sum(labels)
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    rank_sum, i = 0.0, 0
    while i < len(pairs):
        j = i
        while j < len(pairs) and pairs[j][0] == pairs[i][0]:
            j += 1
        mid = (i + j + 1) / 2.0  # 1-based mean rank of the tie block
        rank_sum += mid * sum(1 for k in range(i, j) if pairs[k][1])
        i = j
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def boot_auc(rows, key, n_boot, seed=7):
    """AUC and its 95 % percentile CI, resampling patients (or photos without a patient id)."""
    groups = {}
    for r in rows:
        groups.setdefault(r["patient"] or r["image"], []).append(r)
    ids = list(groups)
    rng = random.Random(seed)
    point = auc([r["p"] for r in rows], [r[key] for r in rows])
    draws = []
    for _ in range(n_boot):
        sample = [r for g in rng.choices(ids, k=len(ids)) for r in groups[g]]
        a = auc([r["p"] for r in sample], [r[key] for r in sample])
        if not math.isnan(a):
            draws.append(a)
    draws.sort()
    lo = draws[int(0.025 * len(draws))]
    hi = draws[min(len(draws) - 1, int(0.975 * len(draws)))]
    return point, lo, hi


def wilson(k, n):
    if n == 0:
        return float("nan"), float("nan")
    z = 1.959964
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return c - h, c + h


def screen(binary, model, paths, log):
    """Records of `edge-runtime screen --json` for `paths`, in chunks."""
    out = []
    for i in range(0, len(paths), 50):
        chunk = paths[i : i + 50]
        r = subprocess.run(
            [binary, "screen", "--json", "--model", model, "--log", log, *chunk],
            capture_output=True,
            text=True,
        )
        lines = [l for l in r.stdout.splitlines() if l.startswith("{")]
        if len(lines) != len(chunk):
            sys.exit(f"edge-runtime gave {len(lines)} records for {len(chunk)} photos:\n{r.stderr}")
        out.extend(json.loads(l) for l in lines)
        print(f"  {len(out)}/{len(paths)} photos", file=sys.stderr)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--labels", required=True)
    ap.add_argument("--bin", default="target/release/edge-runtime")
    ap.add_argument("--out", help="folder for records.jsonl and summary.json")
    ap.add_argument("--bootstrap", type=int, default=2000)
    a = ap.parse_args()

    images = os.path.join(os.path.dirname(a.labels), "images")
    table = []
    with open(a.labels, newline="") as f:
        for row in csv.DictReader(f):
            if row.get("dup_of"):
                continue  # byte-identical copies: each photo once
            table.append(row)
    paths = [os.path.join(images, r["image"]) for r in table]
    with tempfile.TemporaryDirectory() as tmp:
        log = os.path.join(a.out or tmp, "records.jsonl")
        if a.out:
            os.makedirs(a.out, exist_ok=True)
            if os.path.exists(log):
                os.remove(log)
        recs = screen(a.bin, a.model, paths, log)

    rows, ungradable = [], []
    for row, rec in zip(table, recs):
        level = int(row["level"])
        referable = int(row["referable"]) == 1 if row.get("referable") not in (None, "") else level >= 2
        r = {
            "image": row["image"],
            "patient": row.get("patient", ""),
            "level": level,
            "dr": level >= 1,
            "referable": referable,
            "outcome": rec["outcome"],
            "p": rec["probability"],
            "threshold": rec["threshold"],
        }
        (rows if r["p"] is not None else ungradable).append(r)
    threshold = recs[0]["threshold"]

    def at_threshold(key):
        pos = [r for r in rows if r[key]] + [r for r in ungradable if r[key]]
        neg = [r for r in rows if not r[key]] + [r for r in ungradable if not r[key]]
        tp = sum(1 for r in pos if r["p"] is None or r["p"] >= threshold)
        tn = sum(1 for r in neg if r["p"] is not None and r["p"] < threshold)
        return {
            "sensitivity": tp / len(pos),
            "sensitivity_ci": wilson(tp, len(pos)),
            "specificity": tn / len(neg),
            "specificity_ci": wilson(tn, len(neg)),
            "positives": len(pos),
            "negatives": len(neg),
        }

    summary = {"model": a.model, "labels": a.labels, "photos": len(recs), "threshold": threshold,
               "ungradable": len(ungradable)}
    for key in ("referable", "dr"):
        point, lo, hi = boot_auc(rows, key, a.bootstrap)
        summary[key] = {"auc": point, "auc_ci": (lo, hi), **at_threshold(key)}
    summary["mean_p_by_grade"] = {
        g: sum(r["p"] for r in rows if r["level"] == g) / max(1, sum(1 for r in rows if r["level"] == g))
        for g in range(5)
    }
    summary["referred_by_grade"] = {
        g: f'{sum(1 for r in rows if r["level"] == g and r["p"] >= threshold)}/{sum(1 for r in rows if r["level"] == g)}'
        for g in range(5)
    }
    if a.out:
        with open(os.path.join(a.out, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
    print(f"{len(recs)} photos, {len(ungradable)} ungradable; threshold {threshold:.4f}")
    print("| class | AUC (95 % CI) | sensitivity (95 % CI) | specificity (95 % CI) |")
    print("|---|---|---|---|")
    for key, name in (("referable", "referable DR"), ("dr", "any DR")):
        s = summary[key]
        print(
            f"| {name} ({s['positives']} / {s['negatives']}) | {s['auc']:.3f} ({s['auc_ci'][0]:.3f}-{s['auc_ci'][1]:.3f}) "
            f"| {s['sensitivity']:.3f} ({s['sensitivity_ci'][0]:.3f}-{s['sensitivity_ci'][1]:.3f}) "
            f"| {s['specificity']:.3f} ({s['specificity_ci'][0]:.3f}-{s['specificity_ci'][1]:.3f}) |"
        )
    print("referred by grade 0-4:", " ".join(summary["referred_by_grade"].values()))


if __name__ == "__main__":
    main()
