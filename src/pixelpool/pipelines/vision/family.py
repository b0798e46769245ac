"""The vision family's worker side: load a `transformers` model folder, run a batch of
jobs (each a list of images) of one operation through it."""

from __future__ import annotations

from typing import Any

from pixelpool.families.vision.params import PARAMS
from pixelpool.pipelines.base import CancelFn, Loaded, ProgressFn, Result, WorkItem
from pixelpool.pipelines.diffusion.images import open_image
from pixelpool.pipelines.vision import dense, detect, segment
from pixelpool.pipelines.vision.model import VisionModel, load_vision, model_bytes

RUNNERS = {
    "segment": segment.segment,
    "detect": detect.detect,
    "depth": dense.depth,
    "embed": dense.embed,
}


class VisionFamily:
    def load(self, entry: dict[str, Any], device: str, dtype: str = "auto") -> Loaded:
        vm = load_vision(entry["path"], entry["architecture"], device, dtype)
        return Loaded(vm, model_bytes(vm), vm.model_type, device, family="vision")

    def move(self, loaded: Loaded, device: str) -> Loaded:
        """Between the device and RAM tiers of the model cache (the dtype stays)."""
        if device != loaded.device:
            loaded.obj.to(device)
        return Loaded(loaded.obj, loaded.size_bytes, loaded.architecture, device, "vision")

    def run(
        self, loaded: Loaded, batch: list[WorkItem], progress: ProgressFn, cancel: CancelFn
    ) -> list[Result]:
        vm: VisionModel = loaded.obj
        ops = {item.op for item in batch}
        if ops != {vm.task}:
            raise ValueError(f"model {vm.model_type!r} serves {vm.task!r}, not {sorted(ops)}")
        jobs = [PARAMS[vm.task].model_validate(item.params) for item in batch]
        images = [[open_image(path) for path in p.images] for p in jobs]
        results = RUNNERS[vm.task](vm, jobs, images, progress, cancel)
        for r in results:
            r.info.update(task=vm.task, architecture=vm.model_type)
        return results


FAMILY = VisionFamily()
