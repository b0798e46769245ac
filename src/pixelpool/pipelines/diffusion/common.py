"""Pieces every diffusion operation shares: schedulers, step callbacks, uint8 output."""

from __future__ import annotations

import copy
import weakref
from collections.abc import Callable
from typing import Any

import diffusers
import numpy as np
import torch

from pixelpool.families.diffusion.params import DiffusionParams
from pixelpool.families.diffusion.samplers import scheduler_config
from pixelpool.pipelines.base import CancelFn, Cancelled, ProgressFn
from pixelpool.pipelines.diffusion import caches
from pixelpool.pipelines.diffusion.previews import Previewer


def to_uint8(images: np.ndarray) -> list[np.ndarray]:
    """Float [0, 1] images -> uint8, rounded exactly as diffusers' numpy_to_pil does."""
    return [np.ascontiguousarray((img * 255).round().astype(np.uint8)) for img in images]


# The model's scheduler -> (sampler class, schedule) -> a scheduler never used: a template.
_TEMPLATES: weakref.WeakKeyDictionary[Any, dict[tuple[str, str], Any]] = weakref.WeakKeyDictionary()


def make_scheduler(pipe: Any, params: DiffusionParams) -> Any:
    """A fresh scheduler per batch: the model's own unless a sampler was asked for.

    Built from the model's scheduler config, so its prediction type (epsilon or
    v-prediction) and zero-terminal-SNR setting carry over to any sampler. Building
    some samplers costs over half a second on a CPU (KDPM2 computes its 1000-step
    tables), so each (model, sampler, schedule) is built once and each batch gets a
    copy of that never-used scheduler: the same fresh state in about a millisecond.
    """
    base = pipe.scheduler
    cls_name, extra = scheduler_config(params.sampler, params.scheduler)
    cls = getattr(diffusers, cls_name) if cls_name else type(base)
    templates = _TEMPLATES.setdefault(base, {})
    key = (cls.__name__, repr(sorted(extra.items())))
    with torch.inference_mode(False):  # inference tensors cannot be deep-copied
        if key not in templates:
            templates[key] = cls.from_config(base.config, **extra)
        return copy.deepcopy(templates[key])


def step_callback(
    progress: ProgressFn,
    cancel: CancelFn,
    total: int,
    previewer: Previewer | None = None,
    stage: str = "denoise",
) -> Callable[[Any, int, Any, dict[str, Any]], dict[str, Any]]:
    """A diffusers callback_on_step_end that reports progress (with previews on the steps
    the previewer asks for) and honours cancellation."""

    def on_step(_pipe: Any, step: int, _t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        done = step + 1
        caches.record_latents(kwargs.get("latents"))
        previews = None
        if previewer is not None and previewer.due(done, total):
            latents = kwargs.get("latents")
            if latents is not None:
                previews = previewer(latents) or None
        progress(done, total, stage, previews)
        if cancel():
            raise Cancelled()
        return {}

    return on_step


def cpu_generators(seeds: list[int]) -> list[torch.Generator]:
    """One CPU generator per image: a seed gives the same image on any device, in any batch."""
    return [torch.Generator("cpu").manual_seed(seed) for seed in seeds]
