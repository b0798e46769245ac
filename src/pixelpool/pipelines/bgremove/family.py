"""The bgremove family: image -> mask at the model's size -> mask at the image's size -> alpha.

Pre- and post-processing follow rembg: a Lanczos resize to the model's input,
(pixels / 255 - mean) / std, NCHW float32; the first output's channel 0,
min-max stretched (after a sigmoid for logit outputs), 8-bit, Lanczos back to the
input's size. The cut-out keeps the input's colours and takes the mask as alpha
(times the input's own alpha, if it had one).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pixelpool.families.bgremove.params import BgRemoveParams
from pixelpool.pipelines.base import CancelFn, Cancelled, Loaded, ProgressFn, Result, WorkItem
from pixelpool.pipelines.bgremove.config import SegmenterConfig, read_config
from pixelpool.pipelines.diffusion.images import open_image, split_alpha
from pixelpool.pipelines.onnxrt import OnnxModel, file_bytes, move_session, open_session

STAGE = "bgremove"


def preprocess(rgb: Image.Image, cfg: SegmenterConfig) -> np.ndarray:
    """(3, H, W) float32 for the model."""
    side = cfg.sidecar
    pixels = np.asarray(rgb.resize((cfg.width, cfg.height), Image.Resampling.LANCZOS), np.float32)
    pixels = pixels / (max(float(pixels.max()), 1e-6) if side.divide == "max" else 255.0)
    pixels = (pixels - np.float32(side.mean)) / np.float32(side.std)
    return np.ascontiguousarray(pixels.transpose(2, 0, 1), dtype=np.float32)


def to_mask(pred: np.ndarray, cfg: SegmenterConfig, size: tuple[int, int]) -> np.ndarray:
    """One model output map -> an (height, width) uint8 mask at `size` (width, height)."""
    pred = pred.astype(np.float32)
    if cfg.sidecar.output == "logits":
        pred = 1 / (1 + np.exp(-pred))
    if cfg.sidecar.minmax:
        lo, hi = float(pred.min()), float(pred.max())
        pred = (pred - lo) / (hi - lo) if hi > lo else np.zeros_like(pred)
    mask = Image.fromarray((np.clip(pred, 0, 1) * 255).astype(np.uint8), "L")
    return np.asarray(mask.resize(size, Image.Resampling.LANCZOS))


def cutout(rgb: np.ndarray, alpha: np.ndarray | None, mask: np.ndarray) -> np.ndarray:
    if alpha is not None:
        mask = np.rint(mask.astype(np.float32) * alpha / 255).astype(np.uint8)
    return np.ascontiguousarray(np.dstack([rgb, mask]))


def predict(model: OnnxModel, batch: np.ndarray, progress: ProgressFn, cancel: CancelFn) -> Any:
    """(N, 3, H, W) -> (N, H, W) mask maps: one run, or one per image for batch-1 graphs."""
    cfg: SegmenterConfig = model.extra
    chunks = [batch[i : i + 1] for i in range(len(batch))] if model.fixed_batch() else [batch]
    maps = []
    for i, chunk in enumerate(chunks):
        if cancel():
            raise Cancelled()
        out = model.run(chunk)[cfg.sidecar.output_index]
        maps.extend(out[:, 0] if out.ndim == 4 else out)
        progress(i + 1, len(chunks), STAGE, None)
    return maps


def remove_backgrounds(
    model: OnnxModel,
    jobs: list[BgRemoveParams],
    images: list[tuple[Image.Image, np.ndarray | None]],
    progress: ProgressFn,
    cancel: CancelFn,
) -> list[np.ndarray]:
    """An RGBA cut-out per job, or (mask_only) an (H, W) uint8 mask."""
    batch = np.stack([preprocess(rgb, model.extra) for rgb, _ in images])
    maps = predict(model, batch, progress, cancel)
    outputs = []
    for p, (rgb, alpha), pred in zip(jobs, images, maps, strict=True):
        mask = to_mask(pred, model.extra, rgb.size)
        outputs.append(mask if p.mask_only else cutout(np.asarray(rgb), alpha, mask))
    return outputs


def load_segmenter(path: str, device: str) -> OnnxModel:
    session = open_session(path, device)
    model = OnnxModel(path=Path(path), session=session)
    model.extra = read_config(model.path, list(model.input.shape))
    return model


class BgRemoveFamily:
    def load(self, entry: dict[str, Any], device: str, dtype: str = "auto") -> Loaded:
        """`dtype` is the graph's own: an ONNX export fixes its precision."""
        model = load_segmenter(entry["path"], device)
        arch = entry.get("architecture") or "segmenter"
        return Loaded(model, file_bytes(model.path), arch, device, family="bgremove")

    def move(self, loaded: Loaded, device: str) -> Loaded:
        return move_session(loaded, device)

    def run(
        self, loaded: Loaded, batch: list[WorkItem], progress: ProgressFn, cancel: CancelFn
    ) -> list[Result]:
        jobs = [BgRemoveParams.model_validate(item.params) for item in batch]
        images = [split_alpha(open_image(p.image)) for p in jobs]
        outputs = remove_backgrounds(loaded.obj, jobs, images, progress, cancel)
        return [Result(images=[out], info={"mask_only": p.mask_only})
                for p, out in zip(jobs, outputs, strict=True)]  # fmt: skip


FAMILY = BgRemoveFamily()
