"""The benchmark's MFU arithmetic and its FLOP count on a tiny model."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from diffusers import StableDiffusionPipeline

from .bench_module import load_bench_module

mfu = load_bench_module("mfu")


@pytest.mark.parametrize(
    ("name", "peak"),
    [("NVIDIA H100 80GB HBM3", 989.0), ("NVIDIA H100 PCIe", 756.0), ("NVIDIA H200", 989.0),
     ("NVIDIA A100-SXM4-80GB", 312.0), ("NVIDIA L4", 121.0), ("NVIDIA L40S", None),
     ("NVIDIA GeForce RTX 4090", 165.0), ("Tesla T4", None)],
)  # fmt: skip
def test_peak_by_device_name(name: str, peak: float | None) -> None:
    assert mfu.peak_tflops(name) == peak


def test_mfu_arithmetic() -> None:
    per_image = mfu.flops_per_image(call_flops=4e12, batch=4, steps=30)
    assert per_image == pytest.approx(30e12)
    assert mfu.mfu(per_image, images_per_s=10.0, peak=1000.0) == pytest.approx(0.3)
    assert mfu.mfu(per_image, 10.0, None) is None


def test_denoiser_flops_scale_with_the_batch(models_dir: Path) -> None:
    pipe = StableDiffusionPipeline.from_pretrained(
        models_dir / "sd15/demo-sd", local_files_only=True, safety_checker=None,
        requires_safety_checker=False,
    )  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    workload = SimpleNamespace(prompt="a fox", negative_prompt="", width=64, height=64,
                               cfg_scale=7.0, steps=2)  # fmt: skip
    one = mfu.measure_call_flops(pipe, workload, 1)
    two = mfu.measure_call_flops(pipe, workload, 2)
    assert one > 0 and two == pytest.approx(2 * one, rel=0.01)
