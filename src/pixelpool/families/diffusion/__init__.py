"""The diffusion family's description: SD 1.x, SDXL, SD3 and Flux models."""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType
from typing import Any

from pixelpool.families import upscale as _upscale
from pixelpool.families.base import Cost, Detected, EntryLike, Operation
from pixelpool.families.diffusion import describe as _describe
from pixelpool.families.diffusion.detect import detect as _detect
from pixelpool.families.diffusion.params import (
    DecodeLatentsParams,
    EncodeLatentsParams,
    EnhanceParams,
    HiresParams,
    Img2ImgParams,
    Txt2ImgParams,
)

CONTROLNET_TIME = 0.5  # a ControlNet is about half a UNet's compute per step


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
            "enhance": Operation(EnhanceParams, "image"),
        }
    )

    def detect(self, folder: Path, path: Path) -> Detected | None:
        return _detect(folder, path)

    def estimate_cost(self, model: dict[str, Any], params: dict[str, Any]) -> Cost:
        cost = _describe.estimate_cost(model, params)
        if nets := params.get("controlnets"):  # each runs beside the UNet at every step
            held = sum(int(net.get("size_bytes") or 0) for net in nets)
            cost = Cost(cost.model_bytes + held, cost.item_bytes,
                        cost.seconds * (1 + CONTROLNET_TIME * len(nets)))  # fmt: skip
        upscaler = params.get("upscaler")
        if not upscaler or params.get("latents"):
            return cost
        # enhance: the upscaler runs in the same worker, before the img2img pass
        up = _upscale.DESCRIPTION.estimate_cost(upscaler, params)
        return Cost(cost.model_bytes + up.model_bytes, max(cost.item_bytes, up.item_bytes),
                    cost.seconds + up.seconds)  # fmt: skip

    def describe(self, entry: EntryLike) -> dict[str, Any]:
        return _describe.describe(entry)

    def image_text(self, op: str, params: dict[str, Any], model_name: str) -> dict[str, str]:
        text = _describe.a1111_parameters(params, model_name)
        if op == "enhance":
            upscaler = "Latent" if params.get("latents") else (
                (params.get("upscaler") or {}).get("name") or "Lanczos")  # fmt: skip
            text += f", Hires upscaler: {upscaler}"
        return {"parameters": text}


DESCRIPTION = DiffusionFamily()
