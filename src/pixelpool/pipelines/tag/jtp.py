"""JTP-style taggers (JTP PILOT2): a timm SigLIP ViT with a gated head, plus `tags.json`.

The checkpoint is a `.safetensors` state dict of timm's `vit_so400m_patch14_siglip_384`
whose head is a GatedHead (a linear layer to 2 x tags: sigmoid(scores) x
sigmoid(gates)). Width, depth, patch and image size are read from the tensors, so
any size of that family loads (the test models are tiny); the head width is 72, as
in every SigLIP ViT. Preprocessing is the reference's: fit inside the square with
Lanczos (no crop), alpha composited on 50 % grey, normalised to [-1, 1], centred
on a square padded with 0 (grey). Tags are all "general": JTP has no categories.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import timm
import torch
from PIL import Image
from safetensors.torch import load_file

from pixelpool.pipelines.tag.labels import GENERAL, Labels

BASE_MODEL = "vit_so400m_patch14_siglip_384"
HEAD_DIM = 72
TAGS_FILE = "tags.json"


class GatedHead(torch.nn.Module):
    """The JTP PILOT2 head: sigmoid(first half) x sigmoid(second half) of one linear layer."""

    def __init__(self, num_features: int, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.linear = torch.nn.Linear(num_features, num_classes * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.linear(x)
        return torch.sigmoid(x[:, : self.num_classes]) * torch.sigmoid(x[:, self.num_classes :])


@dataclass
class JtpModel:
    path: Path
    model: torch.nn.Module
    labels: Labels
    side: int
    dtype: torch.dtype

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def is_jtp(state: dict[str, torch.Tensor]) -> bool:
    return "head.linear.weight" in state and "attn_pool.latent" in state


def build(state: dict[str, torch.Tensor]) -> tuple[torch.nn.Module, int]:
    """The timm model the tensors belong to, and its input side."""
    embed = state["pos_embed"].shape[-1]
    patch = state["patch_embed.proj.weight"].shape[-1]
    side = math.isqrt(state["pos_embed"].shape[1]) * patch
    depth = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k)))
    hidden = state["blocks.0.mlp.fc1.weight"].shape[0]
    classes = state["head.linear.weight"].shape[0] // 2
    model = timm.create_model(
        BASE_MODEL, pretrained=False, num_classes=classes, img_size=side, patch_size=patch,
        embed_dim=embed, depth=depth, num_heads=max(1, embed // HEAD_DIM),
        mlp_ratio=(hidden + 0.5) / embed,  # timm takes int(dim * ratio)
    )  # fmt: skip
    model.head = GatedHead(embed, classes)
    return model, side


def load_jtp(path: str | Path, device: str, dtype: str = "auto") -> JtpModel:
    path = Path(path)
    state = load_file(str(path))
    if not is_jtp(state):
        raise ValueError(f"{path.name}: not a JTP tagger (no gated head / attention pool)")
    model, side = build(state)
    model.load_state_dict(state)
    tags = list(json.loads((path.parent / TAGS_FILE).read_text(encoding="utf-8")))
    if len(tags) != model.head.num_classes:
        raise ValueError(f"{path.name}: {model.head.num_classes} outputs but {len(tags)} tags")
    half = device.startswith("cuda") and dtype in ("auto", "float16")
    torch_dtype = torch.float16 if half else torch.float32
    model.to(device=device, dtype=torch_dtype).eval()
    labels = Labels(tags, np.full(len(tags), GENERAL))
    return JtpModel(path, model, labels, side, torch_dtype)


def prepare(image: Image.Image, side: int) -> np.ndarray:
    """(3, side, side) float32 in [-1, 1], as the JTP reference transform makes it."""
    img = image.convert("RGBA")
    width, height = img.size
    scale = min(side / height, side / width)
    if scale != 1.0:
        size = (min(round(width * scale), side), min(round(height * scale), side))
        img = img.resize(size, Image.Resampling.LANCZOS)
    pixels = np.asarray(img, np.float32) / 255
    alpha = pixels[:, :, 3:]
    rgb = (pixels[:, :, :3] * alpha + (1 - alpha) * 0.5 - 0.5) / 0.5
    out = np.zeros((side, side, 3), np.float32)
    top, left = (side - img.height) // 2, (side - img.width) // 2
    out[top : top + img.height, left : left + img.width] = rgb
    return np.ascontiguousarray(out.transpose(2, 0, 1))


def jtp_scores(model: JtpModel, images: list[Image.Image]) -> np.ndarray:
    """(N, tags) probabilities, one forward for all N."""
    batch = torch.from_numpy(np.stack([prepare(img, model.side) for img in images]))
    with torch.inference_mode():
        out = model.model(batch.to(model.device, model.dtype))
    return out.float().cpu().numpy()


def model_bytes(model: JtpModel) -> int:
    return sum(p.numel() * p.element_size() for p in model.model.parameters())
