"""Tiny random super-resolution models, saved in the key layout spandrel detects.

Built from spandrel's own architecture classes (the original networks with their
original parameter names), so a saved state dict is exactly what a downloaded
model file holds, only with a few channels and blocks. The weights are random:
the outputs are noise, but deterministic, which is all parity tests need.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter
from safetensors.torch import save_file
from spandrel.architectures.Compact import Compact
from spandrel.architectures.DAT import DAT
from spandrel.architectures.DITN import DITN
from spandrel.architectures.ESRGAN import ESRGAN
from spandrel.architectures.HAT import HAT
from spandrel.architectures.MoSR import MoSR
from spandrel.architectures.OmniSR import OmniSR
from spandrel.architectures.PLKSR import PLKSR
from spandrel.architectures.RCAN import RCAN
from spandrel.architectures.RGT import RGT
from spandrel.architectures.SAFMN import SAFMN
from spandrel.architectures.SeemoRe import SeemoRe
from spandrel.architectures.SPAN import SPAN
from spandrel.architectures.SwiftSRGAN import SwiftSRGAN
from spandrel.architectures.Swin2SR import Swin2SR
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
    "HAT": lambda: HAT(
        img_size=16, embed_dim=12, depths=(1,), num_heads=(2,), window_size=4,
        squeeze_factor=4, mlp_ratio=2.0, upscale=2, num_feat=8,
    ),
    "DAT": lambda: DAT(
        img_size=16, embed_dim=16, split_size=[2, 4], depth=[1], num_heads=[2],
        expansion_factor=2.0, upscale=2,
    ),
    "Swin2SR": lambda: Swin2SR(
        img_size=16, embed_dim=12, depths=[1], num_heads=[2], window_size=4, mlp_ratio=2.0,
        upscale=2, upsampler="pixelshuffledirect",
    ),
    "RGT": lambda: RGT(img_size=16, embed_dim=12, depth=[1], num_heads=[2], upscale=2,
                       split_size=[4, 4]),
    "RCAN": lambda: RCAN(scale=2, n_resgroups=1, n_resblocks=1, n_feats=8, reduction=4),
    "SAFMN": lambda: SAFMN(dim=8, n_blocks=1, upscaling_factor=2),
    "PLKSR": lambda: PLKSR(dim=8, n_blocks=1, upscaling_factor=2, kernel_size=9),
    "MoSR": lambda: MoSR(upscale=2, n_block=1, dim=8),
    "SeemoRe": lambda: SeemoRe(scale=2, num_experts=2, num_layers=1, embedding_dim=8,
                               recursive=1),
    "DITN": lambda: DITN(dim=12, ITL_blocks=1, SAL_blocks=1, patch_size=4, upscale=2),
    "SwiftSRGAN": lambda: SwiftSRGAN(num_channels=8, num_blocks=1, upscale_factor=2),
}  # fmt: skip
"""What each builds: ESRGAN and Compact at 4x, the others at 2x."""

TINY_SCALES = {name: 4 if name in ("ESRGAN", "Compact") else 2 for name in TINY_UPSCALERS}


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


def smooth_picture(height: int = 32, width: int = 32, seed: int = 0) -> np.ndarray:
    """A smooth random RGB picture (blurred noise): texture at every scale, like a photo."""
    noise = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(noise).filter(ImageFilter.GaussianBlur(1.5)))
