"""On a CUDA GPU: the server's diffusion path (float16, channels-last, the VAE upcast where
the model asks for it) gives the image diffusers gives when called directly on the same
model in the same dtype, and a seed gives the same image alone or in a batch.

Skipped without CUDA; run on a GPU machine with `pytest tests/pipelines/test_cuda_diffusion.py`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pixelpool.pipelines import get_family

from .diffusion_helpers import BASE, MODELS, entry, max_diff, run

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

PARAMS = {**BASE, "width": 64, "height": 64, "steps": 4}


def direct(path: Path, seeds: list[int]) -> list[np.ndarray]:
    """diffusers itself, as a user calls it on a GPU: float16, CPU generators."""
    from diffusers import AutoPipelineForText2Image

    pipe = AutoPipelineForText2Image.from_pretrained(
        path, dtype=torch.float16, local_files_only=True
    ).to("cuda")
    pipe.set_progress_bar_config(disable=True)
    for module in (pipe.unet, pipe.vae):  # the server's default layout on CUDA
        module.to(memory_format=torch.channels_last)
    images = []
    for seed in seeds:
        out = pipe(
            prompt=PARAMS["prompt"], negative_prompt=PARAMS["negative_prompt"],
            width=PARAMS["width"], height=PARAMS["height"],
            num_inference_steps=PARAMS["steps"], guidance_scale=PARAMS["cfg_scale"],
            generator=torch.Generator("cpu").manual_seed(seed),
        ).images[0]  # fmt: skip
        images.append(np.asarray(out.convert("RGB")))
    return images


@pytest.mark.parametrize("arch", ["sd15", "sdxl"])
def test_server_path_equals_diffusers_on_cuda(models_dir: Path, arch: str) -> None:
    path = models_dir / MODELS[arch]
    loaded = get_family("diffusion").load(entry(path, arch), "cuda", "auto")
    seeds = [11, 12]
    batch = run(loaded, "txt2img", *({**PARAMS, "seed": s} for s in seeds))
    alone = [run(loaded, "txt2img", {**PARAMS, "seed": s})[0] for s in seeds]
    mine = [np.asarray(r.images[0]) for r in batch]
    theirs = direct(path, seeds)
    for i in range(len(seeds)):
        assert max_diff(mine[i], np.asarray(alone[i].images[0])) <= 1  # batch invariance
        assert max_diff(mine[i], theirs[i]) <= 1  # parity with diffusers, within 1/255
    assert max_diff(mine[0], mine[1]) > 10  # two seeds, two images
