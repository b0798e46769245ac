"""The diffusion family's description: SD 1.x, SDXL, SD3 and Flux models."""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType
from typing import Any

from pixelpool.families.base import Cost, Detected, EntryLike, Operation
from pixelpool.families.diffusion import describe as _describe
from pixelpool.families.diffusion.detect import detect as _detect
from pixelpool.families.diffusion.params import (
    DecodeLatentsParams,
    EncodeLatentsParams,
    HiresParams,
    Img2ImgParams,
    Txt2ImgParams,
)


class DiffusionFamily:
    name = "diffusion"
    folders: frozenset[str] = frozenset()  # every folder no other family claims
    suffixes = frozenset({".safetensors"})
    model_dir_marker = "model_index.json"
    operations = MappingProxyType(
        {
            "txt2img": Operation(Txt2ImgParams, "image"),
            "img2img": Operation(Img2ImgParams, "image"),
            "inpaint": Operation(Img2ImgParams, "image"),
            "hires": Operation(HiresParams, "image"),
            "decode_latents": Operation(DecodeLatentsParams, "image"),
            "encode_latents": Operation(EncodeLatentsParams, "latents"),
        }
    )

    def detect(self, folder: Path, path: Path) -> Detected | None:
        return _detect(folder, path)

    def estimate_cost(self, model: dict[str, Any], params: dict[str, Any]) -> Cost:
        return _describe.estimate_cost(model, params)

    def describe(self, entry: EntryLike) -> dict[str, Any]:
        return _describe.describe(entry)

    def image_text(self, op: str, params: dict[str, Any], model_name: str) -> dict[str, str]:
        return {"parameters": _describe.a1111_parameters(params, model_name)}


DESCRIPTION = DiffusionFamily()
