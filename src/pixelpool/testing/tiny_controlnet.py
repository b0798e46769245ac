"""Tiny ControlNets for the demo models, built in-process from their UNets.

`ControlNetModel.from_unet` copies the UNet's encoder and zero-initialises the
"zero convolutions" (so a fresh ControlNet changes nothing). Tests need one that
does change the image, so every zero-initialised tensor gets seeded random values.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import ControlNetModel, UNet2DConditionModel

CONDITIONING_CHANNELS = (8, 8, 16, 16)  # three 2x downscales: the VAE's 8x


def build_tiny_controlnet(model_dir: Path, seed: int = 0) -> ControlNetModel:
    """A ControlNet for the diffusers model at `model_dir` (its UNet's layout and weights)."""
    unet = UNet2DConditionModel.from_pretrained(model_dir / "unet", local_files_only=True)
    controlnet = ControlNetModel.from_unet(
        unet, conditioning_embedding_out_channels=CONDITIONING_CHANNELS
    )
    generator = torch.Generator("cpu").manual_seed(seed)
    with torch.no_grad():
        for param in controlnet.parameters():
            if not param.any():
                param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
    return controlnet.eval()


def write_tiny_controlnet(model_dir: Path, target: Path, seed: int = 0) -> Path:
    """Save a tiny ControlNet for `model_dir` as a diffusers directory at `target`."""
    build_tiny_controlnet(model_dir, seed).save_pretrained(target)
    return target
