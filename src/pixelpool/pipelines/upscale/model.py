"""Loading an upscaler: any architecture spandrel detects, from weights only.

spandrel's own `load_from_file` would open a `.pt` with `torch.jit.load` first
(TorchScript runs code), so the state dict is read here, weights only, and handed
to spandrel's registry, which detects the architecture and its hyper-parameters.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from spandrel import ImageModelDescriptor, ModelLoader, ModelTiling, canonicalize_state_dict

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".ckpt")
log = logging.getLogger(__name__)
CUDA_TILE_BUDGET = 1 << 30  # activation bytes per forward on a GPU
CPU_TILE_BUDGET = 512 << 20


@dataclass
class UpscaleModel:
    """A loaded upscaler: spandrel's descriptor, the dtype it runs in, a tile budget."""

    descriptor: ImageModelDescriptor[Any]
    dtype: torch.dtype
    tile_budget_bytes: int
    align: int = field(default=0)

    def __post_init__(self) -> None:
        if self.align <= 0:
            self.align = window_align(self.descriptor)

    @property
    def scale(self) -> int:
        return int(self.descriptor.scale)

    @property
    def tiling(self) -> bool:
        """False for models that tile internally (spandrel's ModelTiling.INTERNAL)."""
        return self.descriptor.tiling != ModelTiling.INTERNAL

    def info(self) -> dict[str, Any]:
        return describe(self.descriptor)


def _window_sizes(module: torch.nn.Module) -> list[int]:
    """Attention window sides the network declares (`window_size`, `split_size`)."""
    sizes: list[int] = []
    for sub in module.modules():
        for attr in ("window_size", "split_size"):
            value = getattr(sub, attr, None)
            if isinstance(value, int):
                sizes.append(value)
            elif isinstance(value, (list, tuple)) and all(isinstance(v, int) for v in value):
                sizes.extend(value)
    return [s for s in sizes if 0 < s <= 256]


def window_align(descriptor: ImageModelDescriptor[Any]) -> int:
    """The grid tile starts must sit on: the lcm of the attention windows and of spandrel's
    `multiple_of`. Window-attention models pad the input to a window multiple and
    partition it from the top-left corner, so a tile starting off that grid would see
    other windows (and padding) than the whole image does."""
    sides = [descriptor.size_requirements.multiple_of, *_window_sizes(descriptor.model)]
    return math.lcm(*[max(int(s), 1) for s in sides])


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The file's tensors, never unpickling code (`torch.load(weights_only=True)`)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        state = load_file(str(path))
    elif suffix in WEIGHT_SUFFIXES:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    else:
        raise ValueError(f"not an upscaler weights file: {path.name} (want {WEIGHT_SUFFIXES})")
    return canonicalize_state_dict(state)


def load_descriptor(path: str | Path) -> ImageModelDescriptor[Any]:
    """spandrel's descriptor of the model in `path` (on the CPU, float32, eval mode)."""
    descriptor = ModelLoader("cpu").load_from_state_dict(read_state_dict(path))
    if not isinstance(descriptor, ImageModelDescriptor):
        raise ValueError(f"{Path(path).name}: a {descriptor.purpose} model, not an upscaler")
    if descriptor.input_channels not in (1, 3) or descriptor.output_channels not in (1, 3):
        raise ValueError(
            f"{Path(path).name}: {descriptor.input_channels}->{descriptor.output_channels} "
            "channels; only grey (1) and RGB (3) models are supported"
        )
    return descriptor.eval()


def describe(descriptor: ImageModelDescriptor[Any]) -> dict[str, Any]:
    """What the registry can show: architecture, native scale, which half types work."""
    req = descriptor.size_requirements
    sizes = {"minimum": req.minimum, "multiple_of": req.multiple_of, "square": req.square}
    return {
        "architecture": descriptor.architecture.id,
        "purpose": descriptor.purpose,
        "scale": int(descriptor.scale),
        "input_channels": descriptor.input_channels,
        "output_channels": descriptor.output_channels,
        "supports_half": bool(descriptor.supports_half),
        "supports_bfloat16": bool(descriptor.supports_bfloat16),
        "tiling": descriptor.tiling.name.lower(),
        "tile_align": window_align(descriptor),
        "size_requirements": sizes,
    }


def pick_dtype(descriptor: ImageModelDescriptor[Any], device: str, dtype: str) -> torch.dtype:
    """float16/bfloat16 only on CUDA and only where spandrel says the model supports it;
    "auto" prefers float16, then bfloat16, then float32."""
    if not device.startswith("cuda"):
        return torch.float32
    half = descriptor.supports_half
    bf16 = descriptor.supports_bfloat16 and torch.cuda.is_bf16_supported()
    if dtype in ("auto", "float16") and half:
        return torch.float16
    if dtype in ("auto", "bfloat16") and bf16:
        return torch.bfloat16
    return torch.float32


def runs_in(descriptor: ImageModelDescriptor[Any], dtype: torch.dtype) -> bool:
    """One small forward in `dtype`: spandrel's support flags are not always right (SwinIR
    says bfloat16 but adds a float32 attention mask inside: seen on an H200)."""
    side = max(16, window_align(descriptor), descriptor.size_requirements.minimum)
    probe = torch.rand(1, descriptor.input_channels, side, side)
    try:
        with torch.inference_mode():
            descriptor(probe.to(descriptor.device, dtype))
    except RuntimeError:
        return False
    return True


def load_upscaler(
    path: str | Path, device: str, dtype: str = "auto", tile_budget_bytes: int | None = None
) -> UpscaleModel:
    descriptor = load_descriptor(path)
    torch_dtype = pick_dtype(descriptor, device, dtype)
    descriptor.to(device).to(torch_dtype)
    if torch_dtype != torch.float32 and not runs_in(descriptor, torch_dtype):
        log.warning("%s does not run in %s; using float32", Path(path).name, torch_dtype)
        torch_dtype = torch.float32
        descriptor.to(torch_dtype)
    if tile_budget_bytes is None:
        tile_budget_bytes = CUDA_TILE_BUDGET if device.startswith("cuda") else CPU_TILE_BUDGET
    return UpscaleModel(descriptor, torch_dtype, tile_budget_bytes)


def model_bytes(model: UpscaleModel) -> int:
    """Parameters and buffers: the bytes the model cache accounts for."""
    module = model.descriptor.model
    tensors = [*module.parameters(), *module.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)
