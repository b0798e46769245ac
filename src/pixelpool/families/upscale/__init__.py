"""The upscale family's description: super-resolution models spandrel loads."""

from __future__ import annotations

import math
from pathlib import Path
from types import MappingProxyType
from typing import Any

from pixelpool.families.base import Cost, Detected, NoImageText, Operation, image_pixels
from pixelpool.families.files import read_keys
from pixelpool.families.upscale.params import UpscaleParams

# A cheap guess from key names, for model lists only: the worker's spandrel load is
# the real detection (and fails the job, naming the file, when it knows none).
_KEY_HINTS = (  # (a piece of a key name, the architecture): the most specific first
    ("relative_position_index_OCA", "HAT"),
    (".cpb_mlp.", "Swin2SR"),
    (".attn.channel_interaction.", "DAT"),
    (".attn.get_v.", "RGT"),
    ("layers.0.residual_group.", "SwinIR"),
    ("residual_layer.", "OmniSR"),
    ("block_1.c1_r.", "SPAN"),
    ("UFONE.", "DITN"),
    ("to_feat.", "SAFMN"),
    (".channe_mixer.", "PLKSR"),
    ("gblocks.", "MoSR"),
    (".local_block.", "SeemoRe"),
    ("initial.cnn.depthwise.", "SwiftSRGAN"),
    ("sub_mean.", "RCAN"),
    ("body.0.rdb1.", "ESRGAN"),
    ("model.1.sub.", "ESRGAN"),
    ("body.0.weight", "Compact"),
    ("conv_first.", "ESRGAN"),
)
TILE_PIXELS = 512 * 512  # the tiles' input area bounds activations whatever the image
ACTIVATION_FACTOR = 0.2  # bytes per tile pixel per sqrt(model byte)
SECONDS_PER_MEGAPIXEL = 0.5


def guess_architecture(keys: list[str]) -> str:
    for hint, arch in _KEY_HINTS:
        if any(hint in k for k in keys):
            return arch
    return "unknown"


class UpscaleFamily(NoImageText):
    name = "upscale"
    folders = frozenset({"upscale"})
    suffixes = frozenset({".safetensors", ".pth", ".pt"})
    model_dir_marker = None
    operations = MappingProxyType({"upscale": Operation(UpscaleParams, "image")})

    def detect(self, folder: Path, path: Path) -> Detected | None:
        keys = read_keys(path)
        if not any(k.endswith(".weight") for k in keys):
            return None
        fmt = "safetensors" if path.suffix == ".safetensors" else "state_dict"
        return Detected(guess_architecture(keys), fmt)

    def estimate_cost(self, model: dict[str, Any], params: dict[str, Any]) -> Cost:
        model_bytes = int(model.get("size_bytes") or 0)
        pixels = image_pixels(params)
        scale = float(params.get("scale") or 4)
        out_pixels = pixels * scale * scale
        tile = min(pixels, TILE_PIXELS)
        item = int(tile * ACTIVATION_FACTOR * math.sqrt(max(model_bytes, 1)) + out_pixels * 16)
        return Cost(model_bytes, item, pixels / 1e6 * SECONDS_PER_MEGAPIXEL)


DESCRIPTION = UpscaleFamily()
