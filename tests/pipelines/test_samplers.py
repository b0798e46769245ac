"""Sampler tables: every name builds a diffusers scheduler; bad combinations are refused."""

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from diffusers import EulerDiscreteScheduler

from pixelpool.families.diffusion.params import Txt2ImgParams
from pixelpool.families.diffusion.samplers import (
    SAMPLERS,
    SCHEDULES,
    canonical_schedule,
    check_combination,
    samplers_for,
)
from pixelpool.pipelines.diffusion.common import make_scheduler

from .diffusion_helpers import BASE, MODELS, load, run

PARAMS = {"prompt": "x", "width": 64, "height": 64, "steps": 4, "cfg_scale": 5, "seed": 1}


def _pipe(**config: object) -> SimpleNamespace:
    base = EulerDiscreteScheduler(beta_schedule="scaled_linear", **config)
    return SimpleNamespace(scheduler=base)


@pytest.mark.parametrize("sampler", [s for s in SAMPLERS if not SAMPLERS[s].flow])
def test_every_sampler_and_valid_schedule_builds(sampler: str) -> None:
    for schedule in SCHEDULES:
        if check_combination("sd15", sampler, schedule):
            continue
        params = Txt2ImgParams(**PARAMS, sampler=sampler, scheduler=schedule)
        scheduler = make_scheduler(_pipe(), params)
        scheduler.set_timesteps(4)
        assert type(scheduler).__name__ == SAMPLERS[sampler].cls


def test_v_prediction_and_zero_snr_carry_over() -> None:
    pipe = _pipe(prediction_type="v_prediction", rescale_betas_zero_snr=True,
                 timestep_spacing="trailing")  # fmt: skip
    params = Txt2ImgParams(**PARAMS, sampler="DPM++ 2M", scheduler="Karras")
    scheduler = make_scheduler(pipe, params)
    assert scheduler.config.prediction_type == "v_prediction"
    assert scheduler.config.rescale_betas_zero_snr and scheduler.config.use_karras_sigmas


def test_combinations_are_checked() -> None:
    assert check_combination("sd15", "Euler a", "Karras") is not None
    assert check_combination("sd15", "DPM++ 2S a", "SGM Uniform") is not None
    assert check_combination("sd15", "Heun", None, zero_snr=True) is not None
    assert check_combination("sd15", "Flow Euler", None) is not None
    assert check_combination("sdxl", "DPM++ 2M SDE", "Exponential") is None
    assert "Flow Euler" in samplers_for("flux") and "Euler" not in samplers_for("sd3")
    assert canonical_schedule("sgm_uniform") == "SGM Uniform"


def test_a1111_name_makes_the_same_image_as_sampler_and_scheduler(models_dir: Path) -> None:
    """'DPM++ 2M Karras' is 'DPM++ 2M' with the Karras schedule, pixel for pixel."""
    model = load(models_dir / MODELS["sd15"], "sd15")
    base = {**BASE, "width": 64, "height": 64, "steps": 2}
    named = run(model, "txt2img", {**base, "sampler": "DPM++ 2M Karras"})[0]
    split = run(model, "txt2img", {**base, "sampler": "DPM++ 2M", "scheduler": "Karras"})[0]
    assert np.array_equal(named.images[0], split.images[0])
    plain = run(model, "txt2img", {**base, "sampler": "DPM++ 2M"})[0]
    assert not np.array_equal(named.images[0], plain.images[0])
