"""The upscale family: one image per job; same-size images of a batch share each forward.

Alpha is upscaled apart from the colour (SR models take RGB): by default with a
Lanczos resize, which costs no model time and cannot invent texture in a mask,
where SR models trained on photos tend to add ringing and grain; `alpha="model"`
runs it through the model as grey replicated to RGB (sharper edges on
cut-outs), in the same forwards as the colour images of its size.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
from PIL import Image

from pixelpool.families.upscale.params import UpscaleParams
from pixelpool.pipelines.base import CancelFn, Cancelled, Loaded, ProgressFn, Result, WorkItem
from pixelpool.pipelines.diffusion.images import open_image, split_alpha
from pixelpool.pipelines.upscale.model import UpscaleModel, load_upscaler, model_bytes
from pixelpool.pipelines.upscale.tiled import (
    choose_tile,
    default_overlap,
    images_per_forward,
    upscale_stack,
)
from pixelpool.pipelines.upscale.tiling import plan_tiles

STAGE = "upscale"


def resize(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Lanczos to (width, height); the array itself when it already has that size."""
    if (array.shape[1], array.shape[0]) == size:
        return array
    return np.asarray(Image.fromarray(array).resize(size, Image.Resampling.LANCZOS))


def upscale_images(
    model: UpscaleModel,
    jobs: list[UpscaleParams],
    images: list[tuple[np.ndarray, np.ndarray | None]],
    progress: ProgressFn,
    cancel: CancelFn,
) -> list[np.ndarray]:
    """(RGB, alpha or None) per job -> the output array per job (RGB, or RGBA with alpha)."""
    groups: dict[tuple[Any, ...], list[int]] = defaultdict(list)
    for i, (p, (rgb, _)) in enumerate(zip(jobs, images, strict=True)):
        groups[(rgb.shape[:2], p.tile, p.overlap)].append(i)

    plans = {}  # group key -> (stack of RGB (+ alpha as grey RGB) arrays, tiles, per forward)
    for key, members in groups.items():
        (height, width), tile, overlap = key
        stack = [images[i][0] for i in members]
        stack += [np.repeat(images[i][1][:, :, None], 3, 2) for i in members
                  if jobs[i].alpha == "model" and images[i][1] is not None]  # fmt: skip
        side = choose_tile(model, height, width, 1, tile)
        shared = default_overlap(model) if overlap is None else overlap
        tiles = plan_tiles(height, width, side, shared, model.align)
        plans[key] = (np.stack(stack), tiles, images_per_forward(model, side))

    total = sum(len(tiles) * -(-len(stack) // per) for stack, tiles, per in plans.values())
    done = 0

    def before() -> None:
        if cancel():
            raise Cancelled()

    def after() -> None:
        nonlocal done
        done += 1
        progress(done, total, STAGE, None)

    outputs: list[np.ndarray] = [np.empty(0)] * len(jobs)
    for key, members in groups.items():
        stack, tiles, per = plans[key]
        chunks = [stack[i : i + per] for i in range(0, len(stack), per)]
        native = np.concatenate(
            [upscale_stack(model, chunk, 0, 0, before, after, tiles=tiles) for chunk in chunks]
        )
        alphas = iter(native[len(members) :])
        for i, rgb_out in zip(members, native, strict=False):
            rgb, alpha = images[i]
            size = jobs[i].target_size(rgb.shape[1], rgb.shape[0], model.scale)
            out = resize(rgb_out, size)
            if alpha is not None:
                if jobs[i].alpha == "model":
                    grey = np.rint(next(alphas).astype(np.float32).mean(2)).astype(np.uint8)
                    a = resize(grey, size)
                else:
                    a = resize(alpha, size)
                out = np.dstack([out, a])
            outputs[i] = np.ascontiguousarray(out)
    return outputs


def read_input(path: str) -> tuple[np.ndarray, np.ndarray | None]:
    rgb, alpha = split_alpha(open_image(path))
    return np.asarray(rgb), alpha


class UpscaleFamily:
    def load(self, entry: dict[str, Any], device: str, dtype: str = "auto") -> Loaded:
        model = load_upscaler(entry["path"], device, dtype, entry.get("tile_budget_bytes"))
        arch = model.descriptor.architecture.id  # spandrel's detection, not the registry's guess
        return Loaded(model, model_bytes(model), arch, device, family="upscale")

    def move(self, loaded: Loaded, device: str) -> Loaded:
        """Between the device and RAM tiers of the model cache (the dtype stays)."""
        if device != loaded.device:
            loaded.obj.descriptor.to(device)
        return Loaded(loaded.obj, loaded.size_bytes, loaded.architecture, device, "upscale")

    def run(
        self, loaded: Loaded, batch: list[WorkItem], progress: ProgressFn, cancel: CancelFn
    ) -> list[Result]:
        jobs = [UpscaleParams.model_validate(item.params) for item in batch]
        model: UpscaleModel = loaded.obj
        outputs = upscale_images(model, jobs, [read_input(p.image) for p in jobs],
                                 progress, cancel)  # fmt: skip
        info = {"architecture": loaded.architecture, "native_scale": model.scale,
                "dtype": str(model.dtype).removeprefix("torch.")}  # fmt: skip
        return [Result(images=[out], info=dict(info)) for out in outputs]


FAMILY = UpscaleFamily()
