"""A1111 sampler names with the schedule in the name map to our sampler + schedule."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from pixelpool.families.diffusion.params import Txt2ImgParams
from pixelpool.families.diffusion.samplers import (
    check_combination,
    resolve_sampler,
    split_sampler_name,
)

PARAMS = {"prompt": "x", "width": 64, "height": 64, "steps": 2, "cfg_scale": 5, "seed": 1}

# A1111's own sampler list (1.x, with the old schedule-in-the-name aliases it still
# accepts) -> what each means here.
A1111_NAMES = {
    "Euler a": ("Euler a", None),
    "Euler": ("Euler", None),
    "LMS": ("LMS", None),
    "Heun": ("Heun", None),
    "DPM2": ("DPM2", None),
    "DPM2 a": ("DPM2 a", None),
    "DPM++ 2S a": ("DPM++ 2S a", None),
    "DPM++ 2M": ("DPM++ 2M", None),
    "DPM++ SDE": ("DPM++ SDE", None),
    "DPM++ 2M SDE": ("DPM++ 2M SDE", None),
    "LMS Karras": ("LMS", "Karras"),
    "DPM2 Karras": ("DPM2", "Karras"),
    "DPM2 a Karras": ("DPM2 a", "Karras"),
    "DPM++ 2S a Karras": ("DPM++ 2S a", "Karras"),
    "DPM++ 2M Karras": ("DPM++ 2M", "Karras"),
    "DPM++ SDE Karras": ("DPM++ SDE", "Karras"),
    "DPM++ 2M SDE Karras": ("DPM++ 2M SDE", "Karras"),
    "DPM++ 2M SDE Exponential": ("DPM++ 2M SDE", "Exponential"),
    "DPM++ 2M Exponential": ("DPM++ 2M", "Exponential"),
    "DPM++ 2M SGM Uniform": ("DPM++ 2M", "SGM Uniform"),
    "Euler SGM Uniform": ("Euler", "SGM Uniform"),
    "DDIM": ("DDIM", None),
    "UniPC": ("UniPC", None),
    "LCM": ("LCM", None),
}
# In A1111's list, but no diffusers scheduler here runs them: still a 422 naming `sampler`.
UNSUPPORTED = ["DPM++ 3M SDE", "DPM++ 3M SDE Karras", "DPM fast", "DPM adaptive", "Restart"]


@pytest.mark.parametrize(("name", "expected"), A1111_NAMES.items())
def test_a1111_names_map(name: str, expected: tuple[str, str | None]) -> None:
    assert split_sampler_name(name) == expected
    sampler, schedule = expected
    assert check_combination("sd15", sampler, schedule) is None


def test_case_and_spacing_do_not_matter() -> None:
    assert split_sampler_name("dpm++ 2m karras") == ("DPM++ 2M", "Karras")
    assert split_sampler_name("DPM++2M  Karras") == ("DPM++ 2M", "Karras")
    assert split_sampler_name("dpmpp_2m_sde_karras".replace("pp", "++")) == (
        "DPM++ 2M SDE",
        "Karras",
    )
    assert split_sampler_name("euler_a") == ("Euler a", None)
    assert split_sampler_name("DPM++ 2M sgm_uniform") == ("DPM++ 2M", "SGM Uniform")


@pytest.mark.parametrize("name", [*UNSUPPORTED, "nope", "Karras"])
def test_unknown_names_list_the_valid_ones(name: str) -> None:
    with pytest.raises(ValueError, match=r"valid: Euler.*Karras, Exponential, SGM Uniform"):
        split_sampler_name(name)
    with pytest.raises(ValueError, match=r"^sampler: "):
        resolve_sampler(name, None)


def test_the_names_schedule_fills_scheduler_and_a_conflict_is_refused() -> None:
    assert resolve_sampler("DPM++ 2M Karras", None) == ("DPM++ 2M", "Karras")
    assert resolve_sampler("DPM++ 2M Karras", "karras") == ("DPM++ 2M", "Karras")
    assert resolve_sampler("DPM++ 2M", "Exponential") == ("DPM++ 2M", "Exponential")
    with pytest.raises(ValueError, match=r"^scheduler: 'Normal' conflicts"):
        resolve_sampler("DPM++ 2M Karras", "Normal")


def test_params_split_the_name() -> None:
    params = Txt2ImgParams(**PARAMS, sampler="DPM++ 2M Karras")
    assert (params.sampler, params.scheduler) == ("DPM++ 2M", "Karras")
    same = Txt2ImgParams(**PARAMS, sampler="DPM++ 2M", scheduler="Karras")
    assert params.batch_key() == same.batch_key()
    with pytest.raises(ValidationError, match="conflicts"):
        Txt2ImgParams(**PARAMS, sampler="DPM++ 2M Karras", scheduler="Exponential")
