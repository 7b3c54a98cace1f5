"""Writes edge-runtime/tests/fixtures/yuyv_all_opencv.sha256: the SHA-256 of what OpenCV's
cvtColor(COLOR_YUV2RGB_YUYV) gives for a 4096x4096 YUYV frame that holds every (Y, U, V) triple
once. The Rust test builds the same frame and compares its conversion's hash, so CI needs no
Python. Run: scripts/setup-ref-venv.sh && .venv-ref/bin/python scripts/make_yuyv_fixture.py

Frame layout (macropixel = Y0 U Y1 V, 2048 per row, 4096 rows): for u in 0..256, v in 0..256,
y in 0..128 (innermost), the macropixel is (2y, u, 2y + 1, v).
"""
import hashlib
import pathlib

import cv2
import numpy as np

u, v, y = np.meshgrid(np.arange(256), np.arange(256), np.arange(128), indexing="ij")
mp = np.stack([2 * y, u, 2 * y + 1, v], axis=-1).astype(np.uint8).reshape(4096, 2048 * 4)
rgb = cv2.cvtColor(mp.reshape(4096, 4096, 2), cv2.COLOR_YUV2RGB_YUYV)
assert rgb.shape == (4096, 4096, 3)
digest = hashlib.sha256(np.ascontiguousarray(rgb).tobytes()).hexdigest()
out = pathlib.Path(__file__).resolve().parent.parent / "edge-runtime/tests/fixtures/yuyv_all_opencv.sha256"
out.write_text(f"{digest}  opencv-python-headless {cv2.__version__} COLOR_YUV2RGB_YUYV, every (Y, U, V) once\n")
print(out.read_text(), end="")
# A few values to read in the test as anchors.
for i in [0, 1, (16 << 15) | (128 << 7) | 8, (240 << 15) | (90 << 7) | 40]:
    print(i, mp.reshape(-1, 4)[i], rgb.reshape(-1, 3)[2 * i], rgb.reshape(-1, 3)[2 * i + 1])
