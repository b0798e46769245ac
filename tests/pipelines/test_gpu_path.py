"""The GPU path's switches (dtype, channels-last, torch.compile, VAE upcast, pinned RAM
tier) on the CPU: what can be checked without a GPU, on the tiny demo models."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor2_0
from torch._dynamo.utils import counters

from pixelpool.config import ConfigError, Settings, load_settings
from pixelpool.engine.devices import DeviceInfo
from pixelpool.engine.pool import worker_options
from pixelpool.pipelines import configure, get_family
from pixelpool.pipelines.diffusion import accel, invariance, latents

from .diffusion_helpers import BASE, MODELS, entry, load, max_diff, run

SMALL = {**BASE, "width": 64, "height": 48, "steps": 2}


@pytest.fixture
def options() -> Iterator[None]:
    """Worker options set by a test are put back afterwards."""
    old = configure({})
    yield
    configure(old)


@pytest.fixture(scope="module")
def plain_image(models_dir: Path) -> np.ndarray:
    """The tiny SD 1.x image with the CPU defaults: what each switch must reproduce."""
    return run(load(models_dir / MODELS["sd15"], "sd15"), "txt2img", SMALL)[0].images[0]


def test_auto_dtype_per_device_and_architecture() -> None:
    resolve = accel.resolve_dtype
    assert resolve("cpu", "auto", "sdxl") == torch.float32
    assert resolve("mps", "auto", "flux") == torch.float32
    assert resolve("cuda:0", "auto", "sd15") == torch.float16
    assert resolve("cuda:0", "auto", "sdxl", bf16_supported=True) == torch.float16
    assert resolve("cuda:0", "auto", "sd3", bf16_supported=True) == torch.bfloat16
    assert resolve("cuda:0", "auto", "flux", bf16_supported=False) == torch.float16
    assert resolve("cpu", "bfloat16", "sd15") == torch.bfloat16


def test_device_settings_reach_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIXELPOOL_DEVICES__CUDA0__DTYPE", "bfloat16")
    monkeypatch.setenv("PIXELPOOL_DEVICES__CUDA0__COMPILE", "max-autotune")
    monkeypatch.setenv("PIXELPOOL_DEVICES__CUDA0__COMPILE_WARMUP", "[[1024, 768, 2]]")
    monkeypatch.setenv("PIXELPOOL_DEVICES__CUDA0__CHANNELS_LAST", "false")
    settings = load_settings()
    device = DeviceInfo("cuda0", "cuda", 0, "GPU", 80 << 30)
    opts = worker_options(settings, device)
    assert opts["dtype"] == "bfloat16" and opts["compile"] == "max-autotune"
    assert opts["compile_warmup"] == [[1024, 768, 2]] and opts["channels_last"] is False
    assert opts["compile_cache_size"] == 8
    plain = worker_options(Settings(), DeviceInfo("cpu", "cpu", 0, "CPU", 8 << 30))
    assert (plain["dtype"], plain["compile"], plain["channels_last"]) == ("auto", False, None)


@pytest.mark.parametrize(
    ("key", "value"),
    [("DTYPE", "float8"), ("COMPILE", "fast"), ("COMPILE_WARMUP", "[[100, 64, 1]]")],
)
def test_bad_device_settings_name_the_key(
    monkeypatch: pytest.MonkeyPatch, key: str, value: str
) -> None:
    monkeypatch.setenv(f"PIXELPOOL_DEVICES__CUDA0__{key}", value)
    with pytest.raises(ConfigError, match=f"devices.cuda0.{key.lower()}"):
        load_settings()


def test_compile_setting_values() -> None:
    assert accel.compile_mode(False) is None and accel.compile_mode(True) == "default"
    assert accel.compile_mode("reduce-overhead") == "reduce-overhead"
    with pytest.raises(ValueError, match="compile must be"):
        accel.compile_mode("fast")


def test_channels_last_matches_the_default_layout(
    models_dir: Path, plain_image: np.ndarray, options: None
) -> None:
    """NHWC weights give the same image within 1/255; attention is SDPA by default."""
    configure({"channels_last": True})
    nhwc = load(models_dir / MODELS["sd15"], "sd15")
    conv = nhwc.obj.unet.conv_in.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    procs = set(map(type, nhwc.obj.unet.attn_processors.values()))
    assert procs == {AttnProcessor2_0}
    assert max_diff(plain_image, run(nhwc, "txt2img", SMALL)[0].images[0]) <= 1


def test_compiled_unet_with_warmup_matches_eager(
    models_dir: Path, plain_image: np.ndarray, options: None
) -> None:
    """The wiring of `compile` (static shapes, warm-up at load, the cache limit) checked
    with the `aot_eager` backend: inductor's C++ build of the tiny UNet's first call
    took 299 s on a shared 2-core CPU, aot_eager traces the same graph in about 11 s.
    Same image within 1/255."""
    configure({"compile": "default", "compile_backend": "aot_eager",
               "compile_warmup": [[64, 48, 1]], "compile_cache_size": 4})  # fmt: skip
    torch._dynamo.reset()
    invariance._min_rows.clear()  # measured again, never inside the compiled graph
    compiled = load(models_dir / MODELS["sd15"], "sd15")
    unet = compiled.obj.unet
    assert type(unet).__name__ == "UNet2DConditionModel" and unet._compiled_call_impl is not None
    assert torch._dynamo.config.recompile_limit == 4
    graphs = counters["stats"]["unique_graphs"]
    assert graphs >= 1  # the warm-up compiled the 64x48 batch-1 shape at load
    image = run(compiled, "txt2img", SMALL)[0].images[0]
    assert counters["stats"]["unique_graphs"] == graphs  # and the request reused it
    assert max_diff(plain_image, image) <= 1
    assert (str(torch.device("cpu")), torch.float32) in invariance._min_rows
    torch._dynamo.reset()


def test_half_sdxl_vae_decodes_upcast(models_dir: Path) -> None:
    """An SDXL VAE whose config says force_upcast decodes in float32 even when the model
    is float16 (pixelpool's own decodes, as diffusers' pipeline does), then goes back."""
    pipe = get_family("diffusion").load(entry(models_dir / MODELS["sdxl"], "sdxl"), "cpu",
                                        "float16").obj  # fmt: skip
    assert pipe.vae.dtype == torch.float16 and accel.vae_needs_upcast(pipe)
    seen: list[torch.dtype] = []
    hook = pipe.vae.decoder.register_forward_pre_hook(lambda m, a: seen.append(a[0].dtype))
    images = latents.decode(pipe, torch.randn(1, 4, 8, 8))
    hook.remove()
    assert seen == [torch.float32] and pipe.vae.dtype == torch.float16
    assert images[0].shape == (64, 64, 3) and np.isfinite(images[0]).all()


def test_cpu_moves_are_plain(models_dir: Path) -> None:
    """Pinned memory is for CUDA <-> host only: on the CPU a move leaves the tensors be."""
    assert not accel.pinned_transfer("cpu", "cpu")
    assert not accel.pinned_transfer("mps", "cpu")
    loaded = load(models_dir / MODELS["sd15"], "sd15")
    before = [p.data_ptr() for p in loaded.obj.unet.parameters()]
    accel.move(loaded.obj, "cpu", "cpu")
    moved = get_family("diffusion").move(loaded, "cpu")
    assert [p.data_ptr() for p in moved.obj.unet.parameters()] == before
