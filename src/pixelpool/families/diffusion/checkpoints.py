"""Identify single-file (original LDM / A1111 format) checkpoints from their tensor names.

The registry runs in the HTTP process, which never imports torch, so this reads the
safetensors header (a JSON table of contents) directly instead of loading any tensor.
"""

from __future__ import annotations

from collections.abc import Iterable

from pixelpool.families.files import read_header, read_tensor_names

__all__ = ["detect_architecture", "read_header", "read_tensor_names"]

UNET_PREFIX = "model.diffusion_model."
# Text encoder prefixes that tell the families apart (the UNet and VAE keys look alike).
_SD1_CLIP = "cond_stage_model.transformer."  # CLIP ViT-L (transformers layout)
_SD2_OPENCLIP = "cond_stage_model.model."  # OpenCLIP ViT-H
_SDXL_CLIP = "conditioner.embedders.0.transformer."  # CLIP ViT-L
_SDXL_OPENCLIP = "conditioner.embedders.1.model."  # OpenCLIP ViT-bigG
_REFINER_OPENCLIP = "conditioner.embedders.0.model."  # refiner: OpenCLIP ViT-bigG only


def detect_architecture(names: Iterable[str]) -> str | None:
    """The model family of an LDM-format checkpoint, judged by its text encoder keys.

    Returns "sd15" (SD 1.x), "sdxl" (SDXL base), "sdxl-refiner" or "sd2" (recognised but
    not served), or None when the file holds no full diffusion model (LoRA, VAE, unknown).
    """
    prefixes = {
        prefix: False
        for prefix in (
            UNET_PREFIX,
            _SD1_CLIP,
            _SD2_OPENCLIP,
            _SDXL_CLIP,
            _SDXL_OPENCLIP,
            _REFINER_OPENCLIP,
        )
    }
    for name in names:
        for prefix, seen in prefixes.items():
            if not seen and name.startswith(prefix):
                prefixes[prefix] = True
    if not prefixes[UNET_PREFIX]:
        return None
    if prefixes[_SDXL_OPENCLIP] and prefixes[_SDXL_CLIP]:
        return "sdxl"
    if prefixes[_REFINER_OPENCLIP]:
        return "sdxl-refiner"
    if prefixes[_SD1_CLIP]:
        return "sd15"
    if prefixes[_SD2_OPENCLIP]:
        return "sd2"
    return None
