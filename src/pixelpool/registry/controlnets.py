"""ControlNets under models/controlnet/ (or models/ControlNet/, as A1111 names it).

Only diffusers directories are served: a `config.json` whose `_class_name` is
ControlNetModel (or ControlNetUnionModel) next to its weights. A single `.safetensors`
ControlNet needs its original config to load, which diffusers fetches from the network,
so such files are skipped with a warning. The architecture is read from the config
(torch-free): SDXL ControlNets carry the `text_time` added embedding.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CONTROLNET_FOLDERS = ("controlnet", "ControlNet")
CLASS_NAMES = {"ControlNetModel": False, "ControlNetUnionModel": True}  # -> union
WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin",
                "diffusion_pytorch_model.fp16.safetensors")  # fmt: skip
_CONTEXT_DIM = {768: "sd15", 1024: "sd2", 2048: "sdxl"}


class ControlNetNotFound(LookupError):
    def __init__(self, name: str) -> None:
        super().__init__(f"ControlNet not found: {name!r}")
        self.name = name


@dataclass(frozen=True)
class ControlNetEntry:
    """A ControlNet directory. `name` is its path under the controlnet folder."""

    name: str
    path: Path
    architecture: str
    union: bool
    size_bytes: int
    mtime_ns: int
    control_types: int = 0  # a union ControlNet's number of control types (control_mode)

    @property
    def key(self) -> str:
        """Changes whenever the files do: workers cache loaded ControlNets by it."""
        return f"{self.path}:{self.size_bytes}:{self.mtime_ns}"

    def to_ref(self) -> dict[str, Any]:
        """The fields of a ControlNetRef the registry knows."""
        return {"name": self.name, "path": str(self.path), "key": self.key,
                "architecture": self.architecture, "size_bytes": self.size_bytes,
                "union": self.union}  # fmt: skip


def architecture(config: dict[str, Any]) -> str:
    """sdxl when the config has SDXL's added time/text embedding, else by context width."""
    if config.get("addition_embed_type") == "text_time":
        return "sdxl"
    return _CONTEXT_DIM.get(config.get("cross_attention_dim"), "sd15")  # type: ignore[arg-type]


def controlnet_entry(folder: Path, path: Path) -> ControlNetEntry | None:
    """The ControlNet in directory `path`, or None when it is not one (or unreadable)."""
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        files = [f for f in path.rglob("*") if f.is_file()]
        stats = [f.stat() for f in files]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        log.warning("skipping unreadable ControlNet %s: %s", path, exc)
        return None
    if not isinstance(config, dict) or config.get("_class_name") not in CLASS_NAMES:
        return None
    if not any((path / w).is_file() for w in WEIGHT_FILES):
        log.warning("skipping ControlNet %s: no weights file", path)
        return None
    union = CLASS_NAMES[config["_class_name"]]
    return ControlNetEntry(
        name=path.relative_to(folder).as_posix(),
        path=path.resolve(),
        architecture=architecture(config),
        union=union,
        size_bytes=sum(st.st_size for st in stats),
        mtime_ns=max(st.st_mtime_ns for st in stats),
        control_types=int(config.get("num_control_type", 6)) if union else 0,
    )


def _walk(folder: Path, root: Path) -> list[ControlNetEntry]:
    found: list[ControlNetEntry] = []
    for child in sorted(folder.iterdir()):
        if child.name.startswith("."):
            continue
        if child.is_dir() and (child / "config.json").is_file():
            entry = controlnet_entry(root, child)
            if entry is not None:
                found.append(entry)
        elif child.is_dir():
            found.extend(_walk(child, root))
        elif child.suffix in (".safetensors", ".pth", ".ckpt"):
            log.warning("skipping ControlNet file %s: only diffusers directories are served "
                        "(a single file needs its config from the network)", child)  # fmt: skip
    return found


def scan_controlnets(models_dir: Path) -> list[ControlNetEntry]:
    """Every ControlNet directory under the controlnet folders, sorted by name."""
    found: dict[str, ControlNetEntry] = {}
    for name in CONTROLNET_FOLDERS:
        folder = models_dir / name
        if folder.is_dir():
            for entry in _walk(folder, folder):
                found.setdefault(entry.name, entry)
    return sorted(found.values(), key=lambda e: e.name)
