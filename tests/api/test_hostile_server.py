"""A real server under a batch of hostile requests, sent concurrently: no response is a
5xx, each names its field, /health stays OK, and odd but valid images still work."""

from __future__ import annotations

import io
import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
from PIL import Image

from pixelpool.testing.server import ServerProcess

from .hostile_cases import Case, cases, check


def saved(img: Image.Image, fmt: str, **options: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **options)
    return buf.getvalue()


def test_hostile_batch_gets_no_5xx_and_the_server_stays_healthy(server: ServerProcess) -> None:
    batch = cases()
    with httpx.Client(base_url=server.url, timeout=120) as client:

        def send(case: Case) -> tuple[Case, httpx.Response]:
            return case, client.request(case.method, case.path, **case.kwargs)

        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(send, batch))
        errors = [
            f"{c.name}: {r.status_code} {r.text[:200]}" for c, r in answers if r.status_code >= 500
        ]
        assert not errors, "\n".join(errors)
        problems = [p for p in (check(c, r) for c, r in answers) if p]
        assert not problems, "\n".join(problems)
        assert client.get("/health").status_code == 200
        assert client.get("/ready").status_code == 200


def test_odd_images_are_read_as_the_worker_sees_them(server: ServerProcess) -> None:
    """CMYK, palette, 16-bit, animated (first frame) and EXIF-rotated inputs all run; the
    default output size of a rotated input is its upright size."""
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated by 90 degrees: 64x128 stored, 128x64 upright
    frames = [Image.new("RGB", (64, 64), c) for c in ("red", "blue")]
    inputs = {
        "cmyk": (saved(Image.new("CMYK", (64, 64), (0, 200, 200, 0)), "JPEG"), (64, 64)),
        "palette": (saved(Image.new("RGB", (64, 64), "green").convert("P"), "PNG"), (64, 64)),
        "16bit": (saved(Image.fromarray(np.full((64, 64), 30_000, np.uint16)), "PNG"), (64, 64)),
        "animated": (saved(frames[0], "GIF", save_all=True, append_images=frames[1:]), (64, 64)),
        "rotated": (saved(Image.new("RGB", (64, 128), "red"), "JPEG", exif=exif.tobytes()),
                    (128, 64)),
    }  # fmt: skip
    params = json.dumps({"prompt": "a fox", "model": "demo-sd", "steps": 2, "strength": 0.5,
                         "seed": 1, "output_format": "jpeg",
                         "negative_prompt": "blurry " * 1400})  # fmt: skip
    with httpx.Client(base_url=server.url, timeout=300) as client:
        for name, (blob, size) in inputs.items():
            resp = client.post("/api/img2img", files={"image": ("in", blob)},
                               data={"params": params})  # fmt: skip
            assert resp.status_code == 200, f"{name}: {resp.text[:300]}"
            assert Image.open(io.BytesIO(resp.content)).size == size, name
        assert client.get("/health").status_code == 200
