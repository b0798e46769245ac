"""LoRAs under models/loras/: their base architecture and trigger words, read from the
file's safetensors header (metadata and tensor names/shapes) without loading a tensor.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pixelpool.families.diffusion.checkpoints import read_header

log = logging.getLogger(__name__)

LORA_FOLDER = "loras"
MAX_TRIGGER_WORDS = 8

# kohya / modelspec metadata values -> our architecture names
_MODELSPEC = (
    ("stable-diffusion-xl", "sdxl"),
    ("stable-diffusion-v1", "sd15"),
    ("stable-diffusion-v2", "sd2"),
    ("stable-diffusion-3", "sd3"),
    ("flux", "flux"),
)
_SS_BASE = {"sd_v1": "sd15", "sd_v2": "sd2", "sdxl_base_v1-0": "sdxl", "sd3": "sd3",
            "flux1": "flux"}  # fmt: skip
# cross-attention width (input features of attn2.to_k) -> architecture
_CONTEXT_DIM = {768: "sd15", 1024: "sd2", 2048: "sdxl"}


class LoraNotFound(LookupError):
    def __init__(self, name: str) -> None:
        super().__init__(f"LoRA not found: {name!r}")
        self.name = name


@dataclass(frozen=True)
class LoraEntry:
    """A LoRA file. `name` is its path under loras/ without `.safetensors`."""

    name: str
    path: Path
    architecture: str | None  # None: could not be told from the file
    size_bytes: int
    mtime_ns: int
    trigger_words: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        """Changes whenever the file does: workers cache adapters by it."""
        return f"{self.path}:{self.size_bytes}:{self.mtime_ns}"


def _from_metadata(meta: dict[str, str]) -> str | None:
    spec = meta.get("modelspec.architecture", "").lower()
    for prefix, arch in _MODELSPEC:
        if spec.startswith(prefix):
            return arch
    return _SS_BASE.get(meta.get("ss_base_model_version", "").lower())


def _from_tensors(header: dict[str, Any]) -> str | None:
    names = [n for n in header if n != "__metadata__"]
    if any("single_transformer_blocks" in n or "lora_unet_single_blocks" in n for n in names):
        return "flux"
    if any(n.startswith(("transformer.", "lora_transformer_")) for n in names):
        return "sd3"
    if any(n.startswith(("lora_te2_", "text_encoder_2.", "te2.")) for n in names):
        return "sdxl"
    for name in names:  # the cross-attention key projection's input width
        if ("attn2.to_k" in name or "attn2_to_k" in name) and (
            "lora_down" in name or "lora_A" in name or "lora.down" in name
        ):
            shape = header[name].get("shape", [])
            if len(shape) == 2:
                return _CONTEXT_DIM.get(int(shape[1]))
    return None


def trigger_words(meta: dict[str, str]) -> tuple[str, ...]:
    """Trigger words: the modelspec trigger phrase, else the most frequent training tags."""
    phrase = meta.get("modelspec.trigger_phrase", "").strip()
    if phrase:
        return tuple(w.strip() for w in phrase.split(",") if w.strip())[:MAX_TRIGGER_WORDS]
    try:
        datasets = json.loads(meta.get("ss_tag_frequency", "") or "{}")
    except json.JSONDecodeError:
        return ()
    counts: dict[str, int] = {}
    for tags in datasets.values() if isinstance(datasets, dict) else ():
        for tag, n in tags.items() if isinstance(tags, dict) else ():
            counts[tag.strip()] = counts.get(tag.strip(), 0) + int(n)
    ranked = sorted(counts, key=lambda t: (-counts[t], t))
    return tuple(t for t in ranked if t)[:MAX_TRIGGER_WORDS]


def lora_entry(folder: Path, path: Path) -> LoraEntry | None:
    try:
        header = read_header(path)
    except (OSError, ValueError) as exc:
        log.warning("skipping unreadable LoRA %s: %s", path, exc)
        return None
    meta = header.get("__metadata__") or {}
    meta = {str(k): str(v) for k, v in meta.items()} if isinstance(meta, dict) else {}
    st = path.stat()
    return LoraEntry(
        name=path.relative_to(folder).with_suffix("").as_posix(),
        path=path.resolve(),
        architecture=_from_metadata(meta) or _from_tensors(header),
        size_bytes=st.st_size,
        mtime_ns=st.st_mtime_ns,
        trigger_words=trigger_words(meta),
    )


def scan_loras(models_dir: Path) -> list[LoraEntry]:
    """Every .safetensors file under models_dir/loras/, sorted by name."""
    folder = models_dir / LORA_FOLDER
    if not folder.is_dir():
        return []
    paths = sorted(p for p in folder.rglob("*.safetensors") if not p.name.startswith("."))
    return [e for p in paths if (e := lora_entry(folder, p)) is not None]
