"""The tag family: WD-style ONNX taggers (and JTP-style timm taggers), N images in one run.

Preprocessing is the WD tagger reference's: composite on white, pad to a square
on white (centred), bicubic resize to the model's input side, BGR, float32 in
0-255, NHWC. The result of a job is a dict in Result.info:
{"tags": {tag: score}, "characters": {...}, "rating": {...}}, best first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pixelpool.families.tag.params import TagParams
from pixelpool.pipelines.base import CancelFn, Cancelled, Loaded, ProgressFn, Result, WorkItem
from pixelpool.pipelines.diffusion.images import open_image
from pixelpool.pipelines.onnxrt import OnnxModel, file_bytes, move_session, open_session
from pixelpool.pipelines.tag.labels import (
    CHARACTER,
    CHARACTER_MCUT_FLOOR,
    GENERAL,
    RATING,
    Labels,
    display_name,
    mcut_threshold,
    read_labels,
    select,
)

STAGE = "tag"
DEFAULT_SIDE = 448  # the WD v3 taggers' input, for a graph without a static size
LABELS_FILE = "selected_tags.csv"


def input_side(model: OnnxModel) -> int:
    side = model.input.shape[1]
    return side if isinstance(side, int) and side > 0 else DEFAULT_SIDE


def prepare(image: Image.Image, side: int) -> np.ndarray:
    """(side, side, 3) float32 BGR in 0-255, as the WD tagger reference prepares it."""
    canvas = Image.new("RGBA", image.size, (255, 255, 255))
    canvas.alpha_composite(image.convert("RGBA"))
    rgb = canvas.convert("RGB")
    longest = max(rgb.size)
    padded = Image.new("RGB", (longest, longest), (255, 255, 255))
    padded.paste(rgb, ((longest - rgb.width) // 2, (longest - rgb.height) // 2))
    if longest != side:
        padded = padded.resize((side, side), Image.Resampling.BICUBIC)
    return np.asarray(padded, dtype=np.float32)[:, :, ::-1]


def scores(model: Any, images: list[Image.Image], cancel: CancelFn) -> np.ndarray:
    """(N, tags) probabilities: one run for all images, or one each for batch-1 graphs."""
    if not isinstance(model, OnnxModel):
        if cancel():
            raise Cancelled()
        from pixelpool.pipelines.tag import jtp  # torch and timm: only for JTP taggers

        return jtp.jtp_scores(model, images)
    side = input_side(model)
    batch = np.ascontiguousarray(np.stack([prepare(img, side) for img in images]))
    if cancel():
        raise Cancelled()
    if not model.fixed_batch():
        return model.run(batch)[0]
    return np.concatenate([model.run(batch[i : i + 1])[0] for i in range(len(batch))])


def tag_result(probs: np.ndarray, labels: Labels, p: TagParams) -> dict[str, dict[str, float]]:
    names = [display_name(n, p.replace_underscores) for n in labels.names]

    def pick(category: int, threshold: float, mcut: bool, floor: float = 0.0) -> dict:
        idx = labels.indexes(category)
        if mcut:
            threshold = max(floor, mcut_threshold(probs[idx]))
        return select(probs[idx], [names[i] for i in idx], threshold, p.top_k)

    rating = labels.indexes(RATING)
    return {
        "tags": pick(GENERAL, p.general_threshold, p.general_mcut),
        "characters": pick(CHARACTER, p.character_threshold, p.character_mcut,
                           CHARACTER_MCUT_FLOOR),
        "rating": select(probs[rating], [names[i] for i in rating], -1.0, None),
    }  # fmt: skip


def labels_of(model: Any) -> Labels:
    return model.extra if isinstance(model, OnnxModel) else model.labels


def tag_images(
    model: Any, jobs: list[TagParams], images: list[Image.Image],
    progress: ProgressFn, cancel: CancelFn,
) -> list[dict[str, dict[str, float]]]:  # fmt: skip
    probs = scores(model, images, cancel)
    progress(1, 1, STAGE, None)
    labels = labels_of(model)
    return [tag_result(row, labels, p) for row, p in zip(probs, jobs, strict=True)]


def labels_path(model_path: Path) -> Path:
    """`selected_tags.csv` beside the graph (or `<name>.csv` for several taggers in a folder)."""
    own = model_path.with_suffix(".csv")
    return own if own.exists() else model_path.parent / LABELS_FILE


def load_tagger(path: str | Path, device: str) -> OnnxModel:
    path = Path(path)
    model = OnnxModel(path, open_session(path, device))
    model.extra = read_labels(labels_path(path))
    outputs = model.session.get_outputs()[0].shape[-1]
    if isinstance(outputs, int) and outputs != len(model.extra.names):
        raise ValueError(f"{path.name}: {outputs} outputs but {len(model.extra.names)} labels")
    return model


class TagFamily:
    def load(self, entry: dict[str, Any], device: str, dtype: str = "auto") -> Loaded:
        """`entry["path"]`: a WD `.onnx` (selected_tags.csv beside it), or a JTP
        `.safetensors` (tags.json beside it)."""
        path = Path(entry["path"])
        if path.suffix.lower() == ".safetensors":
            from pixelpool.pipelines.tag import jtp

            model = jtp.load_jtp(path, device, dtype)
            arch = entry.get("architecture") or "jtp"
            return Loaded(model, jtp.model_bytes(model), arch, device, family="tag")
        onnx = load_tagger(path, device)
        arch = entry.get("architecture") or "wd-tagger"
        return Loaded(onnx, file_bytes(onnx.path), arch, device, family="tag")

    def move(self, loaded: Loaded, device: str) -> Loaded:
        if isinstance(loaded.obj, OnnxModel):
            return move_session(loaded, device)
        loaded.obj.model.to(device)
        return Loaded(loaded.obj, loaded.size_bytes, loaded.architecture, device, "tag")

    def run(
        self, loaded: Loaded, batch: list[WorkItem], progress: ProgressFn, cancel: CancelFn
    ) -> list[Result]:
        jobs = [TagParams.model_validate(item.params) for item in batch]
        images = [open_image(p.image) for p in jobs]
        results = tag_images(loaded.obj, jobs, images, progress, cancel)
        return [Result(info=r) for r in results]


FAMILY = TagFamily()
