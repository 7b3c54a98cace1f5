"""Writes the committed seed corpus for the decode_preprocess fuzz target (Pillow 11.3).

Small versions of the fundus fixture in each format the decoder meets: baseline, progressive and
Run: .venv-ref/bin/python fuzz/make_seeds.py
"""
import io
import pathlib
import shutil

from PIL import Image

ROOT = pathlib.Path(__file__).resolve().parent
FIXTURES = ROOT.parent / "edge-runtime" / "tests" / "fixtures"
OUT = ROOT / "seeds" / "decode_preprocess"
OUT.mkdir(parents=True, exist_ok=True)

photo = Image.open(FIXTURES / "fundus_rgb.jpg").convert("RGB").resize((96, 64), Image.BILINEAR)


def save(name, img, fmt, **kw):
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    (OUT / name).write_bytes(buf.getvalue())


save("baseline.jpg", photo, "JPEG", quality=80)
save("progressive.jpg", photo, "JPEG", quality=80, progressive=True)
save("subsampled_444.jpg", photo, "JPEG", quality=90, subsampling=0)
save("cmyk.jpg", photo.convert("CMYK"), "JPEG", quality=80)
save("grey.jpg", photo.convert("L"), "JPEG", quality=80)
save("rgb.png", photo, "PNG")
save("grey.png", photo.convert("L"), "PNG")
save("rgba.png", photo.convert("RGBA"), "PNG")
save("palette.png", photo.convert("P"), "PNG")
save("grey16.png", photo.convert("L").point(lambda v: v * 257, "I").convert("I;16"), "PNG")
save("one_pixel.png", Image.new("RGB", (1, 1), (200, 80, 30)), "PNG")
shutil.copy(FIXTURES / "huge_60000.png", OUT / "huge_60000.png")
for p in sorted(OUT.iterdir()):
    print(f"{p.name}: {p.stat().st_size} bytes")
