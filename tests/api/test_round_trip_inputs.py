"""The torch-free parts of the round-trip caches and infotext: entry checks, FoxBurrow's
raw latents, the infotext -> request fields mapping, and live-only cache events."""

from __future__ import annotations

import asyncio
import base64

import numpy as np
import pytest

from pixelpool.families.diffusion import clip_cache, infotext
from pixelpool.jobs.events import EventBus


def _entry(encoder: str, polarity: str, array: np.ndarray, dtype: str = "fp32") -> dict:
    data = array.astype(np.float16 if dtype == "fp16" else np.float32).tobytes()
    return {"encoder_type": encoder, "polarity": polarity, "data": base64.b64encode(data).decode(),
            "dtype": dtype, "dim0": array.shape[0],
            "dim1": array.shape[1] if array.ndim == 2 else None}  # fmt: skip


def _sd1(tokens: int = 77, width: int = 8) -> list[dict]:
    rng = np.random.default_rng(0)
    return [_entry("clip_l", p, rng.normal(size=(tokens, width))) for p in ("positive", "negative")]


def test_sd1_form_parses_and_bf16_widens_exactly() -> None:
    arrays = clip_cache.parse_entries(_sd1())
    assert set(arrays) == clip_cache.SD1_FORM and clip_cache.token_count(arrays) == 77
    values = np.array([1.5, -2.25, 3.0e-3], np.float32)
    bf16 = (values.view(np.uint32) >> 16).astype("<u2").tobytes()
    back = clip_cache.raw_array("x", bf16, "bf16", (3,))
    assert np.array_equal(back, (values.view(np.uint32) & 0xFFFF0000).view(np.float32))


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda e: e[1].update(dim0=154), "clip_embeddings[1].data"),  # bytes for 77 rows
        (lambda e: e[0].update(dim0=76), "clip_embeddings[0].dim0"),
        (lambda e: e[0].update(dtype="int8"), "clip_embeddings[0].dtype"),
        (lambda e: e[0].update(extra=1), "clip_embeddings[0].extra"),
        (lambda e: e.append(dict(e[0])), "clip_embeddings[2]"),  # a second clip_l positive
        (lambda e: e.pop(), "clip_embeddings"),  # incomplete
    ],
)
def test_malformed_entries_name_their_field(change, field: str) -> None:
    entries = _sd1()
    change(entries)
    with pytest.raises(clip_cache.CacheError) as info:
        clip_cache.parse_entries(entries)
    assert info.value.field == field


def test_cached_latents_raw_bytes() -> None:
    array = np.arange(1 * 4 * 2 * 3, dtype=np.float16).reshape(1, 4, 2, 3)
    out = clip_cache.parse_cached_latents({"dtype": "fp16", "shape": [1, 4, 2, 3]}, array.tobytes())
    assert out.dtype == np.float32 and np.array_equal(out, array.astype(np.float32))
    with pytest.raises(clip_cache.CacheError) as info:
        clip_cache.parse_cached_latents({"dtype": "fp16", "shape": [1, 3, 2, 3]}, b"")
    assert info.value.field == "cached_latents.shape"


def test_infotext_fields_for_a_hires_image() -> None:
    text = ("a fox <lora:style:0.5>, (red:1.2)\nNegative prompt: blurry\nSteps: 4, Sampler: "
            "euler_a, Schedule type: karras, CFG scale: 6.5, Seed: 42, Size: 64x64, Hires resize:"
            " 128x96, Hires steps: 2, Hires upscaler: latent, Denoising strength: 0.4, Model: "
            "demo-sd, Model hash: abc123, Lora weights: other: 0.7")  # fmt: skip
    fields = infotext.request_fields(text)
    assert fields == {
        "prompt": "a fox <lora:style:0.5>, (red:1.2)", "negative_prompt": "blurry", "steps": 4,
        "sampler": "euler_a", "scheduler": "karras", "cfg_scale": 6.5, "seed": 42,
        "base_width": 64, "base_height": 64, "width": 128, "height": 96, "hires_steps": 2,
        "hires_upscaler": "latent", "hires_denoising_strength": 0.4, "model": "demo-sd",
        "model_hash": "abc123", "loras": [{"name": "other", "weight": 0.7}],
    }  # fmt: skip
    for bad in ("only a prompt", "p\nSteps: many, Seed: 1, Size: 8x8"):
        with pytest.raises(infotext.InfotextError):
            infotext.request_fields(bad)


def test_cache_events_are_live_only() -> None:
    async def run() -> tuple[int, int, list]:
        bus = EventBus()
        small = bus.subscribe(lambda e: True)
        large = bus.subscribe(lambda e: True, large=True)
        bus.broadcast({"type": "latent_cache", "job_id": "j", "data": "x" * 1000})
        bus.publish({"type": "completed", "job_id": "j"})
        return small.qsize(), large.qsize(), await bus.history("j")

    small, large, history = asyncio.run(run())
    assert (small, large) == (1, 2) and [e["type"] for e in history] == ["completed"]
