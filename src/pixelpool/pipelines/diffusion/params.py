"""Diffusion parameter schema, defaults and cost estimate (torch-free)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pixelpool.pipelines.diffusion.samplers import canonical_sampler, canonical_schedule

NATIVE_SIZE = {"sd15": 512, "sdxl": 1024}
MAX_SEED = 2**64 - 1


def random_seed() -> int:
    return secrets.randbelow(2**32 - 1) + 1


class Txt2ImgParams(BaseModel):
    """Fully resolved txt2img parameters: what a worker receives."""

    model_config = ConfigDict(extra="forbid")

    prompt: str
    negative_prompt: str = ""
    width: int = Field(ge=8, le=8192, multiple_of=8)
    height: int = Field(ge=8, le=8192, multiple_of=8)
    steps: int = Field(ge=1, le=1000)
    cfg_scale: float = Field(ge=0, le=100)
    seed: int = Field(ge=1, le=MAX_SEED)
    sampler: str | None = None
    scheduler: str | None = None
    preview_every: int = Field(0, ge=0, description="send a preview every N steps; 0: none")

    @field_validator("sampler")
    @classmethod
    def _sampler(cls, v: str | None) -> str | None:
        return None if v in (None, "") else canonical_sampler(v)

    @field_validator("scheduler")
    @classmethod
    def _schedule(cls, v: str | None) -> str | None:
        return None if v in (None, "") else canonical_schedule(v)

    def batch_key(self) -> tuple[Any, ...]:
        """Jobs with equal keys can share one forward pass."""
        return (self.width, self.height, self.steps, self.cfg_scale, self.sampler, self.scheduler)


def resolve_seed(seed: int | None) -> int:
    """0, -1 and None mean 'pick one'; the chosen seed is reported back."""
    return random_seed() if seed in (None, 0, -1) else int(seed)


@dataclass(frozen=True)
class Cost:
    vram_bytes: int
    seconds: float


def estimate_cost(architecture: str, model_bytes: int, params: Txt2ImgParams, batch: int) -> Cost:
    """Rough activation memory and time: grows with pixels x batch, time with steps."""
    pixels = params.width * params.height * batch
    per_pixel = 2_000 if architecture == "sdxl" else 1_200
    return Cost(vram_bytes=model_bytes + pixels * per_pixel, seconds=params.steps * pixels / 2e6)
