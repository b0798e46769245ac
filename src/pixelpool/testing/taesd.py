"""Tiny random TAESD decoders in both layouts the registry finds under vae_approx/.

A diffusers `AutoencoderTiny` directory (save_pretrained), and a ComfyUI/A1111-style
single decoder file made by renaming that decoder's keys to the original layout
(the original Sequential starts with a weightless Clamp, so every top-level index
is one higher: `layers.0.weight` -> `1.weight`). Both upsample 8x like the real
ones, with 8 channels instead of 64 and 4 latent channels, as the tiny SD 1.x and
FLUX test models have.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderTiny
from safetensors.torch import save_file

CHANNELS = (8, 8, 8, 8)


def build_tiny_taesd(latent_channels: int = 4, seed: int = 0) -> AutoencoderTiny:
    """An AutoencoderTiny with the real block layout (3, 3, 3, 1) and tiny widths."""
    torch.manual_seed(seed)
    return AutoencoderTiny(
        latent_channels=latent_channels,
        encoder_block_out_channels=CHANNELS,
        decoder_block_out_channels=CHANNELS,
        num_encoder_blocks=(1, 1, 1, 1),
        num_decoder_blocks=(3, 3, 3, 1),
    )


def original_decoder_state(model: AutoencoderTiny) -> dict[str, torch.Tensor]:
    """The decoder's weights under the original (madebyollin / ComfyUI) key names."""
    state = {}
    for key, value in model.decoder.state_dict().items():
        index, rest = key.removeprefix("layers.").split(".", 1)
        state[f"{int(index) + 1}.{rest}"] = value.detach().clone().contiguous()
    return state


def write_tiny_taesd_dir(target: Path, latent_channels: int = 4, seed: int = 0) -> Path:
    """A diffusers AutoencoderTiny directory at `target` (name it taesd, taef1, ...)."""
    build_tiny_taesd(latent_channels, seed).save_pretrained(target)
    return target


def write_tiny_taesd_file(target: Path, latent_channels: int = 4, seed: int = 0) -> Path:
    """A single decoder file (`.safetensors`, or `.pth`/`.pt` via torch.save) at `target`."""
    state = original_decoder_state(build_tiny_taesd(latent_channels, seed))
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.suffix == ".safetensors":
        save_file(state, str(target))
    else:
        torch.save(state, str(target))
    return target
