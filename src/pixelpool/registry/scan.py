"""Find models under the models dir and tell what each one is, without loading it."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pixelpool.registry.checkpoints import detect_architecture, read_tensor_names
from pixelpool.registry.entry import NON_DIFFUSION_FOLDERS, ModelEntry
from pixelpool.registry.manifests import Manifest, read_manifest, root_manifests, sibling_manifest

log = logging.getLogger(__name__)

PIPELINE_CLASSES = {
    "StableDiffusionPipeline": "sd15",
    "StableDiffusionXLPipeline": "sdxl",
    "StableDiffusion3Pipeline": "sd3",
    "FluxPipeline": "flux",
}


def _dir_stats(path: Path) -> tuple[int, int]:
    size, mtime = 0, 0
    for f in path.rglob("*"):
        if f.is_file():
            st = f.stat()
            size += st.st_size
            mtime = max(mtime, st.st_mtime_ns)
    return size, mtime


def _diffusers_architecture(path: Path) -> str | None:
    try:
        index = json.loads((path / "model_index.json").read_text())
    except (OSError, ValueError):
        return None
    arch = PIPELINE_CLASSES.get(index.get("_class_name", ""))
    if arch == "sd15" and _is_sd2(path):
        return None
    return arch


def _is_sd2(path: Path) -> bool:
    try:
        cfg = json.loads((path / "text_encoder" / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return cfg.get("hidden_size") == 1024


def _scheduler_traits(path: Path) -> dict[str, Any]:
    """Prediction type and zero-SNR training, from a diffusers dir's scheduler config."""
    try:
        cfg = json.loads((path / "scheduler" / "scheduler_config.json").read_text())
    except (OSError, ValueError):
        return {}
    if "FlowMatch" in str(cfg.get("_class_name", "")):
        return {"prediction_type": "flow"}
    return {
        "prediction_type": str(cfg.get("prediction_type") or "epsilon"),
        "zero_snr": bool(cfg.get("rescale_betas_zero_snr", False)),
    }


def _walk(folder: Path) -> Iterator[Path]:
    """Diffusers dirs (stop descending into them) and .safetensors files."""
    for child in sorted(folder.iterdir()):
        if child.name.startswith(".") or child.name.endswith(".config"):
            continue
        if child.is_dir():
            if (child / "model_index.json").is_file():
                yield child
            else:
                yield from _walk(child)
        elif child.suffix == ".safetensors":
            yield child


def _entry(folder: Path, path: Path, manifest: Manifest | None = None) -> ModelEntry | None:
    rel = path.relative_to(folder)
    traits: dict[str, Any] = {}
    if path.is_dir():
        arch = _diffusers_architecture(path)
        traits = _scheduler_traits(path)
        size, mtime = _dir_stats(path)
        fmt = "diffusers"
        name = rel.as_posix()
    else:
        try:
            arch = detect_architecture(read_tensor_names(path))
        except (OSError, ValueError) as exc:
            log.warning("skipping unreadable checkpoint %s: %s", path, exc)
            return None
        st = path.stat()
        size, mtime = st.st_size, st.st_mtime_ns
        fmt = "single_file"
        name = rel.with_suffix("").as_posix()
    if arch not in PIPELINE_CLASSES.values():
        log.info("skipping %s: unsupported architecture %s", path, arch)
        return None
    sibling = sibling_manifest(path)
    if sibling.is_file():
        manifest = read_manifest(sibling) or manifest
    if manifest is not None and manifest.architecture not in (None, arch):
        log.warning("%s: manifest says %s, the model is %s", path, manifest.architecture, arch)
    return ModelEntry(
        name=name,
        folder=folder.name,
        family="diffusion",
        architecture=arch,
        path=path.resolve(),
        format=fmt,
        size_bytes=size,
        mtime_ns=mtime,
        manifest=manifest,
        **traits,
    )


def scan_models(models_dir: Path) -> list[ModelEntry]:
    """Every supported diffusion model under models_dir/<family folder>/..."""
    if not models_dir.is_dir():
        return []
    entries: list[ModelEntry] = []
    named = root_manifests(models_dir)
    for folder in sorted(p for p in models_dir.iterdir() if p.is_dir()):
        if folder.name in NON_DIFFUSION_FOLDERS or folder.name.startswith("."):
            continue
        for path in _walk(folder):
            rel = path.relative_to(folder).as_posix().removesuffix(".safetensors")
            manifest = named.get(rel) or named.get(f"{folder.name}/{rel}")
            entry = _entry(folder, path, manifest)
            if entry is not None:
                entries.append(entry)
    return entries
