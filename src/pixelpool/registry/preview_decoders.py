"""TAESD preview decoders under models/vae_approx/ (ComfyUI) or models/VAE-approx/ (A1111).

A tiny autoencoder's decoder turns latents into a full-size preview image for a few
milliseconds per step, much closer to the final image than a latent-to-RGB table.
They are not generation models: the registry keeps them apart from `entries()`.

Two layouts are recognised, each by its name (the file alone cannot tell an SD 1.x
decoder from an SDXL one, or SD3 from FLUX: they share shapes):

- single files, as ComfyUI and A1111 install them: `taesd_decoder.*` (SD 1.x/2.x),
  `taesdxl_decoder.*` (SDXL), `taesd3_decoder.*` (SD3), `taef1_decoder.*` (FLUX),
  each `.safetensors`, or `.pth`/`.pt` (read with torch's weights-only loader);
- diffusers `AutoencoderTiny` directories (`config.json` with that `_class_name`),
  whose folder name contains `taesdxl`, `taesd3`, `taef1` or `taesd` (checked in that
  order, case-insensitive: `taesd3` is not `taesd`). A directory named otherwise is
  skipped with a warning; its `latent_channels` (4 or 16) is recorded but cannot tell
  the architecture on its own.

Read torch-free: JSON configs and safetensors headers only.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pixelpool.families.diffusion.checkpoints import read_header

log = logging.getLogger(__name__)

PREVIEW_FOLDERS = ("vae_approx", "VAE-approx")
SINGLE_FILE_SUFFIXES = (".safetensors", ".pth", ".pt")
# Single files: the name starts with one of these (as ComfyUI matches them).
FILE_PREFIXES = {"taesd_decoder": "sd15", "taesdxl_decoder": "sdxl",
                 "taesd3_decoder": "sd3", "taef1_decoder": "flux"}  # fmt: skip
# Diffusers dirs: the first of these found in the folder name (taesdxl/taesd3 before taesd).
DIR_TOKENS = (("taesdxl", "sdxl"), ("taesd3", "sd3"), ("taef1", "flux"), ("taesd", "sd15"))

DecoderFormat = Literal["single_file", "diffusers"]


@dataclass(frozen=True)
class PreviewDecoderEntry:
    """One TAESD decoder on disk and the architecture whose latents it decodes."""

    name: str  # file or folder name under the preview folder, e.g. "taesd_decoder"
    folder: str
    architecture: str
    path: Path
    format: DecoderFormat
    size_bytes: int
    mtime_ns: int
    latent_channels: int | None = None  # None: not readable without torch (.pth)

    @property
    def key(self) -> str:
        """Changes whenever the files do: workers cache loaded decoders by it."""
        return f"{self.path}:{self.size_bytes}:{self.mtime_ns}"

    @property
    def rank(self) -> tuple[int, str]:
        """Which of several decoders for one architecture is used: safetensors files
        first (no pickle), then diffusers dirs, then .pth/.pt; then by name."""
        if self.format == "diffusers":
            return 1, self.name
        return (0 if self.path.suffix == ".safetensors" else 2), self.name

    def to_wire(self) -> dict[str, Any]:
        """What a job's params carry so that its worker can load the decoder."""
        return {"path": str(self.path), "format": self.format, "key": self.key}


def _file_entry(folder: Path, path: Path) -> PreviewDecoderEntry | None:
    stem = path.name.lower()
    arch = next((a for prefix, a in FILE_PREFIXES.items() if stem.startswith(prefix)), None)
    if arch is None or path.suffix.lower() not in SINGLE_FILE_SUFFIXES:
        return None
    channels = None
    if path.suffix.lower() == ".safetensors":
        try:
            header = read_header(path)
        except (OSError, ValueError) as exc:
            log.warning("skipping unreadable preview decoder %s: %s", path, exc)
            return None
        shape = (header.get("1.weight") or {}).get("shape") or []
        channels = int(shape[1]) if len(shape) == 4 else None
    st = path.stat()
    return PreviewDecoderEntry(
        name=path.stem, folder=folder.name, architecture=arch, path=path.resolve(),
        format="single_file", size_bytes=st.st_size, mtime_ns=st.st_mtime_ns,
        latent_channels=channels,
    )  # fmt: skip


def _dir_entry(folder: Path, path: Path) -> PreviewDecoderEntry | None:
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict) or config.get("_class_name") != "AutoencoderTiny":
        return None
    lowered = path.name.lower()
    arch = next((a for token, a in DIR_TOKENS if token in lowered), None)
    if arch is None:
        log.warning("skipping %s: name an AutoencoderTiny folder taesd, taesdxl, taesd3 or "
                    "taef1 (its latents alone cannot tell the architecture)", path)  # fmt: skip
        return None
    files = [f for f in path.rglob("*") if f.is_file()]
    return PreviewDecoderEntry(
        name=path.name, folder=folder.name, architecture=arch, path=path.resolve(),
        format="diffusers", size_bytes=sum(f.stat().st_size for f in files),
        mtime_ns=max((f.stat().st_mtime_ns for f in files), default=0),
        latent_channels=int(config.get("latent_channels") or 4),
    )  # fmt: skip


def scan_preview_decoders(models_dir: Path) -> list[PreviewDecoderEntry]:
    """Every TAESD decoder directly inside models_dir/vae_approx/ (or VAE-approx/)."""
    found: list[PreviewDecoderEntry] = []
    for name in PREVIEW_FOLDERS:
        folder = models_dir / name
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if path.name.startswith("."):
                continue
            entry = _dir_entry(folder, path) if path.is_dir() else _file_entry(folder, path)
            if entry is not None:
                found.append(entry)
    return found


def pick(entries: list[PreviewDecoderEntry], architecture: str) -> PreviewDecoderEntry | None:
    """The decoder a job on a model of `architecture` previews with, if any."""
    mine = [e for e in entries if e.architecture == architecture]
    return min(mine, key=lambda e: e.rank) if mine else None
