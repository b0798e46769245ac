"""A job's images are the same bit for bit whether it ran alone or in a batch.

Covers every operation that batches (txt2img, img2img, inpaint, hi-res fix) and every
family (SD 1.x, SDXL, SD3, FLUX) on the tiny models.
"""

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from pixelpool.pipelines.base import Loaded
from pixelpool.pipelines.diffusion.invariance import min_rows, padded_small_matmuls
from pixelpool.testing.tiny_flow import write_tiny_flux, write_tiny_sd3

from .diffusion_helpers import BASE, MODELS, load, run, write_image, write_mask


def _alone_equals_batched(model: Loaded, op: str, *params: dict[str, Any]) -> None:
    batched = run(model, op, *params)
    for p, together in zip(params, batched, strict=True):
        (alone,) = run(model, op, p)
        for a, b in zip(alone.images, together.images, strict=True):
            assert np.array_equal(a, b), f"{op}: batched image differs from the job alone"
    assert not np.array_equal(batched[0].images[0], batched[1].images[0])


def test_small_matmuls_give_each_row_the_same_result_at_any_row_count() -> None:
    gen = torch.Generator().manual_seed(0)
    layer = torch.nn.Linear(320, 1280)
    x = torch.randn(64, 320, generator=gen)
    least = min_rows(x.device, x.dtype)  # this machine's BLAS, measured
    with torch.inference_mode():
        reference = layer(x)  # a large product: the BLAS's regular path
        plain = [layer(x[:m]) for m in range(1, least)]
        with padded_small_matmuls():
            padded = [layer(x[:m]) for m in range(1, least + 5)]
            assert layer(x[:2].reshape(1, 2, 320)).shape == (1, 2, 1280)
        assert torch.nn.Linear.forward(layer, x[:1]).shape == (1, 1280)  # restored
    assert all(torch.equal(out, reference[: len(out)]) for out in padded)
    # The padding is needed: without it, some product under that many rows rounds
    # differently (12 rows with MKL on an AVX2 CPU, 16 with AVX-512; 1: none is).
    assert least == 1 or not all(torch.equal(out, reference[: len(out)]) for out in plain)


@pytest.fixture(scope="module", params=["sd15", "sdxl"])
def unet_model(request: pytest.FixtureRequest, models_dir: Path) -> Loaded:
    return load(models_dir / MODELS[request.param], request.param)


def test_unet_txt2img_and_hires(unet_model: Loaded) -> None:
    other = {**BASE, "seed": 99, "prompt": "a blue house", "negative_prompt": ""}
    _alone_equals_batched(unet_model, "txt2img", BASE, other, {**BASE, "seed": 5})
    hires = {"width": 128, "height": 96, "base_width": 64, "base_height": 48, "hires_steps": 2,
             "hires_denoising_strength": 0.5}  # fmt: skip
    _alone_equals_batched(unet_model, "hires", {**BASE, **hires}, {**other, **hires})


def test_unet_img2img_and_inpaint(unet_model: Loaded, tmp_path: Path) -> None:
    image = str(write_image(tmp_path / "in.png", 64, 48))
    mask = str(write_mask(tmp_path / "mask.png", 64, 48))
    first = {**BASE, "images": [image], "strength": 0.6}
    second = {**first, "seed": 42, "prompt": "a green field"}
    _alone_equals_batched(unet_model, "img2img", first, second)
    masks = {"masks": [mask]}
    _alone_equals_batched(unet_model, "inpaint", {**first, **masks}, {**second, **masks})


def test_flow_families(tmp_path_factory: pytest.TempPathFactory) -> None:
    root = tmp_path_factory.mktemp("invariance-flow")
    params = {**BASE, "width": 64, "height": 64, "steps": 3}
    for arch, write in (("sd3", write_tiny_sd3), ("flux", write_tiny_flux)):
        write(root / arch)
        model = load(root / arch, arch)
        _alone_equals_batched(model, "txt2img", params, {**params, "seed": 7, "prompt": "a cat"})
