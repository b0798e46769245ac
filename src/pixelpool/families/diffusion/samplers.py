"""Sampler names users know (A1111 / ComfyUI) mapped to diffusers schedulers.

Torch-free: the API validates names and combinations with these tables (so a bad
combination is a 422, never a silent fallback); workers build the scheduler.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Sampler:
    """A diffusers scheduler class, the config it needs, and what it supports."""

    cls: str
    extra: dict[str, Any] = field(default_factory=dict)
    sigma_schedules: bool = True  # takes use_karras_sigmas / use_exponential_sigmas
    spacing: bool = True  # takes timestep_spacing (SGM Uniform, zero-SNR models)
    zero_snr: bool = False  # takes rescale_betas_zero_snr
    flow: bool = False  # a flow-matching sampler (SD3, FLUX)


SAMPLERS: dict[str, Sampler] = {
    "Euler": Sampler("EulerDiscreteScheduler", zero_snr=True),
    "Euler a": Sampler("EulerAncestralDiscreteScheduler", sigma_schedules=False, zero_snr=True),
    "Heun": Sampler("HeunDiscreteScheduler"),
    "DPM2": Sampler("KDPM2DiscreteScheduler"),
    "DPM2 a": Sampler("KDPM2AncestralDiscreteScheduler"),
    "DPM++ 2M": Sampler(
        "DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}, zero_snr=True
    ),
    "DPM++ 2M SDE": Sampler(
        "DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}, zero_snr=True
    ),
    "DPM++ SDE": Sampler("DPMSolverSDEScheduler"),
    "DPM++ 2S a": Sampler("DPMSolverSinglestepScheduler", spacing=False),
    "LMS": Sampler("LMSDiscreteScheduler"),
    "DDIM": Sampler("DDIMScheduler", sigma_schedules=False, zero_snr=True),
    "PNDM": Sampler("PNDMScheduler", sigma_schedules=False),
    "UniPC": Sampler("UniPCMultistepScheduler", zero_snr=True),
    "LCM": Sampler("LCMScheduler", sigma_schedules=False, zero_snr=True),
    "Flow Euler": Sampler("FlowMatchEulerDiscreteScheduler", spacing=False, flow=True),
    "Flow Heun": Sampler(
        "FlowMatchHeunDiscreteScheduler", sigma_schedules=False, spacing=False, flow=True
    ),
}

# schedule name -> (scheduler config, which Sampler capability it needs)
SCHEDULES: dict[str, tuple[dict[str, Any], str | None]] = {
    "Normal": ({}, None),
    "Karras": ({"use_karras_sigmas": True}, "sigma_schedules"),
    "Exponential": ({"use_exponential_sigmas": True}, "sigma_schedules"),
    "SGM Uniform": ({"timestep_spacing": "trailing"}, "spacing"),
}

FLOW_ARCHITECTURES = frozenset({"sd3", "flux"})


def _norm(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum() or ch == "+")


_BY_NORM = {_norm(n): n for n in SAMPLERS}
_SCHEDULE_BY_NORM = {_norm(n): n for n in SCHEDULES}


def _unknown_sampler(name: str) -> ValueError:
    schedules = ", ".join(n for n in SCHEDULES if n != "Normal")
    return ValueError(
        f"unknown sampler {name!r}; valid: {', '.join(SAMPLERS)} "
        f"(A1111 style, a schedule may follow the name: {schedules}, e.g. 'DPM++ 2M Karras')"
    )


def split_sampler_name(name: str) -> tuple[str, str | None]:
    """'DPM++ 2M Karras' -> ('DPM++ 2M', 'Karras'); 'euler_a' -> ('Euler a', None).

    A1111 still accepts its old names with the schedule in them, so clients send them.
    Case and spacing do not matter; a name that is a sampler as a whole wins (so
    'DPM++ 2M SDE' is a sampler, not 'DPM++ 2M' with a schedule). Raises ValueError
    listing the valid names.
    """
    norm = _norm(name)
    if norm in _BY_NORM:
        return _BY_NORM[norm], None
    for sched_norm, schedule in sorted(_SCHEDULE_BY_NORM.items(), key=lambda kv: -len(kv[0])):
        head = norm.removesuffix(sched_norm)
        if head != norm and head in _BY_NORM:
            return _BY_NORM[head], schedule
    raise _unknown_sampler(name)


def canonical_sampler(name: str) -> str:
    """'euler_a', 'Euler A' -> 'Euler a' (no schedule in the name). Raises ValueError
    listing the valid names."""
    found = _BY_NORM.get(_norm(name))
    if found is None:
        raise _unknown_sampler(name)
    return found


def canonical_schedule(name: str) -> str:
    found = _SCHEDULE_BY_NORM.get(_norm(name))
    if found is None:
        raise ValueError(f"unknown scheduler {name!r}; valid: {', '.join(SCHEDULES)}")
    return found


def resolve_sampler(sampler: str | None, scheduler: str | None) -> tuple[str | None, str | None]:
    """The canonical (sampler, schedule) of a request that may name the schedule in the
    sampler ('DPM++ 2M Karras'). The name's schedule fills `scheduler` when the request
    gave none; an explicit scheduler that differs is an error, not a silent choice.
    Errors are ValueErrors that start with the field they are about ('sampler: ...')."""
    try:
        name, named = split_sampler_name(sampler) if sampler else (None, None)
    except ValueError as exc:
        raise ValueError(f"sampler: {exc}") from exc
    try:
        schedule = canonical_schedule(scheduler) if scheduler else None
    except ValueError as exc:
        raise ValueError(f"scheduler: {exc}") from exc
    if named and schedule and named != schedule:
        raise ValueError(
            f"scheduler: {schedule!r} conflicts with the schedule in sampler {sampler!r} "
            f"({named!r}); send one of them"
        )
    return name, schedule or named


def samplers_for(architecture: str) -> list[str]:
    """Samplers that can drive a model of this architecture (flow models need flow ones)."""
    flow = architecture in FLOW_ARCHITECTURES
    return [name for name, s in SAMPLERS.items() if s.flow == flow]


def check_combination(
    architecture: str, sampler: str | None, schedule: str | None, zero_snr: bool = False
) -> str | None:
    """Why this sampler/schedule cannot run on the model (a message naming the field), or None."""
    if sampler is not None and sampler not in samplers_for(architecture):
        valid = ", ".join(samplers_for(architecture))
        return f"sampler: {sampler!r} cannot drive a {architecture} model; valid: {valid}"
    spec = SAMPLERS[sampler] if sampler else None
    if spec is not None and zero_snr and not spec.zero_snr:
        valid = ", ".join(n for n, s in SAMPLERS.items() if s.zero_snr)
        return f"sampler: {sampler!r} does not support zero-SNR models; valid: {valid}"
    if schedule and spec is not None:
        needs = SCHEDULES[schedule][1]
        if needs and not getattr(spec, needs):
            return f"scheduler: {schedule!r} is not available with sampler {sampler!r}"
    return None


def scheduler_config(
    sampler: str | None, schedule: str | None
) -> tuple[str | None, dict[str, Any]]:
    """The scheduler class to build (None: the model's own) and the config to add to the
    model's own scheduler config (which keeps its prediction type and zero-SNR setting)."""
    spec = SAMPLERS[sampler] if sampler else None
    extra: dict[str, Any] = dict(spec.extra) if spec else {}
    extra.update(SCHEDULES[schedule or "Normal"][0])
    return (spec.cls if spec else None), extra
