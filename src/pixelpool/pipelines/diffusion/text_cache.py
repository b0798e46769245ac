"""Text embeddings per (model, prompt): repeated and shared prompts skip the text encoders.

Each loaded model keeps an LRU of encoded prompts (at most MAX_ENTRIES entries and
MAX_BYTES bytes, on the model's device), keyed by the exact text and by everything that
changes its encoding: how it is encoded (diffusers' `encode_prompt`, or the chunked
weighted encoder with its chunk count), the active LoRAs with their weights (a LoRA may
change the text encoders) and the batch-invariance setting. CLIP-conditioned UNet models
(SD 1.x, SDXL) only; SD3 and FLUX encode their prompts as diffusers does.

Exact by construction: a prompt is always encoded alone, one prompt per encoder call,
whether the cache is cold or warm and whatever batch it is in; a hit returns the very
tensors that encoding produced. Alone is also what diffusers computes for that prompt
within a batch: the encoders' products have 77 rows per prompt and the pooled
projection's few rows are padded (invariance.py), so every row rounds the same at any
batch size. The tests compare images with the cache off, cold, warm and in mixed batches.
"""

from __future__ import annotations

import contextlib
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from pixelpool.families.diffusion.params import DiffusionParams
from pixelpool.pipelines.diffusion import invariance

MAX_ENTRIES = 256
MAX_BYTES = 64 << 20

Encoded = tuple[torch.Tensor, torch.Tensor | None]  # (1, tokens, dim) embeddings, pooled


@dataclass
class Stats:
    hits: int = 0
    misses: int = 0


STATS = Stats()


def _nbytes(value: Encoded) -> int:
    return sum(t.numel() * t.element_size() for t in value if t is not None)


class PromptCache:
    """One model's encoded prompts, least recently used first."""

    def __init__(self, max_entries: int = MAX_ENTRIES, max_bytes: int = MAX_BYTES) -> None:
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self.entries: OrderedDict[Hashable, Encoded] = OrderedDict()
        self.bytes = 0

    def get(self, key: Hashable, compute: Callable[[], Encoded]) -> Encoded:
        if key in self.entries:
            STATS.hits += 1
            self.entries.move_to_end(key)
            return self.entries[key]
        STATS.misses += 1
        value = compute()
        size = _nbytes(value)
        if size <= self.max_bytes and self.max_entries > 0:
            self.entries[key] = value
            self.bytes += size
            while len(self.entries) > self.max_entries or self.bytes > self.max_bytes:
                self.bytes -= _nbytes(self.entries.popitem(last=False)[1])
        return value


# Keyed by the text encoder: img2img / inpaint pipelines derived from a model share it.
_CACHES: weakref.WeakKeyDictionary[Any, PromptCache] = weakref.WeakKeyDictionary()
_enabled = [True]


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Encode every prompt as diffusers does, in one call per batch (tests, benchmarks)."""
    _enabled[0] = False
    try:
        yield
    finally:
        _enabled[0] = True


def applies(pipe: Any) -> bool:
    """CLIP-conditioned UNet models (SD 1.x, SDXL), while the cache is on."""
    return _enabled[0] and getattr(pipe, "text_encoder", None) is not None and hasattr(pipe, "unet")


def clear(pipe: Any) -> None:
    """Forget a model's prompts (its tensors live on the device it is leaving)."""
    encoder = getattr(pipe, "text_encoder", None)
    if encoder is not None:
        _CACHES.pop(encoder, None)


def stats() -> dict[str, int]:
    caches = list(_CACHES.values())
    return {
        "hits": STATS.hits,
        "misses": STATS.misses,
        "entries": sum(len(c.entries) for c in caches),
        "bytes": sum(c.bytes for c in caches),
    }


def encoded(
    pipe: Any, params: DiffusionParams, text: str, how: Hashable, compute: Callable[[], Encoded]
) -> Encoded:
    """`compute()` (one prompt's encoding), or what it gave before for the same key."""
    if not applies(pipe):
        return compute()
    loras = tuple((ref.key, ref.weight) for ref in params.loras)
    key = (how, text, loras, invariance.enabled())
    cache = _CACHES.get(pipe.text_encoder)
    if cache is None:
        cache = _CACHES[pipe.text_encoder] = PromptCache()
    return cache.get(key, compute)


def diffusers_encoded(pipe: Any, params: DiffusionParams, text: str) -> Encoded:
    """One prompt as diffusers' own `encode_prompt` encodes it (with its pooled embedding
    for SDXL), cached."""

    def compute() -> Encoded:
        out = pipe.encode_prompt(
            prompt=[text], device=pipe._execution_device, num_images_per_prompt=1,
            do_classifier_free_guidance=False,
        )  # fmt: skip
        return out[0], (out[2] if len(out) == 4 else None)

    return encoded(pipe, params, text, "diffusers", compute)


def per_job(pipe: Any, params: list[DiffusionParams]) -> list[dict[str, torch.Tensor]]:
    """Each job's prompt and negative prompt as diffusers' pipeline inputs."""
    out = []
    for p in params:
        embeds, pooled = diffusers_encoded(pipe, params[0], p.prompt)
        negative, negative_pooled = diffusers_encoded(pipe, params[0], p.negative_prompt)
        job = {"prompt_embeds": embeds, "negative_prompt_embeds": negative}
        if pooled is not None and negative_pooled is not None:
            job["pooled_prompt_embeds"] = pooled
            job["negative_pooled_prompt_embeds"] = negative_pooled
        out.append(job)
    return out


def batch_inputs(pipe: Any, params: list[DiffusionParams]) -> dict[str, torch.Tensor]:
    """The batch's prompts as embeddings for one diffusers call."""
    jobs = per_job(pipe, params)
    return {key: torch.cat([job[key] for job in jobs]) for key in jobs[0]}
