"""SAM 3 segmentation: every image is encoded once, then every (image, query) pair runs
the prompt-dependent part of the model, batched across jobs.

A job's result: `info["images"][i]["prompts"][q]` = {"prompt", "masks", "instances":
[{"box": xyxy, "score", "mask": k}]}, where `arrays[masks]` is a bool array
(instances, height, width) at the image's size and `mask` indexes its first axis.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from PIL import Image

from pixelpool.families.vision.params import SegmentParams
from pixelpool.pipelines.base import CancelFn, Cancelled, ProgressFn, Result
from pixelpool.pipelines.vision import tracker
from pixelpool.pipelines.vision.model import (
    Inputs,
    VisionModel,
    rows,
    run_groups,
    same_shape_groups,
    to_device,
)

TEXT_TOKENS = 32  # Sam3Processor pads every prompt to 32 tokens
DECODE_ROWS = 8  # (image, query) pairs per decoder forward: each holds 200 mask logits


@dataclass
class Query:
    job: int
    image: int  # index into the flattened list of images
    local: int  # index of the image within its job
    prompt: str
    inputs: Inputs


def image_inputs(vm: VisionModel, image: Image.Image) -> Inputs:
    enc = vm.processor(images=image.convert("RGB"), return_tensors="pt")
    return {"pixel_values": enc["pixel_values"]}


def query_inputs(
    vm: VisionModel, prompt: str, size: tuple[int, int], boxes: Any, labels: Any
) -> Inputs:
    """Tokens (and normalised boxes) as Sam3Processor makes them for this one query.

    The tokens are the processor's (padded to its 32), except that a longer prompt is
    cut to fit the text encoder, where the processor would fail the whole batch."""
    inputs = dict(vm.processor.tokenizer(
        prompt, padding="max_length", max_length=TEXT_TOKENS, truncation=True,
        return_tensors="pt",
    ))  # fmt: skip
    inputs = {k: inputs[k] for k in ("input_ids", "attention_mask")}
    if boxes:
        enc = vm.processor(
            original_sizes=[list(size)], input_boxes=[[list(b) for b in boxes]],
            input_boxes_labels=[list(labels)] if labels is not None else None,
            return_tensors="pt",
        )  # fmt: skip
        inputs.update(input_boxes=enc["input_boxes"], input_boxes_labels=enc["input_boxes_labels"])
    return inputs


def _gather(picks: list[tuple[Any, int]]) -> Any:
    """The image encoder's outputs for the given (output, row) picks, one row per query."""
    first = picks[0][0]
    fields: dict[str, Any] = {}
    for key, value in first.items():
        if isinstance(value, torch.Tensor):
            fields[key] = torch.cat([out[key][k : k + 1] for out, k in picks])
        elif isinstance(value, tuple):
            fields[key] = tuple(
                torch.cat([out[key][n][k : k + 1] for out, k in picks]) for n in range(len(value))
            )
    return type(first)(**fields)


def segment(
    vm: VisionModel,
    jobs: list[SegmentParams],
    images: list[list[Image.Image]],
    progress: ProgressFn,
    cancel: CancelFn,
) -> list[Result]:
    """Text and exemplar-box queries run SAM 3's detector; point prompts (and boxes as
    objects) its tracker (`tracker.py`), whose entries follow the detector's."""
    tracker_only = vm.model_type == "sam3_tracker"
    if tracker_only and any(p.prompts for p in jobs):
        raise ValueError(f"{vm.model_type} takes points and boxes, not text prompts")
    flat = [img for per_job in images for img in per_job]
    sizes = [(img.height, img.width) for img in flat]
    queries: list[Query] = []
    for j, (p, per_job) in enumerate(zip(jobs, images, strict=True)):
        exemplars = not p.boxes_are_objects(tracker_only)
        for local in range(len(per_job)):
            boxes = p.boxes[local] if p.boxes and exemplars else None
            labels = p.box_labels[local] if p.box_labels and exemplars else None
            image = sum(len(x) for x in images[:j]) + local
            for prompt in p.detector_queries(tracker_only):
                inputs = query_inputs(vm, prompt, sizes[image], boxes, labels)
                queries.append(Query(j, image, local, prompt, inputs))

    # Stage 1: the image encoder, once per image that has a query.
    needed = sorted({q.image for q in queries})
    encoded = run_groups(
        vm,
        [image_inputs(vm, flat[i]) for i in needed],
        lambda b: vm.model.get_vision_features(**b),
        "encode",
        progress,
        cancel,
    )
    per_image: list[Any] = [None] * len(flat)
    for members, out in encoded:
        for k, m in enumerate(members):
            per_image[needed[m]] = (out, k)

    # Stage 2: the prompt-dependent detector and mask decoder, per (image, query).
    def decode(batch: Inputs, members: list[int]) -> Any:
        return vm.model(
            vision_embeds=_gather([per_image[queries[m].image] for m in members]), **batch
        )

    results = [
        Result(info={"images": [{"width": img.width, "height": img.height, "prompts": []}
                                for img in per_job]})
        for per_job in images
    ]  # fmt: skip
    groups = list(same_shape_groups([q.inputs for q in queries], DECODE_ROWS))
    for step, (members, batch) in enumerate(groups):
        if cancel():
            raise Cancelled()
        with torch.inference_mode():
            out = decode(to_device(batch, vm), members)
        for k, m in enumerate(members):
            raw = SimpleNamespace(
                pred_logits=rows(out.pred_logits, k), pred_boxes=rows(out.pred_boxes, k),
                pred_masks=rows(out.pred_masks, k), presence_logits=rows(out.presence_logits, k),
            )  # fmt: skip
            add_query(vm, results[queries[m].job], queries[m], jobs[queries[m].job],
                      sizes[queries[m].image], raw)  # fmt: skip
        progress(step + 1, len(groups), "decode", None)
    if any(p.tracker_objects(tracker_only) for p in jobs):
        tracker.add_objects(vm, jobs, images, results, progress, cancel)
    return results


def add_query(
    vm: VisionModel, result: Result, q: Query, p: SegmentParams, size: tuple[int, int], raw: Any
) -> None:
    """One query's instances above the thresholds, masks at the image's size."""
    found = vm.processor.post_process_instance_segmentation(
        raw, threshold=p.threshold, mask_threshold=p.mask_threshold, target_sizes=[size]
    )[0]
    entry = result.info["images"][q.local]
    name = f"masks/{q.local}/{len(entry['prompts'])}"
    result.arrays[name] = np.ascontiguousarray(found["masks"].cpu().numpy().astype(bool))
    boxes = found["boxes"].float().cpu().tolist()
    scores = found["scores"].float().cpu().tolist()
    instances = [{"box": [float(v) for v in box], "score": float(score), "mask": k}
                 for k, (box, score) in enumerate(zip(boxes, scores, strict=True))]  # fmt: skip
    entry["prompts"].append({"prompt": q.prompt, "masks": name, "instances": instances})
