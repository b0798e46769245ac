"""Depth Anything (depth per pixel) and DINOv2/v3 (features): one forward per group
of same-shaped images, results as float32 arrays.

depth: `arrays["depth/<i>"]` (height, width) at the input's size, relative (larger is
nearer), as `post_process_depth_estimation` returns it; info per image: width,
height, the array's name, min and max.
embed: `arrays["embedding/<i>"]` (dim,), and with `patch_features`
`arrays["patches/<i>"]` (tokens, dim) (ViTs: the patch tokens after the CLS and
register tokens; ConvNeXt: its last stage's positions), row-major over the grid.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from PIL import Image

from pixelpool.families.vision.params import DepthParams, EmbedParams
from pixelpool.pipelines.base import CancelFn, ProgressFn, Result
from pixelpool.pipelines.vision.model import Inputs, VisionModel, rows, run_groups


def pixel_inputs(vm: VisionModel, image: Image.Image) -> Inputs:
    return {
        "pixel_values": vm.processor(images=image.convert("RGB"), return_tensors="pt")[
            "pixel_values"
        ]
    }


Output = tuple[Any, int, int, int, Image.Image]


def _outputs(
    vm: VisionModel, images: list[list[Image.Image]], stage: str,
    progress: ProgressFn, cancel: CancelFn,
) -> Iterator[Output]:  # fmt: skip
    """(model output, row of this image in it, job index, index in the job, the image) for
    every input, with one forward per group of same-shaped images."""
    flat = [img for per_job in images for img in per_job]
    owners = [(j, local) for j, per_job in enumerate(images) for local in range(len(per_job))]
    inputs = [pixel_inputs(vm, img) for img in flat]
    for members, out in run_groups(vm, inputs, lambda b: vm.model(**b), stage, progress, cancel):
        for k, i in enumerate(members):
            yield out, k, *owners[i], flat[i]


def _results(images: list[list[Image.Image]]) -> list[Result]:
    return [Result(info={"images": [{} for _ in per_job]}) for per_job in images]


def depth(
    vm: VisionModel, jobs: list[DepthParams], images: list[list[Image.Image]],
    progress: ProgressFn, cancel: CancelFn,
) -> list[Result]:  # fmt: skip
    results = _results(images)
    for out, k, j, local, image in _outputs(vm, images, "depth", progress, cancel):
        raw = SimpleNamespace(predicted_depth=rows(out.predicted_depth, k))
        found = vm.processor.post_process_depth_estimation(
            raw, target_sizes=[(image.height, image.width)]
        )[0]["predicted_depth"]
        array = np.ascontiguousarray(found.float().cpu().numpy(), dtype=np.float32)
        name = f"depth/{local}"
        results[j].arrays[name] = array
        results[j].info["images"][local] = {
            "width": image.width, "height": image.height, "depth": name,
            "min": float(array.min()), "max": float(array.max()),
        }  # fmt: skip
    return results


def prefix_tokens(vm: VisionModel) -> int:
    """Tokens before the patch tokens: CLS (or ConvNeXt's pooled one) and registers."""
    return 1 + int(getattr(vm.model.config, "num_register_tokens", 0) or 0)


def features(
    vm: VisionModel, hidden: torch.Tensor, pooled: torch.Tensor, p: EmbedParams
) -> tuple[np.ndarray, np.ndarray]:
    """The embedding (CLS/pooled or the patch mean) and the patch tokens of one image."""
    patches = hidden[0, prefix_tokens(vm) :].float()
    embedding = pooled[0].float() if p.pooling == "cls" else patches.mean(0)
    if p.normalize:
        embedding = torch.nn.functional.normalize(embedding, dim=-1)
        patches = torch.nn.functional.normalize(patches, dim=-1)
    return embedding.cpu().numpy(), patches.cpu().numpy()


def embed(
    vm: VisionModel, jobs: list[EmbedParams], images: list[list[Image.Image]],
    progress: ProgressFn, cancel: CancelFn,
) -> list[Result]:  # fmt: skip
    results = _results(images)
    for out, k, j, local, _image in _outputs(vm, images, "embed", progress, cancel):
        p = jobs[j]
        embedding, patches = features(vm, rows(out.last_hidden_state, k),
                                      rows(out.pooler_output, k), p)  # fmt: skip
        entry = {"embedding": f"embedding/{local}", "dim": int(embedding.shape[-1])}
        results[j].arrays[entry["embedding"]] = np.ascontiguousarray(embedding, np.float32)
        if p.patch_features:
            entry["patches"] = f"patches/{local}"
            results[j].arrays[entry["patches"]] = np.ascontiguousarray(patches, np.float32)
        results[j].info["images"][local] = entry
    return results
