"""What the registry knows about one model on disk."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pixelpool.registry.manifests import Manifest


@dataclass(frozen=True)
class ModelEntry:
    """A model found on disk. `name` is its path relative to its family folder, without
    the file type."""

    name: str
    folder: str
    family: str
    architecture: str
    path: Path
    format: str  # the family's: "diffusers", "single_file", "onnx", "safetensors"...
    size_bytes: int
    mtime_ns: int
    manifest: Manifest | None = None
    prediction_type: str = "epsilon"  # or "v_prediction", "flow" (from the scheduler config)
    zero_snr: bool = False  # trained with zero terminal SNR: only some samplers fit

    @property
    def qualified_name(self) -> str:
        return f"{self.folder}/{self.name}"

    def to_wire(self) -> dict[str, Any]:
        """A picklable, JSON-able description that a worker can load from."""
        return {
            "name": self.name,
            "family": self.family,
            "architecture": self.architecture,
            "path": str(self.path),
            "format": self.format,
            "size_bytes": self.size_bytes,
            "mtime_ns": self.mtime_ns,  # with the size: the files' version, for worker caches
        }
