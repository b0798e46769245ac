"""Round-trip caches inside one batch: a job asking for its caches, one sending cached
embeddings (stored as the API stores them) and a plain one each give the image they give
alone."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np

from pixelpool.families.diffusion import clip_cache

from .diffusion_helpers import BASE, MODELS, load, run

JOB = {**BASE, "steps": 2}


def test_a_mixed_batch_gives_each_job_its_own_image(models_dir: Path, tmp_path: Path) -> None:
    model = load(models_dir / MODELS["sd15"], "sd15")
    (alone,) = run(model, "txt2img", {**JOB, "emit_caches": True})
    entries = [{**e, "data": base64.b64encode(e["data"]).decode()}
               for e in alone.caches["clip_embeddings"]]  # fmt: skip
    stored = tmp_path / "embeds.safetensors"
    stored.write_bytes(clip_cache.to_safetensors(clip_cache.parse_entries(entries)))
    cached = {**JOB, "prompt": "unused", "seed": 7, "prompt_cache": str(stored),
              "prompt_cache_tokens": 77}  # fmt: skip
    plain = {**JOB, "prompt": "a blue bird", "seed": 8}
    batch = run(model, "txt2img", {**JOB, "emit_caches": True}, cached, plain)
    singles = [alone, *(run(model, "txt2img", job)[0] for job in (cached, plain))]
    for got, single in zip(batch, singles, strict=True):
        assert np.array_equal(got.images[0], single.images[0])
    assert batch[0].caches["latent_cache"]["shape"] == [1, 4, 6, 8]
    assert batch[1].info["clip_embeddings"] == "used" and not batch[1].caches
    assert not batch[2].caches and "clip_embeddings" not in batch[2].info
