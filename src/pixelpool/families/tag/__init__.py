"""The tag family's description: WD taggers (ONNX + selected_tags.csv) and JTP
(a timm checkpoint in .safetensors + tags.json)."""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType
from typing import Any

from pixelpool.families.base import Cost, Detected, NoImageText, Operation, image_pixels
from pixelpool.families.tag.params import TagParams

ITEM_BYTES = 256 * 1024 * 1024  # a ViT at 448^2, with room
SECONDS_PER_IMAGE = 0.1


class TagFamily(NoImageText):
    name = "tag"
    folders = frozenset({"tagger"})
    suffixes = frozenset({".onnx", ".safetensors"})
    model_dir_marker = None
    operations = MappingProxyType({"tag": Operation(TagParams, "json")})

    def detect(self, folder: Path, path: Path) -> Detected | None:
        """Only with its labels beside it: without them the scores mean nothing."""
        if path.suffix == ".onnx" and (path.parent / "selected_tags.csv").is_file():
            return Detected("wd-tagger", "onnx")
        if path.suffix == ".safetensors" and (path.parent / "tags.json").is_file():
            return Detected("jtp", "safetensors")
        return None

    def estimate_cost(self, model: dict[str, Any], params: dict[str, Any]) -> Cost:
        model_bytes = int(model.get("size_bytes") or 0)
        return Cost(model_bytes, ITEM_BYTES + image_pixels(params) * 4, SECONDS_PER_IMAGE)


DESCRIPTION = TagFamily()
