#!/usr/bin/env python3
"""Training throughput: host-trainer (tch) vs the same MobileNetV2 + head in PyTorch, same run.

    scripts/setup-torch-venv.sh && .venv/bin/python scripts/bench_train.py [--size 96] [--steps 60]

Both: batch 10, random input, focal loss (gamma 1.5, alpha 0.5), Adam 5e-4, TF "SAME" padding,
BN eps 1e-3, the seed's head; (a) only the last 17 conv units + head trainable (the seed),
(b) every layer trainable. Threads: torch's default (all cores). Prints a Markdown table.
"""
import argparse, json, math, os, pathlib, subprocess, time
import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = pathlib.Path(__file__).resolve().parent.parent
SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


def same_pad(n, k, s):
    out = math.ceil(n / s)
    total = max((out - 1) * s + k - n, 0)
    return total // 2, total - total // 2, out


class Unit(nn.Module):
    def __init__(self, cin, cout, k, s, groups, relu, hw):
        super().__init__()
        t, b, h = same_pad(hw, k, s)
        self.pad = (t, b, t, b)
        self.conv = nn.Conv2d(cin, cout, k, s, 0, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3, momentum=0.01)
        self.relu, self.out = relu, h

    def forward(self, x):
        if any(self.pad):
            x = F.pad(x, self.pad)
        x = self.bn(self.conv(x))
        return x.clamp(0, 6) if self.relu else x


class Block(nn.Module):
    def __init__(self, units, residual):
        super().__init__()
        self.units, self.residual = nn.ModuleList(units), residual

    def forward(self, x):
        y = x
        for u in self.units:
            y = u(y)
        return x + y if self.residual else y


def mobilenet(size):
    hw, blocks, units = size, [], []
    u = Unit(3, 32, 3, 2, 1, True, hw); hw = u.out; blocks.append(Block([u], False)); cin = 32
    for t, c, n, s in SETTINGS:
        for i in range(n):
            st, hid, us = (s if i == 0 else 1), cin * t, []
            if t != 1:
                us.append(Unit(cin, hid, 1, 1, 1, True, hw))
            d = Unit(hid, hid, 3, st, hid, True, hw); hw = d.out; us.append(d)
            us.append(Unit(hid, c, 1, 1, 1, False, hw))
            blocks.append(Block(us, st == 1 and cin == c)); cin = c
    blocks.append(Block([Unit(cin, 1280, 1, 1, 1, True, hw)], False))
    return nn.ModuleList(blocks)


class Net(nn.Module):
    def __init__(self, size, trainable_units):
        super().__init__()
        self.features = mobilenet(size)
        self.head = nn.Sequential(nn.BatchNorm1d(1280, eps=1e-3, momentum=0.01), nn.Dropout(0.5), nn.Linear(1280, 256), nn.ReLU(),
                                  nn.BatchNorm1d(256, eps=1e-3, momentum=0.01), nn.Dropout(0.3), nn.Linear(256, 128), nn.ReLU(),
                                  nn.Dropout(0.2), nn.Linear(128, 1))
        units = [u for b in self.features for u in b.units]
        self.frozen = units[: len(units) - trainable_units]
        for u in self.frozen:
            for p in u.parameters():
                p.requires_grad_(False)

    def forward(self, x):
        for u in self.frozen:
            u.eval()
        x = x * 2 - 1
        for b in self.features:
            x = b(x)
        return self.head(x.mean((2, 3)))


def focal(logits, y, gamma=1.5, alpha=0.5):
    p = torch.sigmoid(logits.squeeze(1)).clamp(1e-7, 1 - 1e-7)
    pt = y * p + (1 - y) * (1 - p)
    at = y * alpha + (1 - y) * (1 - alpha)
    return (-at * (1 - pt) ** gamma * pt.log()).mean()


def bench_torch(size, steps, batch, trainable):
    torch.manual_seed(0)
    net = Net(size, trainable).train()
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=5e-4)
    x, y = torch.rand(batch, 3, size, size), torch.randint(0, 2, (batch,)).float()
    def step():
        opt.zero_grad()
        loss = focal(net(x), y)
        loss.backward()
        opt.step()
        return loss.item()
    for _ in range(5):
        step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - t)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--steps", type=int, default=60)
    a = ap.parse_args()
    env = dict(os.environ, PATH=f"{ROOT / '.venv/bin'}:{os.environ['PATH']}", LIBTORCH_USE_PYTORCH="1")
    res = subprocess.run(["cargo", "bench", "-q", "-p", "host-trainer", "--bench", "train_throughput", "--", "--size", str(a.size), "--steps", str(a.steps)],
                         cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    ours = {r["setting"]: r for r in map(json.loads, filter(lambda l: l.startswith("{"), res.stdout.splitlines()))}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores, {a.size} px, batch 10\n")
    print("| setting | host-trainer (img/s) | PyTorch (img/s) | ratio |")
    print("|---|---|---|---|")
    for label, trainable in (("last_17_units", 17), ("all_layers", 52)):
        py = bench_torch(a.size, a.steps, 10, trainable)
        r = ours[label]["images_per_sec"]
        print(f"| {label} | {r:.1f} | {py:.1f} | {r / py:.2f} |")


if __name__ == "__main__":
    main()
