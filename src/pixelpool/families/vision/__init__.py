"""The vision family's description: `transformers` models in folders under `models/vision/`.

A model is a folder with `config.json` (plus weights and processor files, as
`save_pretrained` writes them). Its `model_type` says what it does: SAM 3 segments,
Grounding DINO detects, Depth Anything estimates depth, DINOv2/v3 embed. The
operation is named after that task; a model answers only its own task's operation.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import MappingProxyType
from typing import Any

from pixelpool.families.base import Cost, Detected, EntryLike, NoImageText, Operation
from pixelpool.families.vision.params import (
    DepthParams,
    DetectParams,
    EmbedParams,
    SegmentParams,
)

CONFIG_FILE = "config.json"
# config.json `model_type` -> task (the operation that model serves)
TASKS = MappingProxyType({
    "sam3": "segment",
    "sam3_video": "segment",  # facebook/sam3 as published: detector + tracker configs
    "sam3_tracker": "segment",  # SAM 3's tracker alone: point and box prompts, no text
    "grounding-dino": "detect",
    "mm-grounding-dino": "detect",
    "depth_anything": "depth",
    "dinov2": "embed",
    "dinov2_with_registers": "embed",
    "dinov3_vit": "embed",
    "dinov3_convnext": "embed",
})  # fmt: skip
# When `model_type` is missing: the class in `architectures` -> model_type.
ARCHITECTURES = MappingProxyType({
    "Sam3Model": "sam3",
    "Sam3VideoModel": "sam3_video",
    "Sam3TrackerModel": "sam3_tracker",
    "GroundingDinoForObjectDetection": "grounding-dino",
    "MMGroundingDinoForObjectDetection": "mm-grounding-dino",
    "DepthAnythingForDepthEstimation": "depth_anything",
    "Dinov2Model": "dinov2",
    "Dinov2WithRegistersModel": "dinov2_with_registers",
    "DINOv3ViTModel": "dinov3_vit",
    "DINOv3ConvNextModel": "dinov3_convnext",
})  # fmt: skip
# Rough activation bytes per image at the processor's working size (fp32, with room).
ITEM_BYTES = MappingProxyType({"segment": 2 << 30, "detect": 1 << 30, "depth": 1 << 30,
                               "embed": 256 << 20})  # fmt: skip
OUTPUT_BYTES_PER_PIXEL = 64  # resized mask probabilities of a few instances, or depth
SECONDS_PER_IMAGE = MappingProxyType({"segment": 0.3, "detect": 0.2, "depth": 0.1, "embed": 0.05})


def task_of(architecture: str) -> str | None:
    """The operation a model of this architecture (its model_type) serves."""
    return TASKS.get(architecture)


def wrong_task(op: str, name: str, architecture: str) -> str | None:
    """Why model `name` cannot run vision operation `op` (for a 422), or None if it can."""
    task = task_of(architecture)
    if task == op:
        return None
    return f"model {name!r} ({architecture}) serves {task!r}, not {op!r}"


# Which SAM 3 folders hold which part: text needs the detector, points the tracker.
TEXT_MODELS = frozenset({"sam3", "sam3_video"})
POINT_MODELS = frozenset({"sam3_tracker", "sam3_video"})


def prompt_problem(name: str, architecture: str, params: Any) -> tuple[str, str] | None:
    """(field, why) when model `name` cannot take a segment job's kind of prompt (a 422),
    else None: text prompts need SAM 3's detector, points its tracker."""
    if task_of(architecture) != "segment":
        return None
    if params.prompts and architecture not in TEXT_MODELS:
        return "prompts", (
            f"model {name!r} ({architecture}) takes points and boxes, not text prompts"
        )
    if params.has_points() and architecture not in POINT_MODELS:
        return "points", (
            f"model {name!r} ({architecture}) has no tracker weights: points need a "
            "sam3_tracker folder or the full SAM 3 checkpoint (sam3_video)"
        )
    return None


def read_model_type(config: dict[str, Any]) -> str | None:
    model_type = config.get("model_type")
    if isinstance(model_type, str) and model_type in TASKS:
        return model_type
    for arch in config.get("architectures") or []:
        if arch in ARCHITECTURES:
            return ARCHITECTURES[arch]
    return None


class VisionFamily(NoImageText):
    name = "vision"
    folders = frozenset({"vision"})
    suffixes: frozenset[str] = frozenset()  # only model folders, never loose files
    model_dir_marker = CONFIG_FILE
    operations = MappingProxyType({
        "segment": Operation(SegmentParams, "json"),
        "detect": Operation(DetectParams, "json"),
        "depth": Operation(DepthParams, "array"),
        "embed": Operation(EmbedParams, "array"),
    })  # fmt: skip

    def detect(self, folder: Path, path: Path) -> Detected | None:
        """A folder whose config.json names a supported model type (else not ours)."""
        if not path.is_dir():
            return None
        try:
            config = json.loads((path / CONFIG_FILE).read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path / CONFIG_FILE}: not JSON: {exc}") from exc
        if not isinstance(config, dict):
            raise ValueError(f"{path / CONFIG_FILE}: not a JSON object")
        model_type = read_model_type(config)
        if model_type is None:
            return None
        return Detected(model_type, "transformers")

    def estimate_cost(self, model: dict[str, Any], params: dict[str, Any]) -> Cost:
        """Per image: the model's activations at its working size, plus the outputs at
        the input's size (masks, depth), when the API gave the sizes."""
        task = task_of(str(model.get("architecture") or "")) or "segment"
        images = max(1, len(params.get("images") or ()))
        pixels = sum(int(w) * int(h) for w, h in params.get("image_sizes") or ())
        model_bytes = int(model.get("size_bytes") or 0)
        item = images * ITEM_BYTES[task] + pixels * OUTPUT_BYTES_PER_PIXEL
        return Cost(model_bytes, item, images * SECONDS_PER_IMAGE[task])

    def describe(self, entry: EntryLike) -> dict[str, Any]:
        return {**super().describe(entry), "task": task_of(entry.architecture)}


DESCRIPTION = VisionFamily()
