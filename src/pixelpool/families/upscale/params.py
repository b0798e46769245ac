"""Upscale parameters (torch-free): the API validates them before a job is queued.

One image per job. The output size is the input times `scale`, or `width` x
`height` (one of them alone keeps the aspect ratio); neither: the model's own
factor. The model always runs at its native factor; a Lanczos resize then
reaches any other size.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field, model_validator

from pixelpool.families.base import ImageOpParams

MAX_SIDE = 16384
MIN_TILE = 16


class UpscaleParams(ImageOpParams):
    model_config = ConfigDict(extra="forbid")

    scale: float | None = Field(None, gt=0, le=16, description="output / input size")
    width: int | None = Field(None, ge=1, le=MAX_SIDE, description="target width")
    height: int | None = Field(None, ge=1, le=MAX_SIDE, description="target height")
    tile: int = Field(0, ge=0, le=4096, description="input tile side; 0: from the memory budget")
    overlap: int | None = Field(
        None, ge=0, le=256,
        description="input pixels shared by adjacent tiles; none: 16, or two attention windows",
    )  # fmt: skip
    alpha: Literal["resize", "model"] = Field(
        "resize", description="alpha upscaled by a Lanczos resize, or by the model (grey as RGB)"
    )

    @model_validator(mode="after")
    def _consistent(self) -> UpscaleParams:
        if self.scale is not None and (self.width is not None or self.height is not None):
            raise ValueError("give scale or width/height, not both")
        if self.tile and self.tile < MIN_TILE:
            raise ValueError(f"tile must be 0 (automatic) or at least {MIN_TILE}")
        if self.tile and self.overlap is not None and self.overlap >= self.tile:
            raise ValueError("overlap must be smaller than tile")
        return self

    def target_size(self, width: int, height: int, native: int) -> tuple[int, int]:
        """The output (width, height) for an input of width x height."""
        if self.width is not None and self.height is not None:
            return self.width, self.height
        if self.width is not None:
            return self.width, max(1, round(height * self.width / width))
        if self.height is not None:
            return max(1, round(width * self.height / height)), self.height
        scale = native if self.scale is None else self.scale
        return max(1, round(width * scale)), max(1, round(height * scale))

    def batch_key(self) -> tuple[Any, ...]:
        """Jobs with equal keys share a run; same-size inputs inside it share each forward."""
        return ("upscale", self.tile, self.overlap, self.alpha)
