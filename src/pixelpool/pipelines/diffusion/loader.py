"""Load a diffusers pipeline from local files only (directory or single file)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    DiffusionPipeline,
    FluxPipeline,
    StableDiffusion3Pipeline,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
)

from pixelpool.pipelines.diffusion.accel import resolve_dtype
from pixelpool.pipelines.diffusion.invariance import one_image_vae

PIPELINE_CLASSES: dict[str, type[DiffusionPipeline]] = {
    "sd15": StableDiffusionPipeline,
    "sdxl": StableDiffusionXLPipeline,
    "sd3": StableDiffusion3Pipeline,
    "flux": FluxPipeline,
}


def torch_dtype(device: str, dtype: str, architecture: str = "sd15") -> torch.dtype:
    """The device setting `dtype` for this architecture (see accel.resolve_dtype)."""
    return resolve_dtype(device, dtype, architecture)


def module_bytes(pipe: DiffusionPipeline) -> int:
    """Bytes held by the pipeline's weights: what the model cache budgets."""
    total = 0
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            total += sum(t.numel() * t.element_size() for t in component.parameters())
            total += sum(t.numel() * t.element_size() for t in component.buffers())
    return total


def optional_components(path: Path, names: tuple[str, ...]) -> dict[str, None]:
    """Components a diffusers dir leaves out (SD3 without T5): passed as None explicitly."""
    index = json.loads((path / "model_index.json").read_text())
    return {n: None for n in names if not any(index.get(n) or [None]) or not (path / n).is_dir()}


def load_pipeline(entry: dict[str, Any], dtype: torch.dtype) -> DiffusionPipeline:
    arch = entry["architecture"]
    path = Path(entry["path"])
    if not path.exists():
        raise FileNotFoundError(f"model files are missing: {path}")
    extra: dict[str, Any] = {}
    if arch == "sd15":
        extra = {"safety_checker": None, "requires_safety_checker": False}
    elif arch == "sd3" and entry["format"] != "single_file":
        extra = optional_components(path, ("text_encoder_3", "tokenizer_3"))
    if entry["format"] == "single_file":
        from pixelpool.pipelines.diffusion.singlefile import load_single_file

        pipe = load_single_file(path, arch, torch_dtype=dtype)
    else:
        pipe = PIPELINE_CLASSES[arch].from_pretrained(
            str(path), dtype=dtype, local_files_only=True, **extra
        )
    pipe.set_progress_bar_config(disable=True)
    one_image_vae(pipe)
    return pipe
