"""Which files of a repo a pull takes, and where they go: pure functions over names."""

from __future__ import annotations

import pytest

from pixelpool.pull.plan import (
    PullError,
    config_plan,
    diffusers_plan,
    plain_name,
    single_file,
    tagger_plan,
)

SDXL_INDEX = {
    "_class_name": "StableDiffusionXLPipeline",
    "unet": ["diffusers", "UNet2DConditionModel"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "scheduler": ["diffusers", "EulerDiscreteScheduler"],
    "feature_extractor": [None, None],
}
SDXL_FILES = [
    "model_index.json", "README.md", "sd_xl_base_1.0.safetensors",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors.index.json",
    "unet/diffusion_pytorch_model-00001-of-00002.safetensors",
    "unet/diffusion_pytorch_model-00002-of-00002.safetensors",
    "unet/diffusion_pytorch_model.safetensors.index.fp16.json",
    "unet/diffusion_pytorch_model.fp16-00001-of-00002.safetensors",
    "unet/diffusion_pytorch_model.fp16-00002-of-00002.safetensors",
    "unet/diffusion_pytorch_model.bin", "unet/diffusion_flax_model.msgpack",
    "text_encoder/config.json", "text_encoder/model.safetensors", "text_encoder/model.onnx",
    "tokenizer/vocab.json", "tokenizer/merges.txt", "tokenizer/tokenizer_config.json",
    "scheduler/scheduler_config.json",
    "feature_extractor/preprocessor_config.json",
]  # fmt: skip


def test_diffusers_repo_takes_fp16_safetensors_and_configs_only() -> None:
    plan = diffusers_plan(SDXL_FILES, SDXL_INDEX, None)
    assert plan.folder == "sdxl"
    assert set(plan.files) == {
        "model_index.json", "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors.index.fp16.json",
        "unet/diffusion_pytorch_model.fp16-00001-of-00002.safetensors",
        "unet/diffusion_pytorch_model.fp16-00002-of-00002.safetensors",
        "text_encoder/config.json", "text_encoder/model.safetensors",
        "tokenizer/vocab.json", "tokenizer/merges.txt", "tokenizer/tokenizer_config.json",
        "scheduler/scheduler_config.json",
    }  # fmt: skip
    assert diffusers_plan(SDXL_FILES, SDXL_INDEX, "mine/xl").folder == "mine/xl"


def test_pickle_only_weights_and_unserved_pipelines_are_refused() -> None:
    files = ["model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.bin"]
    with pytest.raises(PullError, match="safetensors only"):
        diffusers_plan(files, {"_class_name": "StableDiffusionPipeline", "unet": ["d", "U"]}, None)
    with pytest.raises(PullError, match="KandinskyPipeline is not served"):
        diffusers_plan(files, {"_class_name": "KandinskyPipeline"}, None)


def test_config_repos_by_class_or_model_type() -> None:
    files = ["config.json", "diffusion_pytorch_model.safetensors",
             "diffusion_pytorch_model.fp16.safetensors", "README.md"]  # fmt: skip
    plan = config_plan(files, {"_class_name": "ControlNetModel"}, None)
    assert (plan.folder, plan.files) == (
        "controlnet", ("config.json", "diffusion_pytorch_model.fp16.safetensors"),
    )  # fmt: skip
    assert config_plan(files, {"_class_name": "AutoencoderTiny"}, None).folder == "vae_approx"
    vision = ["config.json", "model.safetensors", "preprocessor_config.json", "pytorch_model.bin"]
    plan = config_plan(vision, {"model_type": "depth_anything"}, None)
    assert (plan.folder, plan.files) == (
        "vision", ("config.json", "model.safetensors", "preprocessor_config.json"),
    )  # fmt: skip
    with pytest.raises(PullError, match="bert model is not served"):
        config_plan(vision, {"model_type": "bert"}, None)


def test_tagger_and_single_files() -> None:
    tagger = tagger_plan(["model.onnx", "selected_tags.csv", "config.json"], None)
    assert tagger is not None and tagger.folder == "tagger"
    assert single_file(["a.safetensors", "README.md"], None) == "a.safetensors"
    assert single_file(["a.safetensors", "b.safetensors"], "b.safetensors") == "b.safetensors"
    with pytest.raises(PullError, match=r"pick one with --file: a\.safetensors, b\.safetensors"):
        single_file(["a.safetensors", "b.safetensors"], None)
    with pytest.raises(PullError, match=r"no model_index\.json"):
        single_file(["model.ckpt"], None)


def test_plain_names() -> None:
    assert plain_name("diffusion_pytorch_model.fp16.safetensors") == (
        "diffusion_pytorch_model.safetensors"
    )
    assert plain_name("model.safetensors.index.fp16.json") == "model.safetensors.index.json"
    assert plain_name("model.fp16-00001-of-00002.safetensors") == (
        "model.fp16-00001-of-00002.safetensors"
    )
