"""Single-file (LDM format) checkpoints load offline and match the diffusers original."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import huggingface_hub.constants
import numpy as np
import pytest
import torch
from accelerate import init_empty_weights
from diffusers import AutoencoderKL, DiffusionPipeline, UNet2DConditionModel
from diffusers.loaders.single_file_utils import (
    convert_ldm_clip_checkpoint,
    convert_ldm_unet_checkpoint,
    convert_ldm_vae_checkpoint,
    convert_open_clip_checkpoint,
)
from safetensors.torch import load_file, save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from pixelpool.families.diffusion.checkpoints import detect_architecture, read_tensor_names
from pixelpool.pipelines.diffusion.singlefile import (
    CLIP_VOCAB_SIZE,
    bundled_config_dir,
    clip_bpe_vocab,
    load_single_file,
    resolve_config_dir,
)
from pixelpool.testing.singlefile import (
    SD1_CLIP_PREFIX,
    SDXL_CLIP_PREFIX,
    SDXL_OPENCLIP_PREFIX,
    UNET_PREFIX,
    VAE_PREFIX,
    clip_to_ldm,
    open_clip_to_ldm,
    save_single_file,
    unet_to_ldm,
    vae_to_ldm,
)
from pixelpool.testing.tiny import build_tiny_sd15, build_tiny_sdxl

BUILDERS: dict[str, Callable[[Path, int], DiffusionPipeline]] = {
    "sd15": build_tiny_sd15,
    "sdxl": build_tiny_sdxl,
}
# Parameter counts of the released models, for the bundled configs to reproduce.
KNOWN_PARAMS = {
    ("sd15", "unet"): 859_520_964,
    ("sdxl", "unet"): 2_567_463_684,
    ("sd15", "vae"): 83_653_863,
    ("sdxl", "vae"): 83_653_863,
    ("sd15", "text_encoder"): 123_060_480,  # CLIP ViT-L/14 text tower
    ("sdxl", "text_encoder"): 123_060_480,
    ("sdxl", "text_encoder_2"): 694_659_840,  # OpenCLIP ViT-bigG/14 text tower + projection
}


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No hub access and an empty hub cache: everything must come from local files."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def _generate(pipe: DiffusionPipeline) -> np.ndarray:
    pipe.set_progress_bar_config(disable=True)
    result = pipe(
        prompt="a photo of a cat",
        num_inference_steps=3,
        height=64,
        width=64,
        output_type="np",
        generator=torch.Generator("cpu").manual_seed(0),
    )
    return np.asarray(result.images) * 255.0


def _assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


@pytest.mark.parametrize("arch", ["sd15", "sdxl"])
def test_single_file_round_trip_matches_diffusers_directory(arch: str, tmp_path: Path) -> None:
    pipe = BUILDERS[arch](tmp_path / "build", 0)
    pipe.save_pretrained(tmp_path / "diffusers")
    checkpoint = save_single_file(pipe, tmp_path / "model.safetensors")

    assert detect_architecture(read_tensor_names(checkpoint)) == arch
    assert (tmp_path / "model.config" / "model_index.json").is_file()
    assert not list((tmp_path / "model.config").rglob("*.safetensors"))

    cache = tmp_path / "cache"
    loaded = load_single_file(checkpoint, arch, torch.float32, cache_dir=cache)
    assert not cache.exists()  # the sidecar config was used, not the bundled one
    reference = type(pipe).from_pretrained(tmp_path / "diffusers", local_files_only=True)

    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        if getattr(reference, name, None) is not None:
            _assert_same_weights(getattr(loaded, name), getattr(reference, name))
    assert np.abs(_generate(loaded) - _generate(reference)).max() <= 1.0


def test_explicit_config_dir_wins_and_missing_weights_fail(tmp_path: Path) -> None:
    pipe = build_tiny_sd15(tmp_path / "build", 0)
    checkpoint = save_single_file(pipe, tmp_path / "model.safetensors")
    config = (tmp_path / "model.config").rename(tmp_path / "elsewhere")
    loaded = load_single_file(checkpoint, "sd15", torch.float32, config_dir=config)
    _assert_same_weights(loaded.unet, pipe.unet)

    tensors = load_file(checkpoint)
    del tensors[UNET_PREFIX + "out.2.bias"]
    save_file(tensors, str(tmp_path / "broken.safetensors"))
    with pytest.raises(ValueError, match="weights missing"):
        load_single_file(tmp_path / "broken.safetensors", "sd15", torch.float32, config_dir=config)


# Keys that released checkpoints carry besides the weights diffusers needs.
EXTRA_KEYS = {
    "sd15": {SD1_CLIP_PREFIX + "text_model.embeddings.position_ids": torch.arange(77)[None]},
    "sdxl": {
        SDXL_CLIP_PREFIX + "text_model.embeddings.position_ids": torch.arange(77)[None],
        SDXL_OPENCLIP_PREFIX + "logit_scale": torch.tensor(4.6),
    },
}


@pytest.mark.parametrize("arch", ["sd15", "sdxl"])
def test_half_precision_file_with_extra_keys_loads(arch: str, tmp_path: Path) -> None:
    pipe = BUILDERS[arch](tmp_path / "build", 0)
    checkpoint = save_single_file(pipe, tmp_path / "model.safetensors")
    tensors = {k: v.half() for k, v in load_file(checkpoint).items()}
    tensors |= {"alphas_cumprod": torch.rand(1000), **EXTRA_KEYS[arch]}
    save_file(tensors, str(checkpoint))
    loaded = load_single_file(checkpoint, arch, torch.float16)
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        if getattr(pipe, name, None) is not None:
            model = getattr(loaded, name)
            assert model.dtype == torch.float16, name
            _assert_same_weights(model, getattr(pipe, name).half())


def test_config_dir_falls_back_to_bundled_without_sidecar(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    resolved = resolve_config_dir(tmp_path / "plain.safetensors", "sdxl", cache_dir=cache)
    assert resolved.parent == cache and (resolved / "tokenizer_2" / "vocab.json").is_file()
    assert resolved == bundled_config_dir("sdxl", cache_dir=cache)
    assert [p.name for p in cache.iterdir()] == [resolved.name]  # no staging left behind


def test_unsupported_architecture_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unsupported"):
        load_single_file(tmp_path / "x.safetensors", "sd2", torch.float32)


def test_generated_clip_tokenizers_match_openai_ids(tmp_path: Path) -> None:
    vocab, merges = clip_bpe_vocab()
    assert len(vocab) == CLIP_VOCAB_SIZE and len(merges) == 48_894
    assert vocab["<|startoftext|>"] == 49406 and vocab["<|endoftext|>"] == 49407
    assert vocab["!"] == 0 and vocab["a</w>"] == 320 and vocab["cat</w>"] == 2368

    expected = [49406, 320, 1125, 539, 320, 2368, 49407]
    config = bundled_config_dir("sdxl", cache_dir=tmp_path)
    assert bundled_config_dir("sdxl", cache_dir=tmp_path) == config  # built once, reused
    tokenizer = CLIPTokenizer.from_pretrained(config / "tokenizer", local_files_only=True)
    tokenizer_2 = CLIPTokenizer.from_pretrained(config / "tokenizer_2", local_files_only=True)
    assert tokenizer("a photo of a cat").input_ids == expected
    assert tokenizer_2("a photo of a cat").input_ids == expected
    padded = tokenizer_2("a photo of a cat", padding="max_length", max_length=77).input_ids
    assert len(padded) == 77 and padded[-1] == 0  # SDXL's second tokenizer pads with "!"
    assert tokenizer("a cat", padding="max_length", max_length=77).input_ids[-1] == 49407
    sd15 = bundled_config_dir("sd15", cache_dir=tmp_path) / "tokenizer"
    assert (
        CLIPTokenizer.from_pretrained(sd15, local_files_only=True)("a photo of a cat").input_ids
        == expected
    )


def _meta_components(arch: str, config: Path) -> dict[str, torch.nn.Module]:
    """The real-size models of a bundled config, with no memory behind their weights."""
    with init_empty_weights():
        models: dict[str, torch.nn.Module] = {
            "unet": UNet2DConditionModel.from_config(
                UNet2DConditionModel.load_config(config / "unet")
            ),
            "vae": AutoencoderKL.from_config(AutoencoderKL.load_config(config / "vae")),
            "text_encoder": CLIPTextModel(CLIPTextConfig.from_pretrained(config / "text_encoder")),
        }
        if arch == "sdxl":
            text_config = CLIPTextConfig.from_pretrained(config / "text_encoder_2")
            models["text_encoder_2"] = CLIPTextModelWithProjection(text_config)
    return models


def _shapes(state: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items()}


@pytest.mark.parametrize("arch", ["sd15", "sdxl"])
def test_bundled_configs_are_the_real_models(arch: str, tmp_path: Path) -> None:
    config = bundled_config_dir(arch, cache_dir=tmp_path)
    models = _meta_components(arch, config)
    for name, model in models.items():
        assert sum(p.numel() for p in model.parameters()) == KNOWN_PARAMS[(arch, name)], name

    # Full-size LDM keys from our converter must map back onto each model's exact state dict.
    unet, vae, text_encoder = models["unet"], models["vae"], models["text_encoder"]
    ldm = {UNET_PREFIX + k: v for k, v in unet_to_ldm(unet.state_dict(), 2).items()}
    ldm |= {VAE_PREFIX + k: v for k, v in vae_to_ldm(vae.state_dict(), 4).items()}
    clip_prefix = SD1_CLIP_PREFIX if arch == "sd15" else SDXL_CLIP_PREFIX
    ldm |= clip_to_ldm(text_encoder.state_dict(), clip_prefix)
    if arch == "sdxl":
        ldm |= open_clip_to_ldm(models["text_encoder_2"].state_dict(), SDXL_OPENCLIP_PREFIX)
    assert detect_architecture(ldm) == arch

    unet_sd = convert_ldm_unet_checkpoint(ldm, dict(unet.config))
    assert _shapes(unet_sd) == _shapes(unet.state_dict())
    vae_sd = convert_ldm_vae_checkpoint(ldm, dict(vae.config))
    assert _shapes(vae_sd) == _shapes(vae.state_dict())
    clip_sd = {
        k.removeprefix("text_model."): v for k, v in convert_ldm_clip_checkpoint(ldm).items()
    }
    assert _shapes(clip_sd) == _shapes(text_encoder.state_dict())
    if arch == "sdxl":
        bigg = models["text_encoder_2"]
        bigg_sd = convert_open_clip_checkpoint(bigg, ldm, prefix=SDXL_OPENCLIP_PREFIX)
        assert _shapes(bigg_sd) == _shapes(bigg.state_dict())
