"""Where a pulled model goes under models/, and getting it there whole.

Downloads land in `models/.pull/<source>/` (a dot folder: the registry never reads it,
and it is on the models dir's file system, so the final move is one rename). A model
appears in its family folder complete or not at all.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import shutil
from pathlib import Path

from pixelpool import families
from pixelpool.families.files import read_header, read_keys
from pixelpool.families.upscale import guess_architecture
from pixelpool.pull.plan import PullError, plain_name
from pixelpool.registry.loras import LORA_FOLDER
from pixelpool.registry.preview_decoders import FILE_PREFIXES

STAGING = ".pull"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def staging_dir(models_dir: Path, source: str) -> Path:
    """A stable folder per source, so a second run resumes the first's partial files."""
    readable = _UNSAFE.sub("-", source)[-60:].strip("-.") or "model"
    digest = hashlib.sha256(source.encode()).hexdigest()[:12]
    return models_dir / STAGING / f"{readable}-{digest}"


def clean_staging(staging: Path) -> None:
    shutil.rmtree(staging, ignore_errors=True)
    with contextlib.suppress(OSError):  # only when no other pull is under way
        staging.parent.rmdir()


def model_name(name: str) -> str:
    """A model's name as given by --name: a relative path, no `..`, no hidden parts."""
    parts = Path(name).parts
    if (
        not parts
        or Path(name).is_absolute()
        or any(p in ("..", ".") or p.startswith(".") for p in parts)
    ):
        raise PullError(f"--name {name!r}: give a relative path without '..' or hidden parts", 2)
    return name


def classify_file(path: Path) -> str:
    """The folder a single .safetensors file belongs in, read from its header as the
    registry reads it: a checkpoint of a served architecture, a LoRA, a TAESD decoder,
    or an upscaler."""
    try:
        header = read_header(path)
    except (OSError, ValueError) as exc:
        raise PullError(f"not a safetensors file: {exc}") from exc
    detected = families.get("diffusion").detect(path.parent, path)
    if detected is not None:
        return detected.architecture
    names = [n for n in header if n != "__metadata__"]
    if any("lora" in n.lower() for n in names):
        return LORA_FOLDER
    if any(path.name.lower().startswith(prefix) for prefix in FILE_PREFIXES):
        return "vae_approx"
    if guess_architecture(read_keys(path)) != "unknown":
        return "upscale"
    raise PullError(f"cannot tell what {path.name} is; pass --to FOLDER to place it")


def _free(target: Path) -> Path:
    if target.exists():
        raise PullError(f"{target} already exists; remove it first or pass --name")
    target.parent.mkdir(parents=True, exist_ok=True)
    return target


def place_file(path: Path, models_dir: Path, folder: str, name: str) -> Path:
    target = _free(models_dir / folder / f"{name}.safetensors")
    path.replace(target)
    return target


def place_folder(
    staging: Path, files: tuple[str, ...], models_dir: Path, folder: str, name: str
) -> Path:
    """Move the planned files (fp16 variants under their plain names, which diffusers
    and transformers load without being told the variant) into models/<folder>/<name>/."""
    target = _free(models_dir / folder / name)
    ready = staging.with_name(staging.name + ".ready")
    shutil.rmtree(ready, ignore_errors=True)
    for rel in files:
        dest = ready / Path(rel).parent / plain_name(Path(rel).name)
        dest.parent.mkdir(parents=True, exist_ok=True)
        (staging / rel).replace(dest)
    ready.replace(target)
    return target
