"""Load single-file (original LDM / A1111 format) SD 1.x and SDXL checkpoints offline.

diffusers' ``from_single_file`` needs a diffusers-format config directory to know each
component's shape. Without one it goes to the Hugging Face hub, which pixelpool never
does, so a config directory is always passed: the caller's, the ``<stem>.config/`` sidecar
beside the file, or one built from the real SD 1.5 / SDXL base configs bundled in
``configs/``. The bundled CLIP tokenizers are generated from OpenAI's BPE merges file
(shipped here, from the MIT-licensed open_clip_torch wheel) into a cache directory, so no
vocabulary is ever downloaded either.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from accelerate import init_empty_weights
from diffusers import DiffusionPipeline, StableDiffusionPipeline, StableDiffusionXLPipeline
from diffusers.loaders.single_file_utils import convert_open_clip_checkpoint
from diffusers.utils import logging as diffusers_logging
from safetensors import safe_open
from transformers import CLIPTextConfig, CLIPTextModelWithProjection

from pixelpool.pipelines.diffusion.clip_bytes import bytes_to_unicode

CONFIGS_DIR = Path(__file__).parent / "configs"
BPE_FILE = CONFIGS_DIR / "clip_bpe_simple_vocab_16e6.txt.gz"
CLIP_VOCAB_SIZE = 49408
SPECIAL_TOKENS = ("<|startoftext|>", "<|endoftext|>")
SDXL_OPENCLIP_PREFIX = "conditioner.embedders.1.model."

PIPELINE_CLASSES: dict[str, type[DiffusionPipeline]] = {
    "sd15": StableDiffusionPipeline,
    "sdxl": StableDiffusionXLPipeline,
}


def clip_bpe_vocab(bpe_path: Path = BPE_FILE) -> tuple[dict[str, int], list[str]]:
    """The CLIP vocabulary and merges, built exactly as OpenAI's ``SimpleTokenizer`` does."""
    with gzip.open(bpe_path, "rt", encoding="utf-8") as fh:
        lines = fh.read().split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]
    base = list(bytes_to_unicode().values())
    tokens = base + [b + "</w>" for b in base]
    tokens += ["".join(merge.split()) for merge in merges]
    tokens += list(SPECIAL_TOKENS)
    vocab = {token: i for i, token in enumerate(tokens)}
    if len(vocab) != len(tokens) or len(vocab) != CLIP_VOCAB_SIZE:
        raise ValueError(f"{bpe_path}: expected {CLIP_VOCAB_SIZE} CLIP tokens, got {len(vocab)}")
    return vocab, merges


def write_clip_bpe_files(directory: Path, bpe_path: Path = BPE_FILE) -> int:
    """Write the real CLIP ``vocab.json`` and ``merges.txt`` into ``directory``; return size."""
    vocab, merges = clip_bpe_vocab(bpe_path)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    merges_text = "\n".join(["#version: 0.2", *merges]) + "\n"
    (directory / "merges.txt").write_text(merges_text, encoding="utf-8")
    return len(vocab)


def default_cache_dir() -> Path:
    """Where generated config directories live: ``$XDG_CACHE_HOME/pixelpool/configs``."""
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "pixelpool" / "configs"


def _bundle_digest(architecture: str) -> str:
    """A short hash of the bundled files, so a cache built by another version is not reused."""
    digest = hashlib.sha256()
    source = CONFIGS_DIR / architecture
    for file in [*sorted(p for p in source.rglob("*") if p.is_file()), BPE_FILE]:
        digest.update(file.relative_to(CONFIGS_DIR).as_posix().encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()[:12]


def bundled_config_dir(architecture: str, cache_dir: Path | None = None) -> Path:
    """A complete diffusers config directory (with tokenizers) for a bundled architecture.

    Built once into the cache and moved into place atomically, so worker processes that
    start together neither race nor see a half-written directory.
    """
    source = CONFIGS_DIR / architecture
    if not (source / "model_index.json").is_file():
        raise ValueError(f"no bundled config for architecture {architecture!r}")
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = root / f"{architecture}-{_bundle_digest(architecture)}"
    if (target / "model_index.json").is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{architecture}-", dir=root))
    try:
        shutil.copytree(source, staging, dirs_exist_ok=True)
        for tokenizer_dir in staging.glob("tokenizer*"):
            write_clip_bpe_files(tokenizer_dir)
        try:
            staging.rename(target)
        except OSError:
            if not (target / "model_index.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def resolve_config_dir(
    path: Path,
    architecture: str,
    config_dir: Path | None = None,
    cache_dir: Path | None = None,
) -> Path:
    """The config directory for a checkpoint: explicit, else ``<stem>.config/``, else bundled."""
    if config_dir is not None:
        return Path(config_dir)
    sidecar = Path(path).with_suffix(".config")
    if (sidecar / "model_index.json").is_file():
        return sidecar
    return bundled_config_dir(architecture, cache_dir)


def _load_open_clip_encoder(
    path: Path, config_dir: Path, torch_dtype: torch.dtype
) -> CLIPTextModelWithProjection:
    """SDXL's second text encoder, converted from its OpenCLIP keys.

    diffusers picks the key set for a CLIP component by comparing hidden widths, which
    is ambiguous when both encoders have the same width (as in tiny test models) and
    then silently loads the first encoder's weights; naming the prefix here avoids that.
    """
    config = CLIPTextConfig.from_pretrained(
        str(config_dir), subfolder="text_encoder_2", local_files_only=True
    )
    with init_empty_weights():
        model = CLIPTextModelWithProjection(config)
    with safe_open(str(path), framework="pt") as fh:
        names = [k for k in fh.keys() if k.startswith(SDXL_OPENCLIP_PREFIX)]  # noqa: SIM118
        checkpoint = {k: fh.get_tensor(k) for k in names}
    if not checkpoint:
        raise ValueError(f"{path}: no SDXL OpenCLIP text encoder ({SDXL_OPENCLIP_PREFIX}*)")
    state = convert_open_clip_checkpoint(model, checkpoint, prefix=SDXL_OPENCLIP_PREFIX)
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        raise ValueError(f"{path}: weights missing from checkpoint: text_encoder_2") from exc
    return model.to(torch_dtype).eval()


def _check_loaded(pipe: DiffusionPipeline, path: Path) -> None:
    """Fail loudly when a checkpoint lacked weights: diffusers leaves them on ``meta``."""
    for name, component in pipe.components.items():
        if isinstance(component, torch.nn.Module):
            missing = [n for n, p in component.named_parameters() if p.device.type == "meta"]
            if missing:
                raise ValueError(f"{path}: weights missing from checkpoint: {name} {missing[:5]}")


def load_single_file(
    path: Path,
    architecture: str,
    torch_dtype: torch.dtype,
    config_dir: Path | None = None,
    cache_dir: Path | None = None,
) -> DiffusionPipeline:
    """Load an SD 1.x ("sd15") or SDXL ("sdxl") single-file checkpoint from local files only."""
    if architecture not in PIPELINE_CLASSES:
        raise ValueError(f"unsupported single-file architecture {architecture!r}")
    path = Path(path)
    config = resolve_config_dir(path, architecture, config_dir, cache_dir)
    extra: dict[str, object]
    if architecture == "sd15":
        extra = {
            "safety_checker": None,
            "feature_extractor": None,
            "requires_safety_checker": False,
        }
    else:
        extra = {"text_encoder_2": _load_open_clip_encoder(path, config, torch_dtype)}
    bars_were_on = diffusers_logging.is_progress_bar_enabled()
    diffusers_logging.disable_progress_bar()
    try:
        pipe = PIPELINE_CLASSES[architecture].from_single_file(
            str(path),
            config=str(config),
            local_files_only=True,
            dtype=torch_dtype,
            **extra,
        )
    except NotImplementedError as exc:  # diffusers casting a model that kept meta weights
        if "meta tensor" not in str(exc):
            raise
        raise ValueError(f"{path}: weights missing from checkpoint") from exc
    finally:
        if bars_were_on:
            diffusers_logging.enable_progress_bar()
    _check_loaded(pipe, path)
    return pipe
