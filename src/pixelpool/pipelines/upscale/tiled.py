"""Tiled inference: a stack of same-size images, one forward per tile position.

Only the tile being run lives on the device; the blended output is accumulated in
float32 on the host, so a 4096x4096 result needs device memory for one tile only.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from pixelpool.pipelines.upscale.model import UpscaleModel
from pixelpool.pipelines.upscale.tiling import (
    Tile,
    blend_weights,
    plan_tiles,
    tile_bytes,
    tile_for_budget,
)

DEFAULT_OVERLAP = 16
# Architectures whose context reaches further than their window grid suggests (measured
# on tiny models: the overlap at which tiled output came within 1/255 of untiled).
# SAFMN pools its features in 8x8 blocks, so each 3x3 conv there sees 24 input pixels.
OVERLAP_BY_ARCH = {"SAFMN": 40}
GREY = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R 601, as Pillow's "L"


def choose_tile(model: UpscaleModel, height: int, width: int, batch: int, tile: int) -> int:
    """The requested tile side, or one from the model's memory budget; the whole image for
    models that tile internally. Never below two attention windows."""
    if not model.tiling:
        return max(height, width)
    if tile <= 0:
        dtype_bytes = torch.finfo(model.dtype).bits // 8
        tile = tile_for_budget(model.tile_budget_bytes, model.scale, batch, dtype_bytes)
    return max(tile, 2 * model.align)


def images_per_forward(model: UpscaleModel, side: int) -> int:
    """How many same-size images one forward of a `side` tile takes within the budget.
    The tile is chosen for one image and a batch is split to fit it, never the other way
    round, so a job's tiles (and so its output) do not depend on what it is batched with."""
    dtype_bytes = torch.finfo(model.dtype).bits // 8
    return max(1, model.tile_budget_bytes // tile_bytes(side, model.scale, 1, dtype_bytes))


def default_overlap(model: UpscaleModel) -> int:
    """Input pixels adjacent tiles share when the request names none: 16, or two attention
    windows for window-attention models, so each tile's discarded margin holds a window.

    OmniSR has no finite answer: its grid attention and channel attention see the whole
    image, so tiles differ from the whole by up to 3-4/255 whatever the overlap."""
    arch = OVERLAP_BY_ARCH.get(model.descriptor.architecture.id, 0)
    return max(DEFAULT_OVERLAP, 2 * model.align, arch)


def forward(model: UpscaleModel, pixels: np.ndarray) -> np.ndarray:
    """(N, h, w, 3) uint8 -> (N, h*s, w*s, 3) float32 in [0, 1], through spandrel's call."""
    desc = model.descriptor
    x = torch.from_numpy(np.array(pixels)).to(desc.device)  # a writable copy
    x = x.permute(0, 3, 1, 2).to(model.dtype) / 255
    if desc.input_channels == 1:
        x = (x * torch.from_numpy(GREY).to(x).view(1, 3, 1, 1)).sum(1, keepdim=True)
    with torch.inference_mode():
        y = desc(x)
    if desc.output_channels == 1:
        y = y.expand(-1, 3, -1, -1)
    return y.float().permute(0, 2, 3, 1).cpu().numpy()


def upscale_stack(
    model: UpscaleModel,
    stack: np.ndarray,
    tile: int,
    overlap: int,
    before_tile: Callable[[], None] = lambda: None,
    after_tile: Callable[[], None] = lambda: None,
    tiles: list[Tile] | None = None,
) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, H*s, W*s, 3) uint8 at the model's native factor.

    `before_tile` runs before each forward (it raises to cancel), `after_tile` after it.
    """
    n, height, width, _ = stack.shape
    s = model.scale
    out = np.zeros((n, height * s, width * s, 3), np.float32)
    weight = np.zeros((height * s, width * s, 1), np.float32)
    if tiles is None:
        tiles = plan_tiles(height, width, tile, overlap, model.align)
    for t in tiles:
        before_tile()
        y = forward(model, stack[:, t.y0 : t.y1, t.x0 : t.x1])
        w = blend_weights(t, s)[:, :, None]
        out[:, t.y0 * s : t.y1 * s, t.x0 * s : t.x1 * s] += y * w
        weight[t.y0 * s : t.y1 * s, t.x0 * s : t.x1 * s] += w
        after_tile()
    out /= weight
    return np.clip(np.rint(out * 255), 0, 255).astype(np.uint8)
