"""Background-removal parameters (torch-free): one image per job."""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, Field

from pixelpool.families.base import ImageOpParams


class BgRemoveParams(ImageOpParams):
    model_config = ConfigDict(extra="forbid")

    mask_only: bool = Field(False, description="return the mask (grey) instead of the cut-out")

    def batch_key(self) -> tuple[Any, ...]:
        """Every input is resized to the model's size, so any jobs can share a run."""
        return ("bgremove",)
