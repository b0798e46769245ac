"""The bgremove family's description: ONNX segmenters (U²-Net, IS-Net, BiRefNet, RMBG)."""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType
from typing import Any

from pixelpool.families.base import Cost, Detected, NoImageText, Operation, image_pixels
from pixelpool.families.bgremove.params import BgRemoveParams

INPUT_BYTES = 1024 * 1024 * 3 * 4  # the model's own input (resized), float32
ACTIVATION_FACTOR = 40  # activations of a segmenter, times its input
SECONDS_PER_IMAGE = 0.3


class BgRemoveFamily(NoImageText):
    name = "bgremove"
    folders = frozenset({"bgremove"})
    suffixes = frozenset({".onnx"})
    model_dir_marker = None
    operations = MappingProxyType({"bgremove": Operation(BgRemoveParams, "image")})

    def detect(self, folder: Path, path: Path) -> Detected | None:
        """Any .onnx file; a `<name>.toml` beside it says how to feed it."""
        if path.stat().st_size == 0:
            return None
        return Detected("segmenter", "onnx")

    def estimate_cost(self, model: dict[str, Any], params: dict[str, Any]) -> Cost:
        model_bytes = int(model.get("size_bytes") or 0)
        item = INPUT_BYTES * ACTIVATION_FACTOR + image_pixels(params) * 8
        return Cost(model_bytes, item, SECONDS_PER_IMAGE)


DESCRIPTION = BgRemoveFamily()
