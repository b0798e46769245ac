"""A models dir with the demo models, tiny LoRAs and a manifest, and a server over it."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from pixelpool.testing import write_demo_models
from pixelpool.testing.lora import write_tiny_lora

MANIFEST = """
id = "tuned"
display_name = "Demo SD, tuned"
negative_prompt = "blurry, watermark"
prompt_guide = "plain words"
[defaults]
steps = 3
cfg_scale = 5.0
width = 64
height = 64
sampler = "Euler a"
[presets.fast]
steps = 2
"""


def write_models(root: Path) -> Path:
    write_demo_models(root)
    write_tiny_lora(root / "sd15/demo-sd", root / "loras/style.safetensors", "sd15", seed=1)
    write_tiny_lora(root / "sdxl/demo-sdxl", root / "loras/xl/style-xl.safetensors", "sdxl")
    shutil.copytree(root / "sd15/demo-sd", root / "sd15/demo-sd-tuned")
    (root / "sd15/demo-sd-tuned.toml").write_text(MANIFEST)
    return root


def png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def smooth_image(width: int, height: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (height // 8, width // 8, 3), np.uint8)
    return np.asarray(Image.fromarray(small).resize((width, height), Image.Resampling.BILINEAR))


def decode(resp: httpx.Response) -> np.ndarray:
    assert resp.status_code == 200, resp.text[:500]
    return np.asarray(Image.open(io.BytesIO(resp.content)))
