"""Tiling plans and seam-blending weights (numpy only, so they test without a model).

An image is cut into overlapping tiles; each tile's output is weighted by a linear
ramp across the overlaps it shares with neighbours (1 where it overlaps nothing,
near 0 at an edge shared with a neighbour), and the sum is divided by the summed
weights. A tile's border pixels, which saw a truncated context, so count least.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MIN_TILE = 32
TILE_MULTIPLE = 8
# Activation elements per input pixel, as (at the input's resolution, per output pixel):
# ESRGAN's dense blocks hold ~200 channels at input size, and ~64 live channels per output
# pixel while upsampling; x3 for the tensors alive at once. Conservative for SwinIR/DAT too,
# whose attention is windowed (linear in pixels).
ELEMENTS_PER_INPUT_PIXEL = 600
ELEMENTS_PER_OUTPUT_PIXEL = 200


@dataclass(frozen=True)
class Tile:
    """An input window [y0, y1) x [x0, x1) and how much it overlaps each neighbour."""

    y0: int
    y1: int
    x0: int
    x1: int
    top: int = 0
    bottom: int = 0
    left: int = 0
    right: int = 0


def axis_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Tile starts along one axis, spread evenly so every overlap is at least `overlap`."""
    if size <= tile:
        return [0]
    overlap = min(overlap, tile - 1)
    count = math.ceil((size - overlap) / (tile - overlap))
    return [round(i * (size - tile) / (count - 1)) for i in range(count)]


def plan_tiles(height: int, width: int, tile: int, overlap: int) -> list[Tile]:
    """Row-major tiles covering height x width; a tile of at least the image is one tile."""
    tiles = []
    ys, xs = axis_starts(height, tile, overlap), axis_starts(width, tile, overlap)
    th, tw = min(tile, height), min(tile, width)
    for i, y in enumerate(ys):
        for j, x in enumerate(xs):
            tiles.append(
                Tile(
                    y, y + th, x, x + tw,
                    top=ys[i - 1] + th - y if i > 0 else 0,
                    bottom=y + th - ys[i + 1] if i + 1 < len(ys) else 0,
                    left=xs[j - 1] + tw - x if j > 0 else 0,
                    right=x + tw - xs[j + 1] if j + 1 < len(xs) else 0,
                )
            )  # fmt: skip
    return tiles


def ramp(length: int, before: int, after: int) -> np.ndarray:
    """1-D weights: rising over the first `before` samples, falling over the last `after`,
    1 elsewhere; never 0, so every pixel has weight in the sum."""
    idx = np.arange(length, dtype=np.float32)
    w = np.ones(length, np.float32)
    if before > 0:
        w = np.minimum(w, (idx + 0.5) / before)
    if after > 0:
        w = np.minimum(w, (length - idx - 0.5) / after)
    return w


def blend_weights(tile: Tile, scale: int) -> np.ndarray:
    """The (h*scale, w*scale) weights of one tile's output: the outer product of two ramps."""
    wy = ramp((tile.y1 - tile.y0) * scale, tile.top * scale, tile.bottom * scale)
    wx = ramp((tile.x1 - tile.x0) * scale, tile.left * scale, tile.right * scale)
    return np.outer(wy, wx)


def tile_for_budget(budget_bytes: int, scale: int, batch: int, dtype_bytes: int) -> int:
    """The largest square input tile whose activations for `batch` images fit the budget."""
    per_pixel = dtype_bytes * (ELEMENTS_PER_INPUT_PIXEL + ELEMENTS_PER_OUTPUT_PIXEL * scale**2)
    side = int(math.sqrt(max(budget_bytes, 0) / (max(batch, 1) * per_pixel)))
    return max(MIN_TILE, side // TILE_MULTIPLE * TILE_MULTIPLE)


def tile_bytes(tile: int, scale: int, batch: int, dtype_bytes: int) -> int:
    """The activation bytes `tile_for_budget` expects one forward of that tile to need."""
    per_pixel = dtype_bytes * (ELEMENTS_PER_INPUT_PIXEL + ELEMENTS_PER_OUTPUT_PIXEL * scale**2)
    return tile * tile * batch * per_pixel
