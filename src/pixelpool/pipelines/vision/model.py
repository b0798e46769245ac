"""Load a vision model folder with `transformers` (local files only) and run groups of
inputs through it.

Batching without changing any result: each image is prepared alone by the model's
own processor, and only inputs whose tensors have the same shapes share a forward
pass, so nothing is ever padded for a neighbour's sake.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pixelpool.families.vision import task_of
from pixelpool.pipelines.base import CancelFn, Cancelled, ProgressFn

Inputs = dict[str, torch.Tensor]
ENCODE_ROWS = 16  # images per forward pass: bounds activations whatever the batch


@dataclass
class VisionModel:
    model: torch.nn.Module
    processor: Any  # a Processor (with a tokenizer) or an image processor
    task: str
    model_type: str
    dtype: torch.dtype
    path: str = ""
    # SAM 3's tracker (model, processor) for point prompts: the model itself in a
    # sam3_tracker folder, loaded on first use from a full SAM 3 (sam3_video) folder.
    tracker: tuple[Any, Any] | None = None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: str) -> None:
        """Move the model (and a loaded tracker) between the cache's tiers."""
        self.model.to(device)
        if self.tracker is not None:
            self.tracker[0].to(device)


def _classes(task: str, model_type: str) -> tuple[Any, Any]:
    import transformers as tf

    if model_type == "sam3_tracker":
        return tf.Sam3TrackerModel, tf.Sam3TrackerProcessor
    return {
        "segment": (tf.Sam3Model, tf.Sam3Processor),
        "detect": (tf.AutoModelForZeroShotObjectDetection, tf.AutoProcessor),
        "depth": (tf.AutoModelForDepthEstimation, tf.AutoImageProcessor),
        "embed": (tf.AutoModel, tf.AutoImageProcessor),
    }[task]


def torch_dtype(device: str, dtype: str) -> torch.dtype:
    """float32 unless asked otherwise: thresholded masks and boxes should not move with
    the device's half-precision rounding."""
    if device.startswith("cuda") and dtype in ("float16", "bfloat16"):
        return getattr(torch, dtype)
    return torch.float32


def load_vision(path: str | Path, model_type: str, device: str, dtype: str = "auto") -> VisionModel:
    task = task_of(model_type)
    if task is None:
        raise ValueError(f"{Path(path).name}: unsupported vision model type {model_type!r}")
    model_cls, processor_cls = _classes(task, model_type)
    processor = processor_cls.from_pretrained(str(path), local_files_only=True)
    chosen = torch_dtype(device, dtype)
    model = model_cls.from_pretrained(str(path), local_files_only=True, dtype=chosen)
    model.to(device).eval()
    vm = VisionModel(model, processor, task, model_type, chosen, str(path))
    if model_type == "sam3_tracker":
        vm.tracker = (model, processor)
    return vm


def model_bytes(vm: VisionModel) -> int:
    """The loaded model's bytes (a full SAM 3's tracker, loaded later, is not counted)."""
    params = sum(p.numel() * p.element_size() for p in vm.model.parameters())
    return params + sum(b.numel() * b.element_size() for b in vm.model.buffers())


def same_shape_groups(
    inputs: list[Inputs], max_rows: int = 0
) -> Iterator[tuple[list[int], Inputs]]:
    """Indexes of inputs whose tensors all have equal shapes (at most `max_rows` of
    them, 0: no limit), and those inputs stacked."""
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i, item in enumerate(inputs):
        key = tuple((k, tuple(v.shape)) for k, v in sorted(item.items()))
        groups.setdefault(key, []).append(i)
    for same in groups.values():
        step = max_rows or len(same)
        for start in range(0, len(same), step):
            members = same[start : start + step]
            first = inputs[members[0]]
            yield members, {k: torch.cat([inputs[i][k] for i in members]) for k in first}


def to_device(inputs: Inputs, vm: VisionModel) -> Inputs:
    return {k: v.to(vm.device, vm.dtype if v.is_floating_point() else None)
            for k, v in inputs.items()}  # fmt: skip


def run_groups(
    vm: VisionModel,
    inputs: list[Inputs],
    forward: Callable[[Inputs], Any],
    stage: str,
    progress: ProgressFn,
    cancel: CancelFn,
) -> list[tuple[list[int], Any]]:
    """One forward per group of same-shaped inputs; cancel is checked before each."""
    groups = list(same_shape_groups(inputs, ENCODE_ROWS))
    out = []
    for step, (members, batch) in enumerate(groups):
        if cancel():
            raise Cancelled()
        with torch.inference_mode():
            out.append((members, forward(to_device(batch, vm))))
        progress(step + 1, len(groups), stage, None)
    return out


def rows(value: Any, index: int) -> Any:
    """Row `index` (kept as a batch of one) of a tensor, or of each tensor in a tuple."""
    if isinstance(value, torch.Tensor):
        return value[index : index + 1]
    if isinstance(value, tuple | list):
        return type(value)(rows(v, index) for v in value)
    return value
