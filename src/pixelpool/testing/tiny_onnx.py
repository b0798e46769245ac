"""Tiny random ONNX graphs shaped like real background removers and WD taggers.

Exported from small torch modules with `torch.onnx.export` (the TorchScript-based
exporter: under a second, where the torch.export-based one takes many), with the
same input and output layouts as the real exports: a segmenter takes 1x3xHxW and
returns 1x1xHxW maps (plus an auxiliary map, as U²-Net returns several); a WD
tagger takes NxHxWx3 BGR pixels in 0-255 and returns Nx(tags) probabilities,
next to a `selected_tags.csv`.
"""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

# name, category: 9 rating, 0 general, 4 character (the WD tagger's selected_tags.csv)
TINY_TAGS: list[tuple[str, int]] = [
    ("general", 9), ("sensitive", 9), ("questionable", 9), ("explicit", 9),
    ("1girl", 0), ("solo", 0), ("long_hair", 0), ("smile", 0), ("blue_sky", 0),
    ("^_^", 0), ("outdoors", 0), ("open_mouth", 0),
    ("hatsune_miku", 4), ("kagamine_rin", 4), ("megurine_luka", 4),
]  # fmt: skip


class TinySegmenter(nn.Module):
    def __init__(self, logits: bool) -> None:
        super().__init__()
        self.logits = logits
        self.a = nn.Conv2d(3, 6, 3, padding=1)
        self.b = nn.Conv2d(6, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.b(torch.relu(self.a(x)))
        return (y if self.logits else torch.sigmoid(y)), torch.sigmoid(-y)


class TinyTagger(nn.Module):
    """NHWC 0-255 in, sigmoid scores out, like the WD taggers' Keras exports."""

    def __init__(self, tags: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.head = nn.Linear(32, tags)
        nn.init.normal_(self.head.weight, std=2.0)  # scores spread over (0, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = torch.relu(self.conv(x.permute(0, 3, 1, 2) / 255 - 0.5))
        return torch.sigmoid(self.head(self.pool(features).flatten(1)))


def export(module: nn.Module, example: torch.Tensor, target: Path, dynamic_batch: bool,
           outputs: list[str]) -> Path:  # fmt: skip
    target.parent.mkdir(parents=True, exist_ok=True)
    axes = {"input": {0: "batch"}, **{name: {0: "batch"} for name in outputs}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            module.eval(), (example,), str(target), input_names=["input"], output_names=outputs,
            dynamic_axes=axes if dynamic_batch else None, dynamo=False,
        )  # fmt: skip
    return target


def toml_text(values: dict[str, Any]) -> str:
    """A flat TOML table (numbers, strings, booleans, lists of numbers): JSON spells them."""
    return "".join(f"{key} = {json.dumps(value)}\n" for key, value in values.items())


def write_tiny_segmenter(
    target: Path,
    size: int = 32,
    logits: bool = False,
    dynamic_batch: bool = False,
    sidecar: dict[str, Any] | None = None,
    seed: int = 0,
) -> Path:
    """A 1x3xSxS -> 1x1xSxS segmenter at `target` (.onnx), and `<name>.toml` if `sidecar`."""
    torch.manual_seed(seed)
    example = torch.rand(1, 3, size, size)
    export(TinySegmenter(logits), example, target, dynamic_batch, ["mask", "aux"])
    if sidecar is not None:
        target.with_suffix(".toml").write_text(toml_text(sidecar))
    return target


def write_tiny_wd_tagger(target_dir: Path, size: int = 32, seed: int = 0) -> Path:
    """`model.onnx` (Nx S x S x3 -> N x tags) and `selected_tags.csv` in `target_dir`."""
    torch.manual_seed(seed)
    export(TinyTagger(len(TINY_TAGS)), torch.rand(1, size, size, 3) * 255,
           target_dir / "model.onnx", True, ["output"])  # fmt: skip
    with (target_dir / "selected_tags.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["tag_id", "name", "category", "count"])
        for i, (name, category) in enumerate(TINY_TAGS):
            writer.writerow([1000 + i, name, category, 10_000 - i])
    return target_dir
