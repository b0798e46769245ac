"""Tiny models of every non-diffusion family, laid out in a models dir as users do."""

from __future__ import annotations

from pathlib import Path

from pixelpool.testing.tiny_jtp import write_tiny_jtp
from pixelpool.testing.tiny_onnx import write_tiny_segmenter, write_tiny_wd_tagger
from pixelpool.testing.tiny_upscale import write_tiny_upscaler

FAMILY_MODELS = {
    # registry name -> (family, architecture the registry reports)
    "tiny-esrgan": ("upscale", "ESRGAN"),
    "tiny-compact": ("upscale", "Compact"),
    "tiny-seg": ("bgremove", "segmenter"),
    "wd-tiny/model": ("tag", "wd-tagger"),
    "jtp/JTP_tiny": ("tag", "jtp"),
}


def write_family_models(root: Path) -> dict[str, tuple[str, str]]:
    """An ESRGAN .safetensors, a Compact .pth, a segmenter .onnx, a WD tagger and a JTP
    tagger under root/{upscale,bgremove,tagger}/; returns FAMILY_MODELS."""
    write_tiny_upscaler(root / "upscale" / "tiny-esrgan.safetensors", "ESRGAN")
    write_tiny_upscaler(root / "upscale" / "tiny-compact.pth", "Compact")
    write_tiny_segmenter(root / "bgremove" / "tiny-seg.onnx")
    write_tiny_wd_tagger(root / "tagger" / "wd-tiny")
    write_tiny_jtp(root / "tagger" / "jtp")
    return dict(FAMILY_MODELS)
