"""Tagger parameters (torch-free): one image per job, thresholds per category."""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, Field

from pixelpool.families.base import ImageOpParams


class TagParams(ImageOpParams):
    model_config = ConfigDict(extra="forbid")

    general_threshold: float = Field(0.35, ge=0, le=1)
    character_threshold: float = Field(0.85, ge=0, le=1)
    general_mcut: bool = Field(False, description="threshold at the largest gap (MCut)")
    character_mcut: bool = Field(False, description="MCut for characters (at least 0.15)")
    top_k: int | None = Field(None, ge=1, le=10_000, description="at most k tags per category")
    replace_underscores: bool = Field(True, description="long_hair -> long hair (not kaomoji)")

    def batch_key(self) -> tuple[Any, ...]:
        """Thresholds only filter the scores: any jobs can share a run."""
        return ("tag",)
