"""Tiny random LoRAs for the tiny test models, written as real LoRA files.

Keys are in the diffusers/PEFT layout (`unet.<module>.lora_A.weight`, ...), the
metadata in the kohya/modelspec layout real LoRA files carry (base model version,
architecture, trigger phrase), so the registry and diffusers' loader both run for real.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import DiffusionPipeline
from safetensors.torch import save_file

ATTENTION_TARGETS = {
    "unet": ("to_q", "to_k", "to_v", "to_out.0"),
    "transformer": ("to_q", "to_k", "to_v", "to_out.0"),
    "text_encoder": ("q_proj", "k_proj", "v_proj", "out_proj"),
    "text_encoder_2": ("q_proj", "k_proj", "v_proj", "out_proj"),
}
ARCH_METADATA = {
    "sd15": ("sd_v1", "stable-diffusion-v1/lora"),
    "sdxl": ("sdxl_base_v1-0", "stable-diffusion-xl-v1-base/lora"),
    "sd3": ("sd3", "stable-diffusion-3-medium/lora"),
    "flux": ("flux1", "flux-1-dev/lora"),
}


def lora_tensors(
    pipe: DiffusionPipeline, rank: int = 4, seed: int = 0, scale: float = 0.3
) -> dict[str, torch.Tensor]:
    """Random low-rank factors for every attention projection of the denoiser and encoders."""
    gen = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    for component, targets in ATTENTION_TARGETS.items():
        module = getattr(pipe, component, None)
        if not isinstance(module, torch.nn.Module):
            continue
        for name, layer in module.named_modules():
            if isinstance(layer, torch.nn.Linear) and name.endswith(targets):
                down = torch.randn(rank, layer.in_features, generator=gen) * scale
                up = torch.randn(layer.out_features, rank, generator=gen) * scale
                tensors[f"{component}.{name}.lora_A.weight"] = down.contiguous()
                tensors[f"{component}.{name}.lora_B.weight"] = up.contiguous()
    if not tensors:
        raise ValueError("no attention projections found to put a LoRA on")
    return tensors


def write_tiny_lora(
    model_dir: Path,
    path: Path,
    architecture: str,
    seed: int = 0,
    trigger_phrase: str = "foxy style",
    metadata: bool = True,
) -> Path:
    """Write a LoRA for the tiny model saved in `model_dir` to `path` (.safetensors)."""
    pipe = DiffusionPipeline.from_pretrained(str(model_dir), local_files_only=True)
    tensors = lora_tensors(pipe, seed=seed)
    meta = {"format": "pt"}
    if metadata:
        version, spec = ARCH_METADATA[architecture]
        meta |= {"ss_base_model_version": version, "modelspec.architecture": spec,
                 "modelspec.trigger_phrase": trigger_phrase}  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=meta)
    return path
