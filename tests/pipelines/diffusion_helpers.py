"""Shared helpers for the diffusion pipeline tests: load a demo model, run an op, compare."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pixelpool.pipelines import get_family
from pixelpool.pipelines.base import Loaded, Result, WorkItem

MODELS = {"sd15": "sd15/demo-sd", "sdxl": "sdxl/demo-sdxl"}
BASE = {"prompt": "a photo of a red fox", "negative_prompt": "blurry", "width": 64,
        "height": 48, "steps": 4, "cfg_scale": 6.5, "seed": 1234}  # fmt: skip


def entry(path: Path, arch: str, name: str = "m") -> dict[str, str]:
    return {"architecture": arch, "path": str(path), "format": "diffusers", "name": name}


def load(path: Path, arch: str) -> Loaded:
    return get_family("diffusion").load(entry(path, arch), "cpu", "auto")


def run(
    loaded: Loaded,
    op: str,
    *params: dict[str, Any],
    cancel: Any = None,
    progress: list[int] | None = None,
) -> list[Result]:
    """Run a batch in-process; steps reported go into `progress` when given."""
    items = [WorkItem(f"job{i}", op, p) for i, p in enumerate(params)]
    seen = progress if progress is not None else []
    return get_family("diffusion").run(
        loaded, items, lambda step, *_: seen.append(step), cancel or (lambda: False)
    )


def max_diff(a: np.ndarray, b: np.ndarray) -> int:
    assert a.shape == b.shape, (a.shape, b.shape)
    return int(np.abs(a.astype(int) - b.astype(int)).max())


def write_image(path: Path, width: int, height: int, seed: int = 0, mode: str = "RGB") -> Path:
    """A smooth random image (noise alone would be an unrealistic VAE input)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(1, height // 8), max(1, width // 8), len(mode)), np.uint8)
    Image.fromarray(small, mode).resize((width, height), Image.Resampling.BILINEAR).save(path)
    return path


def write_mask(path: Path, width: int, height: int) -> Path:
    mask = np.zeros((height, width), np.uint8)
    mask[height // 4 : 3 * height // 4, width // 4 : 3 * width // 4] = 255
    Image.fromarray(mask, "L").save(path)
    return path
