"""Tiny, randomly initialised diffusion pipelines built from real architecture configs.

They let tests and the demo exercise the real diffusers loading and sampling code
in seconds on a CPU, with nothing fetched from the network.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
)

from pixelpool.testing.vocab import write_clip_tokenizer_files

TEXT_DIM = 32
VOCAB_WORDS = [
    "a",
    "photo",
    "of",
    "cat",
    "dog",
    "fox",
    "red",
    "blue",
    "green",
    "tree",
    "house",
    "mountain",
    "sky",
    "sunset",
    "portrait",
    "painting",
    "landscape",
    "city",
    "night",
    "day",
    "forest",
    "river",
    "ocean",
    "flower",
    "girl",
    "boy",
    "man",
    "woman",
    "masterpiece",
    "best",
    "quality",
    "low",
    "blurry",
    "bad",
    "anatomy",
    "watermark",
    "text",
]


def _tokenizer(directory: Path, pad_token: str = "<|endoftext|>") -> CLIPTokenizer:
    write_clip_tokenizer_files(directory, VOCAB_WORDS, pad_token=pad_token)
    return CLIPTokenizer.from_pretrained(str(directory), local_files_only=True)


def _text_config(vocab_size: int, projection_dim: int = TEXT_DIM) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=TEXT_DIM,
        intermediate_size=64,  # a SIMD-friendly width, as real ones are (see invariance.py)
        num_attention_heads=4,
        num_hidden_layers=2,
        max_position_embeddings=77,
        projection_dim=projection_dim,
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1,
        hidden_act="quick_gelu",
    )


def _vae(**overrides: Any) -> AutoencoderKL:
    """Four blocks give the real 8x spatial downscale, so sizes behave as in SD.

    Flow models (SD3, FLUX) override the scaling and shift and drop the quant convs.
    """
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        block_out_channels=[8, 8, 16, 16],
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=64,
        **overrides,
    )


def _scheduler() -> EulerDiscreteScheduler:
    return EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        steps_offset=1,
        timestep_spacing="leading",
    )


def build_tiny_sd15(workdir: Path, seed: int = 0) -> StableDiffusionPipeline:
    """An SD 1.x pipeline with the real block layout and tiny widths."""
    torch.manual_seed(seed)
    tokenizer = _tokenizer(workdir / "tokenizer")
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=TEXT_DIM,
        attention_head_dim=4,
        norm_num_groups=8,
    )
    text_encoder = CLIPTextModel(_text_config(len(tokenizer)))
    return StableDiffusionPipeline(
        vae=_vae(),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def build_tiny_sdxl(workdir: Path, seed: int = 0) -> StableDiffusionXLPipeline:
    """An SDXL pipeline: two text encoders, added time/text embeddings, tiny widths."""
    torch.manual_seed(seed)
    tokenizer = _tokenizer(workdir / "tokenizer")
    tokenizer_2 = _tokenizer(workdir / "tokenizer_2", pad_token="!")
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=80,  # 6 * 8 + 32
        cross_attention_dim=64,
        norm_num_groups=8,
    )
    text_encoder = CLIPTextModel(_text_config(len(tokenizer)))
    text_encoder_2 = CLIPTextModelWithProjection(_text_config(len(tokenizer_2)))
    return StableDiffusionXLPipeline(
        vae=_vae(),
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        unet=unet,
        scheduler=_scheduler(),
        force_zeros_for_empty_prompt=True,
    )
