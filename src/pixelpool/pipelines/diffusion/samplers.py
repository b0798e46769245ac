"""Sampler names users know (A1111 / ComfyUI) mapped to diffusers schedulers.

Torch-free: the API validates names with this table; workers build the scheduler.
"""

from __future__ import annotations

from typing import Any

# name -> (diffusers scheduler class, extra config)
SAMPLERS: dict[str, tuple[str, dict[str, Any]]] = {
    "Euler": ("EulerDiscreteScheduler", {}),
    "Euler a": ("EulerAncestralDiscreteScheduler", {}),
    "Heun": ("HeunDiscreteScheduler", {}),
    "DPM2": ("KDPM2DiscreteScheduler", {}),
    "DPM2 a": ("KDPM2AncestralDiscreteScheduler", {}),
    "DPM++ 2M": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    "DPM++ 2M SDE": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}),
    "DPM++ 2S a": ("DPMSolverSinglestepScheduler", {}),
    "LMS": ("LMSDiscreteScheduler", {}),
    "DDIM": ("DDIMScheduler", {}),
    "PNDM": ("PNDMScheduler", {}),
    "UniPC": ("UniPCMultistepScheduler", {}),
}

SCHEDULES: dict[str, dict[str, Any]] = {
    "Normal": {},
    "Karras": {"use_karras_sigmas": True},
    "Exponential": {"use_exponential_sigmas": True},
}


def _norm(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum() or ch == "+")


_BY_NORM = {_norm(n): n for n in SAMPLERS}
_SCHEDULE_BY_NORM = {_norm(n): n for n in SCHEDULES}


def canonical_sampler(name: str) -> str:
    """'euler_a', 'Euler A' -> 'Euler a'. Raises ValueError listing the valid names."""
    found = _BY_NORM.get(_norm(name))
    if found is None:
        raise ValueError(f"unknown sampler {name!r}; valid: {', '.join(SAMPLERS)}")
    return found


def canonical_schedule(name: str) -> str:
    found = _SCHEDULE_BY_NORM.get(_norm(name))
    if found is None:
        raise ValueError(f"unknown scheduler {name!r}; valid: {', '.join(SCHEDULES)}")
    return found
