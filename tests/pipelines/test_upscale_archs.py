"""Every architecture spandrel detects that builds tiny: untiled output equals spandrel
called directly (within 1/255) and tiled output equals untiled (within 2/255).

Tiles start on the model's attention-window grid and discard the outer margin of each
overlap, so wherever a model's context fits that margin, tiles add no seams. OmniSR
alone has global context (grid attention spans the whole image, and channel attention
pools all of it): no finite overlap matches it, and its bound below is measured, not
zero.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pixelpool.families.upscale import DESCRIPTION
from pixelpool.families.upscale.params import UpscaleParams
from pixelpool.pipelines.upscale.family import upscale_images
from pixelpool.pipelines.upscale.model import load_descriptor, load_upscaler
from pixelpool.pipelines.upscale.tiled import default_overlap
from pixelpool.pipelines.upscale.tiling import plan_tiles
from pixelpool.testing.tiny_upscale import TINY_SCALES, TINY_UPSCALERS, write_tiny_upscaler
from pixelpool.testing.tiny_upscale import smooth_picture as picture

# name -> (height, width, tile, overlap or None for the model's default), and the bound.
WIDER = {"SAFMN": (64, 64, 48, None)}  # its default overlap is 40 (OVERLAP_BY_ARCH)
# Measured 3-4/255 at most (mean 0.15-0.3) with overlaps 16 to 40: a wider one helps not.
GLOBAL = {"OmniSR": ((64, 64, 40, 32), 6)}
CASES = {name: WIDER.get(name, (48, 40, 24, None)) for name in TINY_UPSCALERS}
CASES.update({name: case for name, (case, _) in GLOBAL.items()})


def direct(path: Path, rgb: np.ndarray) -> np.ndarray:
    """spandrel called directly, as its README shows: the descriptor on a [0, 1] tensor."""
    model = load_descriptor(path)
    x = torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None].float() / 255
    with torch.inference_mode():
        y = model(x)
    return np.clip(np.rint(y[0].permute(1, 2, 0).numpy() * 255), 0, 255).astype(np.uint8)


def run(model, rgb, **params) -> np.ndarray:
    p = UpscaleParams(image="unused", **params)
    return upscale_images(model, [p], [(rgb, None)], lambda *a: None, lambda: False)[0]


@pytest.mark.parametrize("name", list(TINY_UPSCALERS))
def test_tiled_equals_untiled_equals_spandrel(tmp_path: Path, name: str) -> None:
    path = write_tiny_upscaler(tmp_path / f"{name}.safetensors", name)
    height, width, tile, overlap = CASES[name]
    rgb = picture(height, width)
    assert DESCRIPTION.detect(tmp_path, path).architecture == name  # the registry's guess
    model = load_upscaler(path, "cpu")
    assert model.descriptor.architecture.id == name  # spandrel's detection
    whole = run(model, rgb, tile=max(height, width))
    ref = direct(path, rgb)
    s = TINY_SCALES[name]
    assert whole.shape == ref.shape == (height * s, width * s, 3)
    assert np.abs(whole.astype(int) - ref).max() <= 1
    tiled = run(model, rgb, tile=tile, overlap=overlap)
    shared = default_overlap(model) if overlap is None else overlap
    assert len(plan_tiles(height, width, tile, shared, model.align)) > 1
    bound = GLOBAL[name][1] if name in GLOBAL else 2
    assert np.abs(tiled.astype(int) - whole).max() <= bound
