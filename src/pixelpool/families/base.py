"""The family contract: what the registry, the cost estimate, the jobs layer and the
API need to know about a task family, without importing torch.

The worker side of a family (load and run) lives in `pipelines/<family>/`; this side
is what the HTTP process consults: which folders and files are its models, how to
recognise one from its files, its operations and their params, what a job costs,
how a model is listed and what kind of result each operation returns.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, Field

ResultKind = Literal["image", "json", "array", "latents"]


class OpParams(BaseModel):
    """Every operation's params: validated in the API, sent as a dict to the worker."""

    def batch_key(self) -> tuple[Any, ...]:
        """Jobs with equal keys (same family, op and model) may share one run."""
        raise NotImplementedError


@dataclass(frozen=True)
class Cost:
    """Device memory and time a job needs, before it runs (rough, conservative)."""

    model_bytes: int
    item_bytes: int  # per item of a batch
    seconds: float

    def bytes_for(self, batch: int) -> int:
        return self.model_bytes + batch * self.item_bytes


@dataclass(frozen=True)
class Detected:
    """What a family recognised in a file or folder, before the registry names it."""

    architecture: str
    format: str  # "diffusers", "single_file", "state_dict", "onnx"
    traits: dict[str, Any] = field(default_factory=dict)  # ModelEntry fields of the family


@dataclass(frozen=True)
class Operation:
    params: type[OpParams]
    result: ResultKind


class EntryLike(Protocol):
    """The ModelEntry fields a description reads (the registry's class lives above)."""

    name: str
    architecture: str
    format: str
    manifest: Any
    prediction_type: str
    zero_snr: bool


class FamilyDescription(Protocol):
    name: str
    folders: frozenset[str]  # folders under the models dir it claims
    suffixes: frozenset[str]  # file types it reads there
    model_dir_marker: str | None  # a file that makes a folder one model (model_index.json)
    operations: Mapping[str, Operation]

    def detect(self, folder: Path, path: Path) -> Detected | None:
        """The model in `path` (a file, or a folder holding the marker), or None when
        it is not one of this family's. OSError / ValueError: unreadable."""
        ...

    def estimate_cost(self, model: dict[str, Any], params: dict[str, Any]) -> Cost: ...

    def describe(self, entry: EntryLike) -> dict[str, Any]:
        """The family's own fields of a model in model lists."""
        ...

    def image_text(self, op: str, params: dict[str, Any], model_name: str) -> dict[str, str]:
        """Text chunks written into an image result (diffusion: A1111 `parameters`)."""
        ...


class ImageOpParams(OpParams):
    """An operation on one uploaded image; its size (set by the API) feeds the cost."""

    image: str = Field(description="path of the uploaded input image")
    image_width: int = Field(0, ge=0, description="input width (for the cost estimate)")
    image_height: int = Field(0, ge=0, description="input height (for the cost estimate)")


def image_pixels(params: dict[str, Any], default: int = 1024 * 1024) -> int:
    pixels = int(params.get("image_width") or 0) * int(params.get("image_height") or 0)
    return pixels or default


class NoImageText:
    """For families whose images carry no generation parameters."""

    def image_text(self, op: str, params: dict[str, Any], model_name: str) -> dict[str, str]:
        return {}

    def describe(self, entry: EntryLike) -> dict[str, Any]:
        manifest = entry.manifest.describe() if entry.manifest is not None else {}
        return {k: v for k, v in manifest.items() if k not in ("presets", "defaults")}
