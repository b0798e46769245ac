"""Tiny random super-resolution models, saved in the key layout spandrel detects.

Built from spandrel's own architecture classes (the original networks with their
original parameter names), so a saved state dict is exactly what a downloaded
model file holds, only with a few channels and blocks. The weights are random:
the outputs are noise, but deterministic, which is all parity tests need.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import save_file
from spandrel.architectures.Compact import Compact
from spandrel.architectures.ESRGAN import ESRGAN
from spandrel.architectures.OmniSR import OmniSR
from spandrel.architectures.SPAN import SPAN
from spandrel.architectures.SwinIR import SwinIR

SWINIR_SMALL = {
    "img_size": 16, "embed_dim": 12, "depths": [1], "num_heads": [2], "window_size": 4,
    "mlp_ratio": 2.0, "upscale": 2, "upsampler": "pixelshuffledirect",
}  # fmt: skip

TINY_UPSCALERS: dict[str, Callable[[], torch.nn.Module]] = {
    # spandrel's architecture id -> a tiny instance of it
    "ESRGAN": lambda: ESRGAN(num_filters=8, num_blocks=1, scale=4),
    "Compact": lambda: Compact(num_feat=8, num_conv=2, upscale=4),
    "SwinIR": lambda: SwinIR(**SWINIR_SMALL),
    "OmniSR": lambda: OmniSR(num_feat=8, block_num=1, window_size=4, res_num=1, up_scale=2),
    "SPAN": lambda: SPAN(num_in_ch=3, num_out_ch=3, feature_channels=8, upscale=2),
}
"""What each builds; the native scales are 4, 4, 2, 2 and 2."""

TINY_SCALES = {"ESRGAN": 4, "Compact": 4, "SwinIR": 2, "OmniSR": 2, "SPAN": 2}


def tiny_upscale_state(name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random state dict of the tiny `name` network, in its original key layout."""
    torch.manual_seed(seed)
    model = TINY_UPSCALERS[name]()
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def write_tiny_upscaler(target: Path, name: str = "ESRGAN", seed: int = 0) -> Path:
    """Save a tiny `name` model at `target`: `.safetensors`, or `.pth`/`.pt` (a plain state
    dict, loadable with torch.load(weights_only=True))."""
    state = tiny_upscale_state(name, seed)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.suffix == ".safetensors":
        save_file(state, str(target))
    else:
        torch.save(state, str(target))
    return target
