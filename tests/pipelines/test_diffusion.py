"""The diffusion family against diffusers called directly, on the tiny demo models."""

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline

from pixelpool.families.diffusion.params import Txt2ImgParams
from pixelpool.families.diffusion.samplers import canonical_sampler
from pixelpool.pipelines import get_family
from pixelpool.pipelines.base import Cancelled, Loaded, WorkItem

PARAMS = {
    "prompt": "a photo of a red fox",
    "negative_prompt": "blurry",
    "width": 64,
    "height": 48,
    "steps": 4,
    "cfg_scale": 6.5,
    "seed": 1234,
}
MODELS = {"sd15": "sd15/demo-sd", "sdxl": "sdxl/demo-sdxl"}


def _entry(models_dir: Path, arch: str) -> dict[str, str]:
    return {"architecture": arch, "path": str(models_dir / MODELS[arch]), "format": "diffusers",
            "name": MODELS[arch]}  # fmt: skip


@pytest.fixture(scope="module", params=["sd15", "sdxl"])
def loaded(request: pytest.FixtureRequest, models_dir: Path) -> tuple[str, Loaded]:
    arch = request.param
    return arch, get_family("diffusion").load(_entry(models_dir, arch), "cpu", "auto")


def _run(loaded: Loaded, *params: dict, cancel=lambda: False) -> list[np.ndarray]:
    items = [WorkItem(f"job{i}", "txt2img", p) for i, p in enumerate(params)]
    results = get_family("diffusion").run(loaded, items, lambda *a: None, cancel)
    return [r.images[0] for r in results]


def _direct(models_dir: Path, arch: str, p: dict) -> np.ndarray:
    pipe = DiffusionPipeline.from_pretrained(models_dir / MODELS[arch], local_files_only=True)
    out = pipe(
        p["prompt"],
        negative_prompt=p["negative_prompt"],
        width=p["width"],
        height=p["height"],
        num_inference_steps=p["steps"],
        guidance_scale=p["cfg_scale"],
        generator=torch.Generator("cpu").manual_seed(p["seed"]),
    ).images[0]  # a PIL image, as a user of diffusers gets it
    return np.asarray(out)


def test_parity_with_diffusers(loaded: tuple[str, Loaded], models_dir: Path) -> None:
    arch, model = loaded
    ours = _run(model, PARAMS)[0]
    ref = _direct(models_dir, arch, PARAMS)
    assert ours.shape == (48, 64, 3) and ours.dtype == np.uint8
    assert np.abs(ours.astype(int) - ref.astype(int)).max() <= 1


def test_batched_images_equal_unbatched(loaded: tuple[str, Loaded]) -> None:
    _, model = loaded
    other = {**PARAMS, "seed": 99, "prompt": "a blue house"}
    batched = _run(model, PARAMS, other)
    alone = [_run(model, PARAMS)[0], _run(model, other)[0]]
    for b, a in zip(batched, alone, strict=True):
        assert np.array_equal(b, a)  # bit for bit: see pipelines/diffusion/invariance.py
    assert np.abs(batched[0].astype(int) - batched[1].astype(int)).max() > 10


def test_seed_determines_image(loaded: tuple[str, Loaded]) -> None:
    _, model = loaded
    a, b = _run(model, PARAMS)[0], _run(model, PARAMS)[0]
    c = _run(model, {**PARAMS, "seed": 4321})[0]
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_sampler_changes_result_and_restores_model_scheduler(loaded: tuple[str, Loaded]) -> None:
    _, model = loaded
    before = type(model.obj.scheduler)
    default = _run(model, PARAMS)[0]
    dpm = _run(model, {**PARAMS, "sampler": "DPM++ 2M", "scheduler": "Karras"})[0]
    assert not np.array_equal(default, dpm)
    assert type(model.obj.scheduler) is before


def test_cancel_stops_between_steps(loaded: tuple[str, Loaded]) -> None:
    _, model = loaded
    steps: list[int] = []
    items = [WorkItem("j", "txt2img", {**PARAMS, "steps": 10})]
    with pytest.raises(Cancelled):
        get_family("diffusion").run(
            model, items, lambda step, *_: steps.append(step), lambda: len(steps) >= 2
        )
    assert steps == [1, 2]


def test_sampler_names_are_normalised_and_unknown_rejected() -> None:
    assert canonical_sampler("euler_a") == "Euler a"
    assert canonical_sampler("Euler A") == "Euler a"
    assert canonical_sampler("dpm++ 2m") == "DPM++ 2M"
    with pytest.raises(ValueError, match="valid: Euler"):
        canonical_sampler("nope")
    with pytest.raises(ValueError):
        Txt2ImgParams(**{**PARAMS, "width": 63})


def test_previews_every_n_steps(loaded: tuple[str, Loaded]) -> None:
    _, model = loaded
    seen: list[tuple[int, int]] = []

    def progress(step: int, total: int, stage: str, previews: list | None) -> None:
        if previews is not None:
            seen.append((step, len(previews)))
            assert previews[0].dtype == np.uint8 and previews[0].shape == (6, 8, 3)

    items = [WorkItem("a", "txt2img", {**PARAMS, "steps": 5, "preview_every": 2}),
             WorkItem("b", "txt2img", {**PARAMS, "steps": 5, "seed": 2})]  # fmt: skip
    get_family("diffusion").run(model, items, progress, lambda: False)
    assert seen == [(2, 2), (4, 2), (5, 2)]
