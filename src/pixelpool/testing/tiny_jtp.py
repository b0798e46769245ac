"""A tiny random JTP-style tagger: timm's SigLIP ViT (2 heads of 72, one block, 28x28
input, 14x14 patches) with the gated head, saved as `.safetensors` beside `tags.json`."""

from __future__ import annotations

import json
from pathlib import Path

import timm
import torch
from safetensors.torch import save_file

from pixelpool.pipelines.tag.jtp import BASE_MODEL, GatedHead

TINY_JTP_TAGS = ["canine", "feline", "solo", "blue_eyes", "outside", "smiling"]


def build_tiny_jtp(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = timm.create_model(
        BASE_MODEL, pretrained=False, num_classes=len(TINY_JTP_TAGS), img_size=28,
        patch_size=14, embed_dim=144, depth=1, num_heads=2, mlp_ratio=2.0,
    )  # fmt: skip
    model.head = GatedHead(144, len(TINY_JTP_TAGS))
    torch.nn.init.normal_(model.head.linear.weight, std=0.5)
    return model.eval()


def write_tiny_jtp(target_dir: Path, seed: int = 0) -> Path:
    """`target_dir/JTP_tiny.safetensors` and `target_dir/tags.json` ({tag: index})."""
    target_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in build_tiny_jtp(seed).state_dict().items()}
    path = target_dir / "JTP_tiny.safetensors"
    save_file(state, str(path))
    tags = {tag: i for i, tag in enumerate(TINY_JTP_TAGS)}
    (target_dir / "tags.json").write_text(json.dumps(tags))
    return path
