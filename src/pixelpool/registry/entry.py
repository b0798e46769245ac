"""What the registry knows about one model on disk."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

ModelFormat = Literal["diffusers", "single_file"]

# Folders under the models dir that hold something other than diffusion checkpoints.
NON_DIFFUSION_FOLDERS = frozenset({"loras", "upscale", "bgremove", "tagger", "vision", "other"})

SUPPORTED_ARCHITECTURES = ("sd15", "sdxl")


@dataclass(frozen=True)
class ModelEntry:
    """A model found on disk. `name` is its path relative to its family folder."""

    name: str
    folder: str
    family: str
    architecture: str
    path: Path
    format: ModelFormat
    size_bytes: int
    mtime_ns: int

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
        }
