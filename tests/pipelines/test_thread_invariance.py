"""A job's images are the same bit for bit at any CPU thread count (the demo models).

oneDNN's 1x1 convolutions round differently at every thread count, and SiLU's chunks
end where the thread count puts them, so while diffusion runs on the CPU the first are
one matrix product and the second run in aligned pieces (`thread_invariant_kernels`;
the activations' own tests: test_aligned_activations.py). This is what lets a Ray CPU
worker (one thread per reserved CPU) give the images of a local worker that uses
every core.
"""

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pixelpool.pipelines.base import Loaded
from pixelpool.pipelines.diffusion import invariance
from pixelpool.pipelines.diffusion.invariance import thread_invariant_kernels

from .diffusion_helpers import BASE, MODELS, load, run

THREADS = (1, 2, 3, 4, 8)  # more threads than cores still splits the work that many ways


def test_1x1_convs_agree_at_every_thread_count_and_batch_size(restore_threads: None) -> None:
    gen = torch.Generator().manual_seed(0)
    layer = torch.nn.Conv2d(64, 32, 1)
    wide = torch.nn.Conv2d(64, 32, 3, padding=1)
    x = torch.randn(3, 64, 32, 32, generator=gen)
    outs = []
    with torch.inference_mode():
        expected = F.conv2d(x, layer.weight, layer.bias)
        plain_wide = wide(x)
        for threads in THREADS:
            torch.set_num_threads(threads)
            with thread_invariant_kernels():
                outs.append(layer(x))
                alone = [layer(x[i : i + 1]) for i in range(3)]
                assert torch.equal(wide(x), plain_wide)  # anything but a plain 1x1 as is
            assert all(torch.equal(a[0], outs[-1][i]) for i, a in enumerate(alone))
    assert all(torch.equal(out, outs[0]) for out in outs[1:])
    torch.testing.assert_close(outs[0], expected, rtol=1e-5, atol=1e-5)
    assert torch.nn.Conv2d._conv_forward is invariance._original_conv  # restored


def test_nested_and_overlapping_users_keep_it_on_until_the_last_leaves() -> None:
    original = torch.nn.Conv2d._conv_forward
    with thread_invariant_kernels():
        with thread_invariant_kernels():  # a decode beside the next batch
            pass
        assert torch.nn.Conv2d._conv_forward is not original
    assert torch.nn.Conv2d._conv_forward is original


@pytest.fixture(scope="module", params=["sd15", "sdxl"])
def unet_model(request: pytest.FixtureRequest, models_dir: Path) -> Loaded:
    return load(models_dir / MODELS[request.param], request.param)


def test_txt2img_gives_the_same_images_at_every_thread_count_batched_or_alone(
    unet_model: Loaded, restore_threads: None
) -> None:
    """A batch of 5 at 128x128: the UNet's SiLU then has 81920 elements, which 3 or
    more threads split unaligned (chunks of 27307); alone, 16384 run in one chunk."""
    params = {**BASE, "width": 128, "height": 128, "steps": 6}
    batch = [{**params, "seed": seed} for seed in range(5, 10)]
    images, alone = [], []
    for threads in THREADS:
        torch.set_num_threads(threads)
        images.append([r.images[0] for r in run(unet_model, "txt2img", *batch)])
        alone.append(run(unet_model, "txt2img", batch[2])[0].images[0])
    for threads, made, solo in zip(THREADS, images, alone, strict=True):
        assert all(np.array_equal(a, b) for a, b in zip(made, images[0], strict=True)), (
            f"{threads} threads differ from one"
        )
        assert np.array_equal(made[2], solo), f"batched != alone at {threads} threads"
