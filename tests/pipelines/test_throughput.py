"""Throughput without changing images: the text-embedding cache and the sampler templates
are exact; `batch_invariant` off trades bit-invariance for a whole-batch VAE, within 1/255.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from pixelpool import pipelines
from pixelpool.pipelines.base import Loaded
from pixelpool.pipelines.diffusion import common, text_cache
from pixelpool.pipelines.diffusion.common import cpu_generators, to_uint8
from pixelpool.registry.loras import scan_loras
from pixelpool.testing.lora import write_tiny_lora

from .diffusion_helpers import BASE, MODELS, load, max_diff, run

FAST = {**BASE, "steps": 2}
OTHER = {**FAST, "seed": 99, "prompt": "a blue house", "negative_prompt": ""}
WEIGHTED = {**FAST, "seed": 5, "prompt": "a (red:1.4) fox, [blurry] BREAK a tree"}


@pytest.fixture(scope="module", params=["sd15", "sdxl"])
def model(request: pytest.FixtureRequest, models_dir: Path) -> Loaded:
    return load(models_dir / MODELS[request.param], request.param)


@pytest.fixture
def not_invariant() -> Iterator[None]:
    old = pipelines.configure({"batch_invariant": False})
    try:
        yield
    finally:
        pipelines.configure(old)


def _images(model: Loaded, *params: dict[str, Any]) -> list[np.ndarray]:
    return [r.images[0] for r in run(model, "txt2img", *params)]


def _same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_text_cache_gives_the_images_of_uncached_encoding(model: Loaded) -> None:
    """Off, cold, warm, alone and in a batch with other (and weighted) prompts: one image."""
    with text_cache.disabled():
        reference = _images(model, FAST, OTHER)
    text_cache.clear(model.obj)
    hits = text_cache.STATS.hits
    assert _same(_images(model, OTHER, FAST), reference[::-1])  # cold, order swapped
    assert _same(_images(model, FAST), reference[:1])  # warm, alone
    assert text_cache.STATS.hits > hits  # the repeated prompts skipped the encoders
    # Weighted prompts: chunked embeddings (a plain prompt beside them is chunked too).
    (weighted,) = _images(model, WEIGHTED)
    assert _same(_images(model, FAST, WEIGHTED)[1:], [weighted])  # warm, in a batch
    stats = pipelines.family_stats()["text_embeddings"]
    assert stats["entries"] >= 4 and stats["bytes"] > 0 and stats["hits"] == text_cache.STATS.hits


def test_text_cache_keys_on_the_active_loras(
    models_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The tiny LoRA changes the text encoder: its prompts are cached apart."""
    root = tmp_path_factory.mktemp("text-cache-lora")
    write_tiny_lora(models_dir / MODELS["sd15"], root / "loras" / "style.safetensors", "sd15")
    (entry,) = scan_loras(root)
    job = {**FAST, "loras": [{"name": entry.name, "path": str(entry.path), "key": entry.key}]}
    model = load(models_dir / MODELS["sd15"], "sd15")
    with text_cache.disabled():
        reference = _images(model, job)
    _images(model, FAST)  # the same prompt without the LoRA, now cached
    assert _same(_images(model, job), reference)


def test_prompt_cache_is_bounded_by_entries_and_bytes() -> None:
    cache = text_cache.PromptCache(max_entries=3, max_bytes=3 * 4 * 10)
    vector = torch.zeros(1, 10)  # 40 bytes
    for i in range(5):
        cache.get(i, lambda: (vector, None))
    assert list(cache.entries) == [2, 3, 4] and cache.bytes == 120
    cache.get(2, lambda: (torch.ones(1), None))  # a hit: the stored value, now most recent
    assert list(cache.entries) == [3, 4, 2] and torch.equal(cache.entries[2][0], vector)
    cache.get("big", lambda: (torch.zeros(1, 20), None))  # 80 bytes: evicts two
    assert list(cache.entries) == [2, "big"] and cache.bytes == 120
    cache.get("huge", lambda: (torch.zeros(1, 40), None))  # over the budget: not kept
    assert "huge" not in cache.entries


def test_not_invariant_is_diffusers_batched_call_within_one_level(
    model: Loaded, not_invariant: None
) -> None:
    with text_cache.disabled():
        batched = _images(model, FAST, OTHER)
    pipe = model.obj
    assert pipe.vae.use_slicing is False  # the whole batch through the VAE at once
    with torch.inference_mode():
        direct = pipe(
            prompt=[FAST["prompt"], OTHER["prompt"]],
            negative_prompt=[FAST["negative_prompt"], OTHER["negative_prompt"]],
            num_inference_steps=2, guidance_scale=FAST["cfg_scale"], width=64, height=48,
            generator=cpu_generators([FAST["seed"], OTHER["seed"]]), output_type="np",
        ).images  # fmt: skip
    assert _same(batched, to_uint8(direct))
    (alone,) = _images(model, OTHER)  # the text cache on
    assert max_diff(alone, batched[1]) <= 1


@pytest.mark.parametrize("sampler", ["DPM2 a", "DPM++ SDE"])
def test_sampler_templates_give_a_fresh_scheduler_each_batch(models_dir: Path, sampler: str):
    """Stochastic samplers keep state (noise, step index): a reused template must not leak
    it into the next batch. DPM++ SDE's Brownian noise also follows the seed."""
    model = load(models_dir / MODELS["sd15"], "sd15")
    job = {**FAST, "sampler": sampler}
    common._TEMPLATES.clear()
    first = _images(model, job)  # built, then copied
    assert _same(_images(model, job), first)  # copied again


def test_batch_invariant_setting_reaches_the_diffusion_family() -> None:
    from pixelpool.config import Settings
    from pixelpool.engine.devices import DeviceInfo
    from pixelpool.engine.pool import worker_options
    from pixelpool.pipelines.diffusion import invariance

    device = DeviceInfo("cpu", "cpu", 0, "cpu", 1 << 30)
    off = worker_options(Settings(scheduler={"batch_invariant": False}), device)
    old = pipelines.configure(off)  # what the worker does at start
    try:
        assert invariance.enabled() is False
    finally:
        pipelines.configure(old)
    assert invariance.enabled() is True
    assert worker_options(Settings(), device)["batch_invariant"] is True
