"""IP-Adapters under models/ip-adapter/ (or models/ipadapter/, as ComfyUI names it).

An IP-Adapter is a weight file in the original layout diffusers' `load_ip_adapter`
reads (`image_proj.*` and `ip_adapter.*` tensors) plus the CLIP vision encoder its
projection was trained on: an `image_encoder/` directory (config.json + weights)
beside it, or elsewhere in the folder, as the published repositories lay them out:

    ip-adapter/models/ip-adapter_sd15.safetensors
    ip-adapter/models/image_encoder/                 (ViT-H)
    ip-adapter/sdxl_models/ip-adapter_sdxl.safetensors
    ip-adapter/sdxl_models/image_encoder/            (ViT-bigG)

The encoder is the nearest one whose width fits the adapter's projection (the
projection size for the base variant, the hidden size for "plus"), so an SDXL
"vit-h" adapter finds the ViT-H encoder. Architecture: the file's
`modelspec.architecture` metadata, else the cross-attention width of its key
projections (768 SD 1.x, 2048 SDXL); variant: "plus" when the image projection is a
resampler (`image_proj.latents`). Only .safetensors files are read (torch-free).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pixelpool.families.diffusion.checkpoints import read_header
from pixelpool.registry.loras import _CONTEXT_DIM, _from_metadata

log = logging.getLogger(__name__)

IP_ADAPTER_FOLDERS = ("ip-adapter", "ipadapter")
ENCODER_DIR = "image_encoder"
Variant = Literal["base", "plus"]


class IPAdapterNotFound(LookupError):
    def __init__(self, name: str) -> None:
        super().__init__(f"IP-Adapter not found: {name!r}")
        self.name = name


@dataclass(frozen=True)
class IPAdapterEntry:
    """An adapter file with its image encoder. `name` is its path under the folder
    without `.safetensors`."""

    name: str
    path: Path
    image_encoder: Path
    architecture: str | None  # None: could not be told from the file
    variant: Variant
    size_bytes: int
    mtime_ns: int
    encoder_bytes: int
    encoder_mtime_ns: int

    @property
    def key(self) -> str:
        """Changes whenever the adapter or its encoder does: workers cache by it."""
        return (f"{self.path}:{self.size_bytes}:{self.mtime_ns}:{self.image_encoder}:"
                f"{self.encoder_bytes}:{self.encoder_mtime_ns}")  # fmt: skip

    def to_wire(self, scale: float, images: list[str]) -> dict[str, Any]:
        """What a job's params carry (an IPAdapterRef) for these reference images."""
        return {"name": self.name, "path": str(self.path), "image_encoder": str(self.image_encoder),
                "key": self.key, "scale": float(scale), "images": images}  # fmt: skip


def _encoder_widths(directory: Path) -> tuple[int, int] | None:
    """(hidden size, projection size) of a CLIP vision encoder directory; None: not one."""
    try:
        config = json.loads((directory / "config.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict):
        return None
    vision = config.get("vision_config") if "vision_config" in config else config
    if not isinstance(vision, dict) or "hidden_size" not in vision:
        return None
    hidden = int(vision["hidden_size"])
    return hidden, int(vision.get("projection_dim") or config.get("projection_dim") or hidden)


def _encoders(folder: Path) -> dict[Path, tuple[int, int]]:
    found = {}
    for config in sorted(folder.rglob(f"{ENCODER_DIR}/config.json")):
        widths = _encoder_widths(config.parent)
        weights = [*config.parent.glob("*.safetensors"), *config.parent.glob("*.bin")]
        if widths is not None and weights:
            found[config.parent] = widths
    return found


def _nearest(
    path: Path, encoders: dict[Path, tuple[int, int]], width: int, plus: bool
) -> Path | None:
    """The encoder whose width fits, nearest to the file (its own folder first)."""
    fitting = [e for e, (hidden, proj) in encoders.items() if (hidden if plus else proj) == width]

    def distance(encoder: Path) -> tuple[int, str]:
        shared = len(Path(*[a for a, b in zip(path.parent.parts, encoder.parent.parts,
                                               strict=False) if a == b]).parts)  # fmt: skip
        return len(path.parent.parts) + len(encoder.parent.parts) - 2 * shared, str(encoder)

    return min(fitting, key=distance) if fitting else None


def _architecture(header: dict[str, Any]) -> str | None:
    meta = header.get("__metadata__") or {}
    meta = {str(k): str(v) for k, v in meta.items()} if isinstance(meta, dict) else {}
    found = _from_metadata(meta)
    if found:
        return found
    shape = (header.get("ip_adapter.1.to_k_ip.weight") or {}).get("shape") or []
    return _CONTEXT_DIM.get(int(shape[1])) if len(shape) == 2 else None


def ip_adapter_entry(
    folder: Path, path: Path, encoders: dict[Path, tuple[int, int]]
) -> IPAdapterEntry | None:
    try:
        header = read_header(path)
    except (OSError, ValueError) as exc:
        log.warning("skipping unreadable IP-Adapter %s: %s", path, exc)
        return None
    names = [n for n in header if n != "__metadata__"]
    if not any(n.startswith("image_proj.") for n in names) or not any(
        n.startswith("ip_adapter.") for n in names
    ):
        return None  # another kind of file (an encoder's weights, a LoRA)
    plus = "image_proj.latents" in header
    shape = (header.get("image_proj.proj_in.weight" if plus else "image_proj.proj.weight")
             or {}).get("shape") or []  # fmt: skip
    if len(shape) != 2:
        log.warning("skipping IP-Adapter %s: not a layout this server loads", path)
        return None
    encoder = _nearest(path, encoders, int(shape[1]), plus)
    if encoder is None:
        log.warning("skipping IP-Adapter %s: no %s/ with width %s found beside it",
                    path, ENCODER_DIR, shape[1])  # fmt: skip
        return None
    st = path.stat()
    files = [f for f in encoder.iterdir() if f.is_file()]
    return IPAdapterEntry(
        name=path.relative_to(folder).with_suffix("").as_posix(),
        path=path.resolve(),
        image_encoder=encoder.resolve(),
        architecture=_architecture(header),
        variant="plus" if plus else "base",
        size_bytes=st.st_size,
        mtime_ns=st.st_mtime_ns,
        encoder_bytes=sum(f.stat().st_size for f in files),
        encoder_mtime_ns=max((f.stat().st_mtime_ns for f in files), default=0),
    )


def scan_ip_adapters(models_dir: Path) -> list[IPAdapterEntry]:
    """Every IP-Adapter .safetensors under models_dir/ip-adapter/ (or ipadapter/), by name."""
    found: dict[str, IPAdapterEntry] = {}
    for name in IP_ADAPTER_FOLDERS:
        folder = models_dir / name
        if not folder.is_dir():
            continue
        encoders = _encoders(folder)
        for path in sorted(folder.rglob("*.safetensors")):
            if path.name.startswith(".") or ENCODER_DIR in path.relative_to(folder).parts:
                continue
            entry = ip_adapter_entry(folder, path, encoders)
            if entry is not None:
                found.setdefault(entry.name, entry)
    return sorted(found.values(), key=lambda e: e.name)


def pick(entries: list[IPAdapterEntry], architecture: str) -> IPAdapterEntry | None:
    """The adapter a request without a name uses on a model of `architecture`: a base
    variant first (the general-purpose one), then by name."""
    mine = [e for e in entries if e.architecture == architecture]
    return min(mine, key=lambda e: (e.variant != "base", e.name)) if mine else None
