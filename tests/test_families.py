"""The family descriptions' cost estimates and model-list fields (pure, torch-free)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pixelpool import families
from pixelpool.registry.entry import ModelEntry

MODEL = {"size_bytes": 64 << 20}


def _entry(family: str, architecture: str) -> ModelEntry:
    return ModelEntry(name="m", folder=family, family=family, architecture=architecture,
                      path=Path("m"), format="onnx", size_bytes=1, mtime_ns=0)  # fmt: skip


@pytest.mark.parametrize("family", ["upscale", "bgremove", "tag"])
def test_cost_grows_with_the_input_and_the_batch(family: str) -> None:
    est = families.get(family).estimate_cost
    small = est(MODEL, {"image_width": 64, "image_height": 64})
    large = est(MODEL, {"image_width": 2048, "image_height": 2048})
    assert small.model_bytes == MODEL["size_bytes"]
    assert 0 < small.item_bytes < large.item_bytes
    assert large.bytes_for(2) - large.bytes_for(1) == large.item_bytes


def test_upscale_activations_are_bounded_by_the_tile() -> None:
    """Tiled: a 16x larger input costs its output buffer more, not 16x the activations."""
    est = families.get("upscale").estimate_cost
    a = est(MODEL, {"image_width": 1024, "image_height": 1024, "scale": 2})
    b = est(MODEL, {"image_width": 4096, "image_height": 4096, "scale": 2})
    out_growth = (4096 * 4096 - 1024 * 1024) * 4 * 16
    assert b.item_bytes - a.item_bytes == pytest.approx(out_growth, rel=0.01)


def test_diffusion_cost_grows_with_steps_and_pixels() -> None:
    est = families.get("diffusion").estimate_cost
    base = est(MODEL, {"width": 512, "height": 512, "steps": 10})
    assert est(MODEL, {"width": 1024, "height": 1024, "steps": 10}).item_bytes > base.item_bytes
    assert est(MODEL, {"width": 512, "height": 512, "steps": 20}).seconds > base.seconds


def test_describe_fields_per_family() -> None:
    diffusion = families.get("diffusion").describe(_entry("diffusion", "sd15"))
    assert diffusion["defaults"]["width"] == 512 and "presets" in diffusion
    assert families.get("tag").describe(_entry("tag", "wd-tagger")) == {}


def test_only_diffusion_images_carry_parameters() -> None:
    params = {"prompt": "a fox", "steps": 2, "width": 64, "height": 64, "seed": 1}
    text = families.get("diffusion").image_text("txt2img", params, "demo-sd")
    assert text["parameters"].startswith("a fox\nSteps: 2")
    assert families.get("upscale").image_text("upscale", {}, "x") == {}
    assert families.get("tag").operations["tag"].result == "json"
