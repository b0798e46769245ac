"""Tiny random SD3 and FLUX pipelines (flow matching), built from real architecture configs.

SD3 leaves its T5 encoder out (diffusers then feeds zeros in its place, a supported
configuration). FLUX needs T5: it gets a tiny one with a tokenizer built in-process.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
)
from transformers import (
    CLIPTextModel,
    CLIPTextModelWithProjection,
    T5Config,
    T5EncoderModel,
    T5TokenizerFast,
)

from pixelpool.testing.tiny import TEXT_DIM, VOCAB_WORDS, _text_config, _tokenizer, _vae
from pixelpool.testing.vocab import write_t5_tokenizer_files


def _flow_vae(scaling_factor: float = 1.5305, shift_factor: float = 0.0609) -> AutoencoderKL:
    return _vae(
        scaling_factor=scaling_factor,
        shift_factor=shift_factor,
        use_quant_conv=False,
        use_post_quant_conv=False,
    )


def build_tiny_sd3(workdir: Path, seed: int = 0) -> StableDiffusion3Pipeline:
    """SD3: two CLIP encoders (pooled 2 x 32), a one-layer MMDiT, no T5."""
    torch.manual_seed(seed)
    tokenizer = _tokenizer(workdir / "tokenizer")
    tokenizer_2 = _tokenizer(workdir / "tokenizer_2", pad_token="!")
    transformer = SD3Transformer2DModel(
        sample_size=32,
        patch_size=2,
        in_channels=4,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=4,
        joint_attention_dim=2 * TEXT_DIM,
        caption_projection_dim=32,
        pooled_projection_dim=2 * TEXT_DIM,
        out_channels=4,
        pos_embed_max_size=32,
    )
    return StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=_flow_vae(),
        text_encoder=CLIPTextModelWithProjection(_text_config(len(tokenizer))),
        tokenizer=tokenizer,
        text_encoder_2=CLIPTextModelWithProjection(_text_config(len(tokenizer_2))),
        tokenizer_2=tokenizer_2,
        text_encoder_3=None,
        tokenizer_3=None,
    )


def write_tiny_sd3(target: Path, seed: int = 0) -> Path:
    """Save a tiny SD3 pipeline as a diffusers directory at `target`."""
    pipe = build_tiny_sd3(target.parent / f".{target.name}-tokenizers", seed)
    pipe.save_pretrained(target)
    return target


def build_tiny_flux(workdir: Path, seed: int = 0) -> FluxPipeline:
    """FLUX: CLIP (pooled) + T5 text encoders, one double and one single stream block."""
    torch.manual_seed(seed)
    tokenizer = _tokenizer(workdir / "tokenizer")
    write_t5_tokenizer_files(workdir / "tokenizer_2", VOCAB_WORDS)
    tokenizer_2 = T5TokenizerFast.from_pretrained(str(workdir / "tokenizer_2"))
    t5 = T5EncoderModel(
        T5Config(
            vocab_size=len(tokenizer_2),
            d_model=TEXT_DIM,
            d_kv=8,
            d_ff=64,  # a SIMD-friendly width, as in real models (see diffusion/invariance.py)
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=8,
            decoder_start_token_id=0,
            pad_token_id=0,
            eos_token_id=1,
        )
    )
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,  # 4 latent channels packed 2x2
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=TEXT_DIM,
        pooled_projection_dim=TEXT_DIM,
        axes_dims_rope=[4, 4, 8],
    )
    return FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=_flow_vae(scaling_factor=0.3611, shift_factor=0.1159),
        text_encoder=CLIPTextModel(_text_config(len(tokenizer))),
        tokenizer=tokenizer,
        text_encoder_2=t5,
        tokenizer_2=tokenizer_2,
        transformer=transformer,
    )


def write_tiny_flux(target: Path, seed: int = 0) -> Path:
    """Save a tiny FLUX pipeline as a diffusers directory at `target`."""
    pipe = build_tiny_flux(target.parent / f".{target.name}-tokenizers", seed)
    pipe.save_pretrained(target)
    return target
