"""Which files of a repo a model needs, and where under models/ it goes: pure functions
over file names and small config files, so the choice is tested without a network.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from pixelpool.families.diffusion.detect import PIPELINE_CLASSES
from pixelpool.families.vision import read_model_type

# Small files a diffusers component or a transformers folder reads beside its weights:
# configs, tokenizers (vocab, merges, sentencepiece), processor settings.
CONFIG_SUFFIXES = (".json", ".txt", ".model", ".tiktoken")
# Weights pixelpool never pulls: pickles run code when loaded; the rest it cannot load.
OTHER_WEIGHTS = (".bin", ".ckpt", ".pt", ".pth", ".msgpack", ".h5", ".onnx", ".pb", ".gguf")
PREFERRED_VARIANT = "fp16"
# `diffusion_pytorch_model.fp16.safetensors`, `model.fp16-00001-of-00002.safetensors`
_WEIGHTS = re.compile(r"^[^.]+?(?:\.(?P<variant>\w+))?(?:-\d+-of-\d+)?\.safetensors$")
# `diffusion_pytorch_model.safetensors.index.fp16.json`
_INDEX = re.compile(r"^[^.]+\.safetensors\.index(?:\.(?P<variant>\w+))?\.json$")
# Single diffusers models (not pipelines) by their config's `_class_name`.
MODEL_FOLDERS = {
    "ControlNetModel": "controlnet",
    "ControlNetUnionModel": "controlnet",
    "AutoencoderTiny": "vae_approx",
}


class PullError(Exception):
    """What went wrong, for the user; `code` is the command's exit status."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Plan:
    """A folder model: the repo files to fetch, and the folder under models/ it goes to."""

    folder: str
    files: tuple[str, ...]
    kind: str  # "diffusers", "model" (one diffusers model), "transformers", "tagger"


def _variant(name: str) -> tuple[bool, str | None]:
    """(is it safetensors weights or their shard index, its variant)."""
    for pattern in (_WEIGHTS, _INDEX):
        if match := pattern.match(name):
            return True, match["variant"]
    return False, None


def folder_files(files: Iterable[str], folder: str) -> list[str]:
    """The configs and safetensors weights directly in `folder` ("" is the repo root);
    the fp16 variant of the weights when the folder has it, else the plain ones."""
    configs, weights, others = [], [], []
    for name in files:
        path = PurePosixPath(name)
        if str(path.parent) != (folder or "."):
            continue
        is_weights, variant = _variant(path.name)
        if is_weights:
            weights.append((name, variant))
        elif path.suffix in CONFIG_SUFFIXES:
            configs.append(name)
        elif path.suffix in OTHER_WEIGHTS:
            others.append(name)
    variants = {v for _, v in weights}
    wanted = PREFERRED_VARIANT if PREFERRED_VARIANT in variants else None
    chosen = [n for n, v in weights if v == wanted]
    if others and not chosen:
        where = folder or "the repo root"
        raise PullError(
            f"{where} holds weights only as {', '.join(sorted(set(others)))}: pixelpool pulls "
            "safetensors only (pickled weights run code when loaded)"
        )
    return sorted(configs + chosen)


def diffusers_plan(files: list[str], index: dict[str, Any], to: str | None) -> Plan:
    """A diffusers pipeline: model_index.json and each component it names."""
    cls = str(index.get("_class_name", ""))
    folder = to or PIPELINE_CLASSES.get(cls)
    if folder is None:
        served = ", ".join(PIPELINE_CLASSES)
        raise PullError(f"a {cls or 'pipeline'} is not served (served: {served})")
    components = sorted(
        k
        for k, v in index.items()
        if not k.startswith("_") and isinstance(v, list) and len(v) == 2 and v[0] is not None
    )
    wanted = ["model_index.json"]
    for component in components:
        wanted += folder_files(files, component)
    return Plan(folder, tuple(wanted), "diffusers")


def config_plan(files: list[str], config: dict[str, Any], to: str | None) -> Plan:
    """A repo with a config.json at its root: one diffusers model, or a transformers model."""
    cls = str(config.get("_class_name", ""))
    if cls in MODEL_FOLDERS:
        return Plan(to or MODEL_FOLDERS[cls], tuple(folder_files(files, "")), "model")
    if read_model_type(config) is not None or to is not None:
        return Plan(to or "vision", tuple(folder_files(files, "")), "transformers")
    kind = cls or str(config.get("model_type") or "unknown")
    raise PullError(f"a {kind} model is not served; pass --to FOLDER to place it anyway")


def tagger_plan(files: list[str], to: str | None) -> Plan | None:
    """A WD-style tagger: model.onnx with its selected_tags.csv."""
    if {"model.onnx", "selected_tags.csv"} <= set(files):
        return Plan(to or "tagger", ("model.onnx", "selected_tags.csv"), "tagger")
    return None


def single_file(files: list[str], wanted: str | None) -> str:
    """The one .safetensors file to pull from a repo without a model folder layout."""
    if wanted is not None:
        if wanted not in files:
            raise PullError(f"the repo has no file {wanted!r}")
        if not wanted.endswith(".safetensors"):
            raise PullError("pixelpool pulls .safetensors files only", code=2)
        return wanted
    candidates = sorted(f for f in files if f.endswith(".safetensors"))
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise PullError("the repo has no model_index.json, config.json or .safetensors file")
    shown = ", ".join(candidates[:10]) + (", ..." if len(candidates) > 10 else "")
    raise PullError(f"the repo has several .safetensors files; pick one with --file: {shown}")


def plain_name(name: str) -> str:
    """The file name diffusers loads without a `variant`: `x.fp16.safetensors` is
    `x.safetensors`, `x.safetensors.index.fp16.json` is `x.safetensors.index.json`
    (shards keep their names: the index lists them)."""
    suffix = f".{PREFERRED_VARIANT}.safetensors"
    if name.endswith(suffix):
        return name[: -len(suffix)] + ".safetensors"
    index_suffix = f".safetensors.index.{PREFERRED_VARIANT}.json"
    if name.endswith(index_suffix):
        return name[: -len(index_suffix)] + ".safetensors.index.json"
    return name
