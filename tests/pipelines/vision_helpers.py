"""Shared by the vision tests: pictures on disk, and running the family as a worker does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pixelpool.pipelines.base import Loaded, Result, WorkItem
from pixelpool.pipelines.vision.family import FAMILY


def picture(directory: Path, height: int, width: int, seed: int) -> tuple[str, Image.Image]:
    """A noisy picture saved as PNG (the path a job carries) and the image itself."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, 3)
    noise = rng.integers(-60, 60, (height, width, 3))
    image = Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))
    path = directory / f"pic-{seed}-{width}x{height}.png"
    image.save(path)
    return str(path), image


def load(path: Path, architecture: str) -> Loaded:
    return FAMILY.load({"path": str(path), "architecture": architecture}, "cpu")


def run(loaded: Loaded, op: str, jobs: list[dict[str, Any]], cancel: Any = None) -> list[Result]:
    items = [WorkItem(f"job-{i}", op, params) for i, params in enumerate(jobs)]
    return FAMILY.run(loaded, items, lambda *a: None, cancel or (lambda: False))


def assert_same_result(a: Result, b: Result, atol: float = 1e-4) -> None:
    """Equal info (numbers within atol) and arrays (bool exactly, floats within atol)."""
    assert a.arrays.keys() == b.arrays.keys()
    for name, array in a.arrays.items():
        if array.dtype == bool:
            np.testing.assert_array_equal(array, b.arrays[name], err_msg=name)
        else:
            np.testing.assert_allclose(array, b.arrays[name], atol=atol, rtol=0, err_msg=name)
    _close(a.info, b.info, atol)


def _close(x: Any, y: Any, atol: float) -> None:
    if isinstance(x, dict):
        assert x.keys() == y.keys()
        for k in x:
            _close(x[k], y[k], atol)
    elif isinstance(x, list):
        assert len(x) == len(y)
        for u, v in zip(x, y, strict=True):
            _close(u, v, atol)
    elif isinstance(x, float):
        assert abs(x - y) <= atol, (x, y)
    else:
        assert x == y
