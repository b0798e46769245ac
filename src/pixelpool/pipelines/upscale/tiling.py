"""Tiling plans and seam-blending weights (numpy only, so they test without a model).

An image is cut into overlapping tiles; each tile's output is weighted across the
overlaps it shares with neighbours: 0 over the outer margin (pixels that saw a
truncated context: zero padding, or a window cut short), then a linear ramp, then 1
where it overlaps nothing; the sum is divided by the summed weights. So where a
model's context reaches no further than the margin, tiled output equals untiled.
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


def axis_spans(size: int, tile: int, overlap: int, align: int = 1) -> list[tuple[int, int]]:
    """[start, end) of the tiles along one axis: spread evenly, every overlap at least
    `overlap`, every start a multiple of `align`, every tile `tile` long but the last,
    which ends at the image edge (so it is up to `align - 1` longer).

    Aligned starts put a tile's attention windows exactly where the whole image's are;
    a last tile ending at the edge gets the same edge padding the whole image gets.
    """
    align = max(align, 1)
    tile = max(tile // align * align, align)
    if size <= tile + align - 1:
        return [(0, size)]
    overlap = max(min(overlap, tile - align), 0)
    last = (size - tile) // align * align
    count = max(math.ceil((size - overlap) / (tile - overlap)), 2)
    while True:
        starts = sorted({round(i * last / (count - 1) / align) * align for i in range(count)})
        ends = [s + tile for s in starts[:-1]] + [size]
        if all(ends[i] - starts[i + 1] >= overlap for i in range(len(starts) - 1)):
            return list(zip(starts, ends, strict=True))
        count += 1


def axis_starts(size: int, tile: int, overlap: int, align: int = 1) -> list[int]:
    """Tile starts along one axis (see `axis_spans`)."""
    return [start for start, _ in axis_spans(size, tile, overlap, align)]


def plan_tiles(height: int, width: int, tile: int, overlap: int, align: int = 1) -> list[Tile]:
    """Row-major tiles covering height x width; a tile of at least the image is one tile."""
    tiles = []
    ys, xs = axis_spans(height, tile, overlap, align), axis_spans(width, tile, overlap, align)
    for i, (y0, y1) in enumerate(ys):
        for j, (x0, x1) in enumerate(xs):
            tiles.append(
                Tile(
                    y0, y1, x0, x1,
                    top=ys[i - 1][1] - y0 if i > 0 else 0,
                    bottom=y1 - ys[i + 1][0] if i + 1 < len(ys) else 0,
                    left=xs[j - 1][1] - x0 if j > 0 else 0,
                    right=x1 - xs[j + 1][0] if j + 1 < len(xs) else 0,
                )
            )  # fmt: skip
    return tiles


def margin_for(overlap: int) -> int:
    """Input pixels at a shared tile edge whose output is discarded (weight 0): the outer
    part of the overlap, leaving a quarter of it (at least one pixel) to cross-fade in.
    A tile's output is exact wherever its context reaches no further than this margin."""
    band = max(overlap // 4, 1)
    return max((overlap - band) // 2, 0)


def ramp(length: int, before: int, after: int) -> np.ndarray:
    """1-D weights: 0 over the outer `margin_for(before)` samples of an overlap of `before`
    samples, then rising linearly to 1; mirrored over the last `after`; 1 elsewhere.
    Two tiles' ramps over a shared overlap sum to 1."""
    idx = np.arange(length, dtype=np.float32)
    w = np.ones(length, np.float32)
    if before > 0:
        m = margin_for(before)
        w = np.minimum(w, np.clip((idx - m + 0.5) / (before - 2 * m), 0, 1))
    if after > 0:
        m = margin_for(after)
        w = np.minimum(w, np.clip((length - idx - m - 0.5) / (after - 2 * m), 0, 1))
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
