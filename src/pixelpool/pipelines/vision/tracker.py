"""SAM 3's tracker for SAM 2-style prompts: per image, a list of objects, each a group
of [x, y] points (and/or a box); one mask per object (three with `multimask_output`),
scored by the model's predicted IoU. Every object asked for gets its mask: `threshold`
does not drop any (a point names an object; the score says how sure the model is).

A `sam3_tracker` folder is the tracker alone. A full SAM 3 checkpoint (`sam3_video`, as
published) holds it beside the detector, under `tracker_model.*` and `tracker_neck.*`
with the detector's backbone: it is loaded from the same folder on the first point job.
Images are encoded together; each image's objects then run the prompt encoder and mask
decoder, images with equal input shapes in one forward pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from pixelpool.families.vision import POINT_MODELS
from pixelpool.families.vision.params import SegmentParams
from pixelpool.pipelines.base import CancelFn, Cancelled, ProgressFn, Result
from pixelpool.pipelines.vision.model import (
    Inputs,
    VisionModel,
    rows,
    run_groups,
    same_shape_groups,
    to_device,
)

DECODE_ROWS = 8  # images per mask-decoder forward
# The published checkpoint's weight names -> Sam3TrackerModel's. transformers has this
# mapping for sam3_tracker, but (5.x) does not apply it when the folder's config is a
# sam3_video one, so the tracker would load with random weights; passed explicitly.
KEY_MAPPING = {
    r"^tracker_model\.": "",
    r"^tracker_neck\.": "vision_encoder.neck.",
    r"^detector_model\.vision_encoder\.backbone\.": "vision_encoder.backbone.",
}


@dataclass
class Objects:
    """One image's objects of one job, as the tracker's processor prepared them."""

    job: int
    image: int  # index into the flattened list of images
    local: int  # index of the image within its job
    prompt: str  # "points", or "boxes" for objects given by boxes alone
    inputs: Inputs


def tracker_of(vm: VisionModel) -> tuple[Any, Any]:
    """(Sam3TrackerModel, Sam3TrackerProcessor) of this model, loaded on first use."""
    if vm.tracker is None:
        if vm.model_type not in POINT_MODELS:
            raise ValueError(
                f"{vm.model_type} has no tracker weights: points need a sam3_tracker folder "
                "or the full SAM 3 checkpoint (sam3_video)"
            )
        import transformers as tf

        processor = tf.Sam3TrackerProcessor.from_pretrained(vm.path, local_files_only=True)
        model = tf.Sam3TrackerModel.from_pretrained(
            vm.path, local_files_only=True, dtype=vm.dtype, key_mapping=KEY_MAPPING
        )
        # Both load the backbone from detector_model.vision_encoder.backbone.*: share
        # the detector's copy rather than hold the largest part of SAM 3 twice.
        model.vision_encoder.backbone = vm.model.vision_encoder.backbone
        model.to(vm.device).eval()
        vm.tracker = (model, processor)
    return vm.tracker


def object_inputs(
    processor: Any, p: SegmentParams, local: int, size: tuple[int, int], tracker_only: bool
) -> Inputs | None:
    """The points / labels / boxes tensors for image `local` of job `p` (None: no objects)."""
    points = p.points[local] if p.points else None
    boxes = p.boxes[local] if p.boxes and p.boxes_are_objects(tracker_only) else None
    if not points and not boxes:
        return None
    kwargs: dict[str, Any] = {}
    if points:
        labels = p.point_labels[local] if p.point_labels else [[1] * len(g) for g in points]
        kwargs["input_points"] = [[[list(pt) for pt in group] for group in points]]
        kwargs["input_labels"] = [[list(group) for group in labels]]
    if boxes:
        kwargs["input_boxes"] = [[list(b) for b in boxes]]
    enc = processor(original_sizes=[list(size)], return_tensors="pt", **kwargs)
    return {k: enc[k] for k in ("input_points", "input_labels", "input_boxes") if k in enc}


def mask_box(mask: np.ndarray) -> list[float]:
    """xyxy (pixel edges) of a mask's extent; zeros for an empty mask."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return [0.0, 0.0, 0.0, 0.0]
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


def logit(probability: float) -> float:
    """The mask logit threshold for a probability threshold (post_process_masks' unit)."""
    if probability <= 0:
        return -math.inf
    if probability >= 1:
        return math.inf
    return math.log(probability / (1 - probability))


def add_objects(
    vm: VisionModel,
    jobs: list[SegmentParams],
    images: list[list[Image.Image]],
    results: list[Result],
    progress: ProgressFn,
    cancel: CancelFn,
) -> None:
    """Append each image's objects entry (`prompt: "points"` or `"boxes"`) to its result."""
    tracker_only = vm.model_type == "sam3_tracker"
    model, processor = tracker_of(vm)
    flat = [img for per_job in images for img in per_job]
    todo: list[Objects] = []
    empty: list[tuple[int, int, str]] = []
    for j, (p, per_job) in enumerate(zip(jobs, images, strict=True)):
        if not p.tracker_objects(tracker_only):
            continue
        prompt = "points" if p.points is not None else "boxes"
        first = sum(len(x) for x in images[:j])
        for local, img in enumerate(per_job):
            inputs = object_inputs(processor, p, local, (img.height, img.width), tracker_only)
            if inputs is None:
                empty.append((j, local, prompt))
            else:
                todo.append(Objects(j, first + local, local, prompt, inputs))

    pixel = {o.image: processor(images=flat[o.image].convert("RGB"), return_tensors="pt")
             for o in todo}  # fmt: skip
    order = sorted(pixel)
    encoded = run_groups(
        vm,
        [{"pixel_values": pixel[i]["pixel_values"]} for i in order],
        lambda b: model.get_image_embeddings(**b),
        "encode-tracker",
        progress,
        cancel,
    )
    per_image: dict[int, tuple[Any, int]] = {}
    for members, out in encoded:
        for k, m in enumerate(members):
            per_image[order[m]] = (out, k)

    groups = []  # (members, inputs, multimask_output): a flag of its own forward passes
    for flag in (False, True):
        chosen = [i for i, o in enumerate(todo) if jobs[o.job].multimask_output == flag]
        for members, batch in same_shape_groups([todo[i].inputs for i in chosen], DECODE_ROWS):
            groups.append(([chosen[m] for m in members], batch, flag))
    for step, (members, batch, multimask) in enumerate(groups):
        if cancel():
            raise Cancelled()
        picks = [per_image[todo[m].image] for m in members]
        embeddings = [torch.cat([out[n][k : k + 1] for out, k in picks])
                      for n in range(len(picks[0][0]))]  # fmt: skip
        with torch.inference_mode():
            out = model(
                image_embeddings=embeddings, multimask_output=multimask, **to_device(batch, vm)
            )
        for k, m in enumerate(members):
            o = todo[m]
            add_entry(processor, results[o.job], o, jobs[o.job], flat[o.image],
                      rows(out.pred_masks, k), rows(out.iou_scores, k))  # fmt: skip
        progress(step + 1, len(groups), "decode-tracker", None)
    for j, local, prompt in empty:
        img = images[j][local]
        entry = results[j].info["images"][local]
        name = f"masks/{local}/{len(entry['prompts'])}"
        results[j].arrays[name] = np.zeros((0, img.height, img.width), dtype=bool)
        entry["prompts"].append({"prompt": prompt, "masks": name, "instances": []})


def add_entry(
    processor: Any,
    result: Result,
    o: Objects,
    p: SegmentParams,
    image: Image.Image,
    pred_masks: torch.Tensor,
    iou_scores: torch.Tensor,
) -> None:
    """One image's objects: masks (objects x candidates, H, W) at the image's size, each
    instance with its object's index, the predicted IoU and the mask's extent."""
    masks = processor.post_process_masks(
        pred_masks.float().cpu(), original_sizes=[[image.height, image.width]],
        mask_threshold=logit(p.mask_threshold),
    )[0]  # fmt: skip
    flat = masks.reshape(-1, image.height, image.width).numpy().astype(bool)
    scores = iou_scores[0].float().cpu().reshape(-1).tolist()
    per_object = masks.shape[1]
    entry = result.info["images"][o.local]
    name = f"masks/{o.local}/{len(entry['prompts'])}"
    result.arrays[name] = np.ascontiguousarray(flat)
    instances = [{"box": mask_box(flat[k]), "score": float(scores[k]), "mask": k,
                  "object": k // per_object} for k in range(len(flat))]  # fmt: skip
    entry["prompts"].append({"prompt": o.prompt, "masks": name, "instances": instances})
