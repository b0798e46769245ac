"""onnxruntime sessions for the ONNX families (bgremove, tag): CUDA when present, else CPU.

A session cannot move between devices, so the model cache's `move` opens a new one
from the same file (fast: the graph is small next to its weights, read from the
page cache).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnxruntime as ort

from pixelpool.pipelines.base import Loaded


@dataclass
class OnnxModel:
    """An open session and what it was opened from; `extra` holds family data (labels...)."""

    path: Path
    session: ort.InferenceSession
    extra: Any = None

    @property
    def input(self) -> ort.NodeArg:
        return self.session.get_inputs()[0]

    def fixed_batch(self) -> bool:
        """True when the graph takes exactly one image per run (a static batch dim of 1)."""
        dim = self.input.shape[0]
        return isinstance(dim, int) and dim == 1

    def run(self, array: Any) -> list[Any]:
        return self.session.run(None, {self.input.name: array})


def providers(device: str) -> list[Any]:
    """CUDAExecutionProvider on a CUDA device when onnxruntime has it, else the CPU."""
    if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        index = int(device.partition(":")[2] or 0)
        return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def open_session(path: str | Path, device: str) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: shape-inference chatter is not for users
    return ort.InferenceSession(str(path), options, providers=providers(device))


def file_bytes(path: str | Path) -> int:
    """The model's bytes for the cache: the graph plus external data files next to it."""
    path = Path(path)
    extra = path.parent.glob(f"{path.stem}*.data")
    return path.stat().st_size + sum(p.stat().st_size for p in extra)


def move_session(loaded: Loaded, device: str) -> Loaded:
    """The cache's tier move: a new session on `device` (same file, same family data)."""
    if device == loaded.device:
        return loaded
    model: OnnxModel = loaded.obj
    moved = OnnxModel(model.path, open_session(model.path, device), model.extra)
    return Loaded(moved, loaded.size_bytes, loaded.architecture, device, loaded.family)
