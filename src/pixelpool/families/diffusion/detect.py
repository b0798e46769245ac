"""Recognise a diffusion model from its files: a diffusers folder or an LDM checkpoint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pixelpool.families.base import Detected
from pixelpool.families.diffusion.checkpoints import detect_architecture, read_tensor_names

PIPELINE_CLASSES = {
    "StableDiffusionPipeline": "sd15",
    "StableDiffusionXLPipeline": "sdxl",
    "StableDiffusion3Pipeline": "sd3",
    "FluxPipeline": "flux",
}
SUPPORTED_ARCHITECTURES = ("sd15", "sdxl", "sd3", "flux")


def _diffusers_architecture(path: Path) -> str | None:
    try:
        index = json.loads((path / "model_index.json").read_text())
    except (OSError, ValueError):
        return None
    arch = PIPELINE_CLASSES.get(index.get("_class_name", ""))
    if arch == "sd15" and _is_sd2(path):
        return None
    return arch


def _is_sd2(path: Path) -> bool:
    try:
        cfg = json.loads((path / "text_encoder" / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return cfg.get("hidden_size") == 1024


def _scheduler_traits(path: Path) -> dict[str, Any]:
    """Prediction type and zero-SNR training, from a diffusers dir's scheduler config."""
    try:
        cfg = json.loads((path / "scheduler" / "scheduler_config.json").read_text())
    except (OSError, ValueError):
        return {}
    if "FlowMatch" in str(cfg.get("_class_name", "")):
        return {"prediction_type": "flow"}
    return {
        "prediction_type": str(cfg.get("prediction_type") or "epsilon"),
        "zero_snr": bool(cfg.get("rescale_betas_zero_snr", False)),
    }


def detect(folder: Path, path: Path) -> Detected | None:
    """A diffusers dir or a single-file checkpoint of a served architecture, else None."""
    if path.is_dir():
        arch = _diffusers_architecture(path)
        detected = Detected(arch or "", "diffusers", _scheduler_traits(path))
    else:
        arch = detect_architecture(read_tensor_names(path))
        detected = Detected(arch or "", "single_file")
    return detected if arch in SUPPORTED_ARCHITECTURES else None
