"""Tiny random IP-Adapters for the tiny test models, written as real IP-Adapter files.

The weight file has the original IP-Adapter layout that diffusers' `load_ip_adapter`
reads (`image_proj.*`, `ip_adapter.<n>.to_k_ip.weight`, ...), the image encoder is a
tiny `CLIPVisionModelWithProjection` saved beside it as `image_encoder/`, so the
registry's scanner and diffusers' loader both run for real. "plus" variants use a
perceiver resampler over the encoder's hidden states (`image_proj.latents`).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from diffusers import DiffusionPipeline, UNet2DConditionModel
from diffusers.models.embeddings import ImageProjection, IPAdapterPlusImageProjection
from safetensors.torch import save_file
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

ENCODER_WIDTH = 32  # the encoder's hidden size and projection size
IMAGE_SIZE = 32
PLUS_TOKENS = 4
ARCH_METADATA = {
    "sd15": "stable-diffusion-v1/ip-adapter",
    "sdxl": "stable-diffusion-xl-v1-base/ip-adapter",
}


def write_image_encoder(directory: Path, seed: int = 0) -> Path:
    """A tiny CLIP vision encoder (+ its image processor config) saved in `directory`."""
    torch.manual_seed(seed)
    config = CLIPVisionConfig(
        hidden_size=ENCODER_WIDTH,
        intermediate_size=64,
        projection_dim=ENCODER_WIDTH,
        num_attention_heads=4,
        num_hidden_layers=2,
        image_size=IMAGE_SIZE,
        patch_size=8,
        hidden_act="quick_gelu",
    )
    CLIPVisionModelWithProjection(config).eval().save_pretrained(directory)
    CLIPImageProcessor(size=IMAGE_SIZE, crop_size=IMAGE_SIZE).save_pretrained(directory)
    return directory


def _attention_weights(unet: UNet2DConditionModel, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """`ip_adapter.<n>.to_{k,v}_ip.weight` for every cross-attention, numbered as the
    original IP-Adapter does (1, 3, 5, ... in the order of the UNet's processors)."""
    cfg = unet.config
    tensors, key_id = {}, 1
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):
            continue
        if name.startswith("mid_block"):
            hidden = cfg.block_out_channels[-1]
        elif name.startswith("up_blocks"):
            hidden = list(reversed(cfg.block_out_channels))[int(name[len("up_blocks.")])]
        else:
            hidden = cfg.block_out_channels[int(name[len("down_blocks.")])]
        for proj in ("to_k_ip", "to_v_ip"):
            weight = torch.randn(hidden, cfg.cross_attention_dim, generator=gen) * 0.5
            tensors[f"ip_adapter.{key_id}.{proj}.weight"] = weight
        key_id += 2
    return tensors


def _plus_to_original(name: str) -> str:
    """A diffusers IPAdapterPlusImageProjection key -> the original resampler's key."""
    name = re.sub(r"layers\.(\d)\.ln0", r"layers.\1.0.norm1", name)
    name = re.sub(r"layers\.(\d)\.ln1", r"layers.\1.0.norm2", name)
    name = re.sub(r"layers\.(\d)\.attn\.to_out\.0", r"layers.\1.0.to_out", name)
    name = re.sub(r"layers\.(\d)\.attn\.", r"layers.\1.0.", name)
    name = re.sub(r"layers\.(\d)\.ff\.0", r"layers.\1.1.0", name)
    name = re.sub(r"layers\.(\d)\.ff\.1\.net\.0\.proj", r"layers.\1.1.1", name)
    return re.sub(r"layers\.(\d)\.ff\.1\.net\.2", r"layers.\1.1.3", name)


def _projection_weights(cross_dim: int, plus: bool) -> dict[str, torch.Tensor]:
    if not plus:
        proj = ImageProjection(
            image_embed_dim=ENCODER_WIDTH, cross_attention_dim=cross_dim, num_image_text_embeds=4
        )
        return {k.replace("image_embeds", "proj"): v for k, v in proj.state_dict().items()}
    resampler = IPAdapterPlusImageProjection(
        embed_dims=ENCODER_WIDTH, output_dims=cross_dim, hidden_dims=64, depth=4, dim_head=64,
        heads=1, num_queries=PLUS_TOKENS,
    )  # fmt: skip
    state = resampler.state_dict()
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if ".attn.to_k." in key:
            value = torch.cat([value, state[key.replace(".to_k.", ".to_v.")]])
            key = key.replace(".to_k.", ".to_kv.")
        elif ".attn.to_v." in key:
            continue
        out[_plus_to_original(key)] = value
    return out


def ip_adapter_tensors(
    unet: UNet2DConditionModel, plus: bool = False, seed: int = 0
) -> dict[str, torch.Tensor]:
    """Random IP-Adapter weights for `unet`, in the original file layout."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    proj = _projection_weights(unet.config.cross_attention_dim, plus)
    tensors = {f"image_proj.{k}": v.contiguous() for k, v in proj.items()}
    tensors |= {k: v.contiguous() for k, v in _attention_weights(unet, gen).items()}
    return tensors


def write_tiny_ip_adapter(
    model_dir: Path,
    path: Path,
    architecture: str,
    plus: bool = False,
    seed: int = 0,
    encoder: bool = True,
    metadata: bool = True,
) -> Path:
    """Write an IP-Adapter for the tiny model in `model_dir` to `path` (.safetensors), and
    (with `encoder`) a tiny image encoder as `image_encoder/` beside it."""
    unet = DiffusionPipeline.from_pretrained(str(model_dir), local_files_only=True).unet
    tensors = ip_adapter_tensors(unet, plus=plus, seed=seed)
    meta = {"format": "pt"}
    if metadata:
        meta["modelspec.architecture"] = ARCH_METADATA[architecture]
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=meta)
    if encoder and not (path.parent / "image_encoder" / "config.json").is_file():
        write_image_encoder(path.parent / "image_encoder", seed=seed)
    return path
