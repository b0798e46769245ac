"""Grounding DINO (and MM-Grounding-DINO) detection: text labels in, boxes out.

A job's result: `info["images"][i]` = {"width", "height", "boxes": [xyxy...],
"scores": [...], "labels": [text...]}, as `post_process_grounded_object_detection`
returns them (boxes in pixels of the input image).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from PIL import Image

from pixelpool.families.vision.params import DetectParams
from pixelpool.pipelines.base import CancelFn, ProgressFn, Result
from pixelpool.pipelines.vision.model import Inputs, VisionModel, rows, run_groups


def detect_inputs(vm: VisionModel, image: Image.Image, prompts: list[str]) -> Inputs:
    enc = vm.processor(images=image.convert("RGB"), text=[list(prompts)], return_tensors="pt")
    return dict(enc)


def detect(
    vm: VisionModel, jobs: list[DetectParams], images: list[list[Image.Image]],
    progress: ProgressFn, cancel: CancelFn,
) -> list[Result]:  # fmt: skip
    owners = [(j, local) for j, per_job in enumerate(images) for local in range(len(per_job))]
    flat = [img for per_job in images for img in per_job]
    inputs = [
        detect_inputs(vm, img, jobs[j].prompts) for img, (j, _) in zip(flat, owners, strict=True)
    ]
    results = [Result(info={"images": [{} for _ in per_job]}) for per_job in images]
    for members, out in run_groups(vm, inputs, lambda b: vm.model(**b), "detect", progress, cancel):
        for k, i in enumerate(members):
            j, local = owners[i]
            raw = SimpleNamespace(logits=rows(out.logits, k), pred_boxes=rows(out.pred_boxes, k))
            found = vm.processor.post_process_grounded_object_detection(
                raw, inputs[i]["input_ids"], threshold=jobs[j].threshold,
                text_threshold=jobs[j].text_threshold,
                target_sizes=[(flat[i].height, flat[i].width)],
            )[0]  # fmt: skip
            results[j].info["images"][local] = _entry(flat[i], found)
    return results


def _entry(image: Image.Image, found: dict[str, Any]) -> dict[str, Any]:
    return {
        "width": image.width,
        "height": image.height,
        "boxes": found["boxes"].float().cpu().tolist(),
        "scores": found["scores"].float().cpu().tolist(),
        "labels": list(found["text_labels"]),
    }
