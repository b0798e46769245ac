"""Background-removal parameters (torch-free): one image per job."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class BgRemoveParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    image: str = Field(description="path of the uploaded input image")
    mask_only: bool = Field(False, description="return the mask (grey) instead of the cut-out")

    def batch_key(self) -> tuple[Any, ...]:
        """Every input is resized to the model's size, so any jobs can share a run."""
        return ("bgremove",)
