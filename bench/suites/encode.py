"""encode: PNG / JPEG / WebP of a 1024x1024 RGB result, the server's encoder vs Pillow defaults.

The server's encoder is `pixelpool.jobs.encode.encode_image` as the job service calls
it, with the A1111 parameters text (a PNG text chunk, or EXIF in JPEG/WebP; quality 90
for JPEG/WebP); PNG goes through `jobs/png.py`, shown beside Pillow at the same zlib
settings (the server's PNG encoder before it). Pillow defaults are a plain
`Image.save` (PNG compress_level 6, JPEG quality 75, WebP 80).

The image is smooth multi-octave noise with a little per-pixel grain: it compresses
like a photo-like render. Pure random noise would be incompressible (every encoder
looks alike and slow) and a flat image would make every encoder look free.
"""

from __future__ import annotations

import io
import time
from typing import Any

import numpy as np
from PIL import Image

from bench.common import Row, fmt_ms, fmt_num, ratio, summary

SIZE = 1024
FORMATS = ("png", "jpeg", "webp")


def test_image(size: int = SIZE, seed: int = 0) -> np.ndarray:
    """Deterministic photo-like RGB image: octaves of bicubic-upscaled noise + fine grain."""
    rng = np.random.default_rng(seed)
    acc = np.zeros((size, size, 3), np.float32)
    for octave in range(7):
        cells = 4 * 2**octave
        grid = rng.random((cells, cells, 3), dtype=np.float32)
        layers = [
            np.asarray(Image.fromarray(grid[..., c], mode="F").resize((size, size), Image.BICUBIC))
            for c in range(3)
        ]
        acc += np.stack(layers, axis=-1) * 0.55**octave
    acc = (acc - acc.min()) / (acc.max() - acc.min()) * 255
    acc += rng.normal(0, 1.5, acc.shape)
    return np.clip(acc, 0, 255).astype(np.uint8)


def _server(array: np.ndarray, fmt: str) -> bytes:
    from pixelpool.families.diffusion.describe import a1111_parameters
    from pixelpool.jobs.encode import encode_image

    params = {"prompt": "a photo of a red fox", "steps": 25, "cfg_scale": 7, "seed": 1,
              "width": SIZE, "height": SIZE}  # fmt: skip
    text = {"parameters": a1111_parameters(params, "bench")}  # as the job service passes it
    return encode_image(array, fmt, 90, text)


def _pillow_default(array: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt.upper())
    return buf.getvalue()


def _pillow_fast(array: np.ndarray, fmt: str) -> bytes:
    """PNG through Pillow at the server's zlib settings (one thread, a filter chosen per
    row): the server's encoder before `jobs/png.py`, so its gain is measured here."""
    from pixelpool.jobs import png

    buf = io.BytesIO()
    Image.fromarray(array).save(
        buf, format="PNG", compress_level=png.LEVEL, compress_type=png.STRATEGY
    )
    return buf.getvalue()


def run(ctx: Any) -> dict[str, Any]:
    array = test_image()
    results: dict[str, dict[str, Any]] = {}
    for fmt in FORMATS:
        sides = [("server", _server), ("pillow_default", _pillow_default)]
        if fmt == "png":
            sides.append(("pillow_fast", _pillow_fast))
        times: dict[str, list[float]] = {name: [] for name, _fn in sides}
        sizes: dict[str, int] = {}
        for _ in range(ctx.plan.encode_reps):
            for name, fn in sides:
                start = time.perf_counter()
                blob = fn(array, fmt)
                times[name].append(time.perf_counter() - start)
                sizes[name] = len(blob)
        results[fmt] = {
            **{f"{name}_s": summary(t) for name, t in times.items()},
            "bytes": sizes,
            "time_ratio_server_over_default": ratio(
                summary(times["server"])["median"], summary(times["pillow_default"])["median"]
            ),
        }
    return {
        "image": f"{SIZE}x{SIZE} RGB, smooth noise + grain",
        "formats": results,
        "medians": {
            f"{fmt} {side} ms": r[f"{side}_s"]["median"] * 1000
            for fmt, r in results.items()
            for side in ("server", "pillow_default")
        },
    }


def rows(result: dict[str, Any]) -> list[Row]:
    out: list[Row] = []
    for fmt, r in result["formats"].items():
        b = r["bytes"]
        out += [
            ("encode", f"{fmt} 1024x1024, server encoder", fmt_ms(r["server_s"]["median"]),
             f"{b['server'] / 1024:.0f} KiB"),
            ("encode", f"{fmt} 1024x1024, Pillow defaults", fmt_ms(r["pillow_default_s"]["median"]),
             f"{b['pillow_default'] / 1024:.0f} KiB; server/default time "
             f"{fmt_num(r['time_ratio_server_over_default'], 2)}"),
        ]  # fmt: skip
        if "pillow_fast_s" in r:
            fast = r["pillow_fast_s"]["median"]
            out.append(
                ("encode", f"{fmt} 1024x1024, Pillow at the server's zlib settings",
                 fmt_ms(fast), f"{b['pillow_fast'] / 1024:.0f} KiB; server/this time "
                 f"{fmt_num(ratio(r['server_s']['median'], fast), 2)}")
            )  # fmt: skip
    return out
