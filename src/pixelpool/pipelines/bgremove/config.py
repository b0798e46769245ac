"""How a segmenter wants its input, from the ONNX input shape or a sidecar `<name>.toml`.

Sidecar keys (all optional):

    size = [1024, 1024]            # height, width; default: the graph's static input shape
    mean = [0.485, 0.456, 0.406]   # per channel, on pixels in [0, 1]
    std = [0.229, 0.224, 0.225]
    divide = "255"                 # or "max": pixels / the image's maximum (U²-Net's reference)
    output = "probability"         # or "logits": a sigmoid first (BiRefNet exports)
    minmax = true                  # stretch the mask to [0, 1], as rembg does
    output_index = 0               # which output is the mask (U²-Net returns seven)

The defaults are rembg's for U²-Net (ImageNet mean/std); IS-Net and RMBG-1.4 want
mean 0.5, std 1.0 in a sidecar.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_SIZE = 1024


class Sidecar(BaseModel):
    model_config = ConfigDict(extra="forbid")

    size: tuple[int, int] | int | None = None
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    divide: Literal["255", "max"] = "255"
    output: Literal["probability", "logits"] = "probability"
    minmax: bool = True
    output_index: int = Field(0, ge=0)


@dataclass(frozen=True)
class SegmenterConfig:
    height: int
    width: int
    sidecar: Sidecar


def sidecar_path(model_path: Path) -> Path:
    return model_path.with_suffix(".toml")


def read_config(model_path: Path, input_shape: list[Any]) -> SegmenterConfig:
    """The sidecar (if any) over what the graph says; a dynamic size without one: 1024."""
    side = sidecar_path(model_path)
    sidecar = Sidecar()
    if side.exists():
        try:
            sidecar = Sidecar.model_validate(tomllib.loads(side.read_text()))
        except (tomllib.TOMLDecodeError, ValueError) as exc:
            raise ValueError(f"{side.name}: {exc}") from exc
    if sidecar.size is not None:
        size = sidecar.size
        height, width = (size, size) if isinstance(size, int) else size
    else:
        dims = input_shape[2:4]
        height, width = (d if isinstance(d, int) and d > 0 else DEFAULT_SIZE for d in dims)
    return SegmenterConfig(height, width, sidecar)
