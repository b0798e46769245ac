"""Tiny ControlNets for the demo models, built in-process from their UNets.

`ControlNetModel.from_unet` copies the UNet's encoder and zero-initialises the
"zero convolutions" (so a fresh ControlNet changes nothing). Tests need one that
does change the image, so every zero-initialised tensor gets seeded random values.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import ControlNetModel, ControlNetUnionModel, UNet2DConditionModel

CONDITIONING_CHANNELS = (8, 8, 16, 16)  # three 2x downscales: the VAE's 8x


def build_tiny_controlnet(model_dir: Path, seed: int = 0) -> ControlNetModel:
    """A ControlNet for the diffusers model at `model_dir` (its UNet's layout and weights)."""
    unet = UNet2DConditionModel.from_pretrained(model_dir / "unet", local_files_only=True)
    controlnet = ControlNetModel.from_unet(
        unet, conditioning_embedding_out_channels=CONDITIONING_CHANNELS
    )
    _randomise_zeros(controlnet, seed)
    return controlnet.eval()


def _randomise_zeros(model: torch.nn.Module, seed: int) -> None:
    generator = torch.Generator("cpu").manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if not param.any():
                param.copy_(torch.randn(param.shape, generator=generator) * 0.3)


def build_tiny_union_controlnet(model_dir: Path, seed: int = 0) -> ControlNetUnionModel:
    """A union ControlNet (SDXL's ControlNetUnionModel) for the model at `model_dir`: its
    control-type transformer is narrowed to the UNet's first block width, as the real
    ones (320) match SDXL's."""
    unet = UNet2DConditionModel.from_pretrained(model_dir / "unet", local_files_only=True)
    torch.manual_seed(seed)  # from_unet initialises layers the UNet lacks at random
    full = ControlNetUnionModel.from_unet(
        unet, conditioning_embedding_out_channels=CONDITIONING_CHANNELS
    )
    width = unet.config.block_out_channels[0]
    config = {k: v for k, v in full.config.items() if k != "_use_default_values"}
    torch.manual_seed(seed)
    net = ControlNetUnionModel.from_config(
        {**config, "num_trans_channel": width, "num_proj_channel": width, "num_trans_head": 2}
    )
    own = net.state_dict()
    net.load_state_dict(
        {k: v for k, v in full.state_dict().items() if own[k].shape == v.shape}, strict=False
    )
    _randomise_zeros(net, seed)
    return net.eval()


def write_tiny_union_controlnet(model_dir: Path, target: Path, seed: int = 0) -> Path:
    build_tiny_union_controlnet(model_dir, seed).save_pretrained(target)
    return target


def write_tiny_controlnet(model_dir: Path, target: Path, seed: int = 0) -> Path:
    """Save a tiny ControlNet for `model_dir` as a diffusers directory at `target`."""
    build_tiny_controlnet(model_dir, seed).save_pretrained(target)
    return target
