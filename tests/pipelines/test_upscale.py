"""Upscale family: tiny spandrel models; output equals spandrel called directly."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from pixelpool.families.upscale.params import UpscaleParams
from pixelpool.pipelines.base import Cancelled, Loaded, WorkItem
from pixelpool.pipelines.upscale.family import FAMILY, resize, upscale_images
from pixelpool.pipelines.upscale.model import (
    load_descriptor,
    load_upscaler,
    pick_dtype,
    runs_in,
)
from pixelpool.pipelines.upscale.tiled import choose_tile, images_per_forward, upscale_stack
from pixelpool.pipelines.upscale.tiling import (
    axis_spans,
    axis_starts,
    blend_weights,
    margin_for,
    plan_tiles,
    ramp,
    tile_bytes,
    tile_for_budget,
)
from pixelpool.testing.tiny_upscale import TINY_SCALES, write_tiny_upscaler
from pixelpool.testing.tiny_upscale import smooth_picture as picture

# Every architecture's parity is in test_upscale_archs.py; file formats on a few.
FORMATS = ["ESRGAN", "Compact", "SwinIR", "HAT", "SPAN"]


@pytest.fixture(scope="module")
def model_files(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Path]:
    root = tmp_path_factory.mktemp("upscalers")
    return {
        (name, ext): write_tiny_upscaler(root / f"{name}{ext}", name)
        for name in FORMATS
        for ext in (".safetensors", ".pth", ".pt")
    }


def run(model, rgb, mask=None, **params):
    p = UpscaleParams(image="unused", **params)
    return upscale_images(model, [p], [(rgb, mask)], lambda *a: None, lambda: False)[0]


def test_tiles_cover_the_image_with_the_overlap() -> None:
    tiles = plan_tiles(70, 50, 24, 8)
    covered = np.zeros((70, 50), int)
    for t in tiles:
        assert t.y1 - t.y0 == 24 and t.x1 - t.x0 == 24
        covered[t.y0 : t.y1, t.x0 : t.x1] += 1
    assert covered.min() >= 1
    starts = axis_starts(70, 24, 8)
    assert starts[0] == 0 and starts[-1] == 70 - 24
    assert all(b - a <= 24 - 8 for a, b in itertools.pairwise(starts))
    assert plan_tiles(20, 20, 64, 8) == [plan_tiles(20, 20, 20, 0)[0]]


def test_blend_weights_sum_to_one_across_a_seam() -> None:
    left = ramp(24, 0, 8)
    right = ramp(24, 8, 0)
    assert left[0] == 1 and right[-1] == 1
    np.testing.assert_allclose(left[16:] + right[:8], 1.0, atol=1e-6)
    m = margin_for(8)
    assert m == 3 and (right[:m] == 0).all() and (left[-m:] == 0).all()  # cut-short context
    tile = plan_tiles(64, 64, 24, 8)[5]  # an inner tile: ramps on all four sides
    w = blend_weights(tile, 2)
    assert w.shape == (48, 48) and w[24, 24] == 1 and w[0, 0] == 0
    total = np.zeros((128, 128))
    for t in plan_tiles(64, 64, 24, 8):
        total[t.y0 * 2 : t.y1 * 2, t.x0 * 2 : t.x1 * 2] += blend_weights(t, 2)
    np.testing.assert_allclose(total, 1.0, atol=1e-5)  # every output pixel fully weighted


def test_tiles_start_on_the_window_grid() -> None:
    spans = axis_spans(45, 24, 16, align=4)
    assert all(start % 4 == 0 for start, _ in spans) and spans[-1][1] == 45
    assert all(end - start == 24 for start, end in spans[:-1])
    assert all(a[1] - b[0] >= 16 for a, b in itertools.pairwise(spans))
    assert axis_spans(26, 24, 8, align=4) == [(0, 26)]  # the last tile takes the remainder


@settings(max_examples=60, deadline=None)
@given(size=st.tuples(st.integers(1, 150), st.integers(1, 150)), tile=st.integers(16, 64),
       overlap=st.integers(0, 40), align=st.sampled_from([1, 4, 8, 16]))  # fmt: skip
def test_any_plan_is_aligned_and_weights_every_pixel(size, tile, overlap, align) -> None:
    height, width = size
    total = np.zeros((height, width))
    for t in plan_tiles(height, width, tile, overlap, align):
        assert t.y0 % align == 0 and t.x0 % align == 0
        assert t.y1 == height or t.y1 - t.y0 == max(tile // align * align, align)
        total[t.y0 : t.y1, t.x0 : t.x1] += blend_weights(t, 1)
    # Every pixel weighted (the sum is 1 unless an overlap exceeds half a tile, when three
    # tiles can share a pixel; upscale_stack divides by the sum either way).
    assert total.min() > 0


def test_a_4096_output_fits_a_small_budget() -> None:
    budget = 256 << 20
    side = tile_for_budget(budget, scale=4, batch=1, dtype_bytes=2)
    assert 32 <= side < 1024 and tile_bytes(side, 4, 1, 2) <= budget
    assert len(plan_tiles(1024, 1024, side, 16)) > 1  # 1024 -> 4096 runs in tiles
    assert tile_for_budget(budget, 4, 4, 2) < side  # a batch would shrink the tile ...


def test_a_batch_keeps_the_tile_and_splits_instead(model_files) -> None:
    """... so the tile is chosen for one image and a batch runs in chunks that fit."""
    model = load_upscaler(model_files["Compact", ".safetensors"], "cpu", tile_budget_bytes=1 << 20)
    side = choose_tile(model, 64, 64, 1, 0)
    assert side == 32 and images_per_forward(model, side) == 1
    jobs = [UpscaleParams(image=str(i)) for i in range(2)]
    steps: list[tuple[int, int]] = []
    outs = upscale_images(model, jobs, [(picture(64, 64, seed=i), None) for i in range(2)],
                          lambda s, t, *_: steps.append((s, t)), lambda: False)  # fmt: skip
    n = len(plan_tiles(64, 64, side, 16))
    assert steps[-1] == (2 * n, 2 * n)  # every tile position once per image
    for i, out in enumerate(outs):
        np.testing.assert_array_equal(out, run(model, picture(64, 64, seed=i)))


@pytest.mark.parametrize("ext", [".safetensors", ".pth", ".pt"])
@pytest.mark.parametrize("name", FORMATS)
def test_loads_every_architecture_and_format(model_files, name: str, ext: str) -> None:
    model = load_upscaler(model_files[name, ext], "cpu")
    info = model.info()
    assert info["architecture"] == name and info["scale"] == TINY_SCALES[name]
    assert model.dtype == torch.float32  # half types only on CUDA
    assert isinstance(info["supports_half"], bool) and isinstance(info["supports_bfloat16"], bool)


def test_pickled_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"weights": torch.zeros(1), "code": Cancelled}, path)  # a class: needs unpickling
    with pytest.raises(Exception, match=r"(?i)weights only|unsupported global"):
        load_descriptor(path)


def test_alpha_is_kept(model_files) -> None:
    model = load_upscaler(model_files["Compact", ".safetensors"], "cpu")
    rgb = picture()
    alpha = np.zeros((32, 32), np.uint8)
    alpha[8:24, 8:24] = 255
    out = run(model, rgb, alpha)
    assert out.shape == (128, 128, 4)
    np.testing.assert_array_equal(out[:, :, :3], run(model, rgb))
    np.testing.assert_array_equal(out[:, :, 3], resize(alpha, (128, 128)))
    by_model = run(model, rgb, alpha, alpha="model")
    grey = upscale_stack(model, np.repeat(alpha[None, :, :, None], 3, 3), 64, 0)[0]
    np.testing.assert_array_equal(by_model[:, :, 3], np.rint(grey.mean(2).astype(np.float32)))


def test_batch_of_two_equals_each_alone(model_files) -> None:
    model = load_upscaler(model_files["Compact", ".safetensors"], "cpu")
    a, b = picture(seed=1), picture(seed=2)
    jobs = [UpscaleParams(image="a", tile=20, overlap=8), UpscaleParams(image="b", tile=20)]
    calls: list[int] = []
    both = upscale_images(model, jobs, [(a, None), (b, None)],
                          lambda step, *_: calls.append(step), lambda: False)  # fmt: skip
    assert len(calls) == len(plan_tiles(32, 32, 20, 8)) + len(plan_tiles(32, 32, 20, 16))
    for out, img, p in zip(both, (a, b), jobs, strict=True):
        alone = upscale_images(model, [p], [(img, None)], lambda *_: None, lambda: False)[0]
        assert np.abs(out.astype(int) - alone).max() <= 1


def test_same_size_inputs_share_each_forward(model_files) -> None:
    model = load_upscaler(model_files["Compact", ".safetensors"], "cpu")
    steps: list[tuple[int, int, str]] = []
    jobs = [UpscaleParams(image=str(i), tile=16, overlap=4) for i in range(3)]
    upscale_images(model, jobs, [(picture(seed=i), None) for i in range(3)],
                   lambda s, t, stage, _: steps.append((s, t, stage)), lambda: False)  # fmt: skip
    n = len(plan_tiles(32, 32, 16, 4))
    assert steps == [(i + 1, n, "upscale") for i in range(n)]  # one step per tile position


def test_cancel_is_checked_between_tiles(model_files) -> None:
    model = load_upscaler(model_files["Compact", ".safetensors"], "cpu")
    seen: list[int] = []
    with pytest.raises(Cancelled):
        upscale_images(model, [UpscaleParams(image="x", tile=16, overlap=4)], [(picture(), None)],
                       lambda s, *_: seen.append(s), lambda: len(seen) >= 2)  # fmt: skip
    assert seen == [1, 2]


def test_target_size_resizes_the_native_output(model_files) -> None:
    model = load_upscaler(model_files["Compact", ".safetensors"], "cpu")
    rgb = picture(16, 12)
    native = run(model, rgb)
    assert native.shape == (64, 48, 3)
    assert run(model, rgb, width=100, height=50).shape == (50, 100, 3)
    np.testing.assert_array_equal(run(model, rgb, width=30), resize(native, (30, 40)))
    assert run(model, rgb, height=80).shape == (80, 60, 3)
    assert run(model, rgb, scale=5).shape == (80, 60, 3)
    with pytest.raises(ValueError, match="scale or width"):
        UpscaleParams(image="x", scale=2, width=10)
    with pytest.raises(ValueError, match="overlap must be smaller"):
        UpscaleParams(image="x", tile=16, overlap=16)
    with pytest.raises(ValueError, match="tile must be"):
        UpscaleParams(image="x", tile=8)


def test_family_load_and_run(model_files, tmp_path: Path) -> None:
    rgba = np.dstack([picture(), np.full((32, 32), 128, np.uint8)])
    Image.fromarray(rgba).save(tmp_path / "in.png")
    loaded = FAMILY.load({"path": str(model_files["ESRGAN", ".pth"])}, "cpu", "auto")
    assert isinstance(loaded, Loaded) and loaded.size_bytes > 0 and loaded.family == "upscale"
    assert loaded.architecture == "ESRGAN"
    item = WorkItem("j1", "upscale", UpscaleParams(image=str(tmp_path / "in.png")).model_dump())
    [result] = FAMILY.run(loaded, [item], lambda *a: None, lambda: False)
    assert result.images[0].shape == (128, 128, 4) and result.images[0].dtype == np.uint8
    assert (result.images[0][:, :, 3] == 128).all()
    assert result.info["native_scale"] == 4 and result.info["dtype"] == "float32"


@pytest.mark.parametrize("name", FORMATS)
def test_half_types_follow_spandrels_flags(model_files, name: str) -> None:
    """The dtype choice alone (no CUDA needed): float16 only where spandrel's
    `supports_half`, bfloat16 only where `supports_bfloat16` (and the GPU has it)."""
    desc = load_descriptor(model_files[name, ".safetensors"])
    bf16 = desc.supports_bfloat16 and torch.cuda.is_bf16_supported()
    auto = torch.float16 if desc.supports_half else torch.bfloat16 if bf16 else torch.float32
    assert pick_dtype(desc, "cuda", "auto") == auto
    assert pick_dtype(desc, "cuda", "float16") == (torch.float16 if desc.supports_half
                                                    else torch.float32)  # fmt: skip
    assert pick_dtype(desc, "cuda", "bfloat16") == (torch.bfloat16 if bf16 else torch.float32)
    assert pick_dtype(desc, "cuda", "float32") == torch.float32
    assert pick_dtype(desc, "cpu", "auto") == torch.float32


def test_load_probe_finds_a_dtype_the_model_cannot_run_in(model_files) -> None:
    """SwinIR says it supports bfloat16 but fails in it (a float32 mask inside); ESRGAN
    runs. The probe behind `load_upscaler`'s fallback tells them apart on the CPU too."""
    swinir = load_descriptor(model_files["SwinIR", ".safetensors"])
    esrgan = load_descriptor(model_files["ESRGAN", ".safetensors"])
    assert swinir.supports_bfloat16
    assert not runs_in(swinir.to(torch.bfloat16), torch.bfloat16)
    assert runs_in(esrgan.to(torch.bfloat16), torch.bfloat16)
    assert runs_in(swinir.to(torch.float32), torch.float32)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="half precision runs on CUDA only")
@pytest.mark.parametrize("name", FORMATS)
def test_half_precision_on_cuda(model_files, name: str) -> None:
    path = model_files[name, ".safetensors"]
    model = load_upscaler(path, "cuda")
    info = model.info()
    # float16 where spandrel says so, then bfloat16; float32 when the model fails in it
    # (SwinIR claims bfloat16 but mixes a float32 mask in: the load probe catches that).
    candidates = [torch.float16] if info["supports_half"] else []
    candidates += [torch.bfloat16] if info["supports_bfloat16"] else []
    assert model.dtype in ([candidates[0], torch.float32] if candidates else [torch.float32])
    if info["supports_half"]:
        assert model.dtype == torch.float16
    rgb = picture()
    out = run(model, rgb, tile=64)
    full = run(load_upscaler(path, "cuda", "float32"), rgb, tile=64)
    assert np.abs(out.astype(int) - full).mean() < 2  # half rounding, not a different image
