"""The GPU path of the diffusion family: dtype per architecture, channels-last,
`torch.compile` of the denoiser with warm-up, and a pinned RAM tier.

Every switch is a device setting (`[devices.<id>]`, passed to the worker as an
option). The defaults keep the CPU path exactly as it was: float32, the default
memory format, no compile, plain moves.

Attention needs nothing here: with torch 2 diffusers gives every attention layer
`AttnProcessor2_0`, i.e. `scaled_dot_product_attention` (flash / memory-efficient
kernels on CUDA), by default.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from pixelpool.pipelines import option
from pixelpool.pipelines.base import WorkItem

log = logging.getLogger("pixelpool.worker")

# bfloat16 has float32's range: the flow models (SD3, FLUX) are trained and shipped in
# it, and their activations overflow float16. SD 1.x / SDXL run in float16 (their VAE
# is upcast where it overflows: see `vae_upcast`).
BF16_ARCHITECTURES = frozenset({"sd3", "flux"})
# torch.compile modes a device may name; "reduce-overhead" adds CUDA graphs.
COMPILE_MODES = ("default", "max-autotune", "reduce-overhead")
DEFAULT_COMPILE_CACHE = 8  # compiled shapes kept per model (torch's recompile limit)


def resolve_dtype(
    device: str, dtype: str, architecture: str, bf16_supported: bool | None = None
) -> torch.dtype:
    """`dtype` "auto": float16 on CUDA (bfloat16 for SD3/FLUX where the GPU has it),
    float32 elsewhere (CPU, MPS); any other value is taken as named."""
    if dtype != "auto":
        return getattr(torch, dtype)
    if not device.startswith("cuda"):
        return torch.float32
    if architecture in BF16_ARCHITECTURES:
        if bf16_supported is None:
            bf16_supported = torch.cuda.is_bf16_supported()
        if bf16_supported:
            return torch.bfloat16
    return torch.float16


def denoiser_name(pipe: Any) -> str:
    """The pipeline's denoiser attribute: `unet` (SD 1.x, SDXL) or `transformer` (SD3, FLUX)."""
    return "unet" if getattr(pipe, "unet", None) is not None else "transformer"


def channels_last_enabled(device: str) -> bool:
    """The `channels_last` setting; unset: on for CUDA (faster convolutions), off elsewhere."""
    value = option("channels_last", None)
    return device.startswith("cuda") if value is None else bool(value)


def apply_channels_last(pipe: Any) -> None:
    """NHWC weights for the convolutional parts (UNet, VAE); a transformer has none to speak of."""
    for name in ("unet", "vae"):
        module = getattr(pipe, name, None)
        if isinstance(module, nn.Module):
            module.to(memory_format=torch.channels_last)


def compile_mode(value: Any) -> str | None:
    """The `compile` setting as a torch.compile mode, or None when off."""
    if value in (None, False, "false", "off"):
        return None
    if value is True or value == "true":
        return "default"
    if value not in COMPILE_MODES:
        raise ValueError(f"compile must be false or one of {COMPILE_MODES}, not {value!r}")
    return str(value)


def compile_denoiser(
    pipe: Any, mode: str, backend: str = "inductor", cache_size: int = DEFAULT_COMPILE_CACHE
) -> None:
    """Compile the denoiser in place (`nn.Module.compile`: the attribute stays the model,
    so moves, LoRA and `components` keep working) with static shapes.

    Each new (batch, height, width) — and a text length other than 77 tokens — is
    a new graph; past `cache_size` graphs torch stops compiling that model and runs
    the uncompiled code for new shapes (it logs a warning).
    """
    dynamo = torch._dynamo.config
    dynamo.recompile_limit = max(int(cache_size), 1)
    kwargs: dict[str, Any] = {"dynamic": False, "backend": backend}
    if backend == "inductor":
        kwargs["mode"] = mode
    getattr(pipe, denoiser_name(pipe)).compile(**kwargs)


def warmup_batches(shapes: list[list[int]]) -> list[list[WorkItem]]:
    """Each [width, height, batch] as a txt2img batch of 2 steps with guidance on (as a
    request with cfg_scale > 1 runs). Run through the family like any batch, so the
    graph compiled is the one requests use (same text-embedding path, same grad mode,
    same batch-invariance patches)."""
    batches = []
    for n, (width, height, batch) in enumerate(shapes):
        params = {
            "prompt": "",
            "width": int(width),
            "height": int(height),
            "steps": 2,
            "cfg_scale": 5.0,
        }
        batches.append(
            [
                WorkItem(f"warmup-{n}-{i}", "txt2img", {**params, "seed": i + 1})
                for i in range(int(batch))
            ]
        )
    return batches


def prepare(pipe: Any, device: str) -> list[list[WorkItem]]:
    """Apply the worker's GPU-path settings to a pipeline just loaded on `device`;
    returns the warm-up batches the caller should run (none unless compiling)."""
    if channels_last_enabled(device):
        apply_channels_last(pipe)
    mode = compile_mode(option("compile", False))
    if mode is None:
        return []
    compile_denoiser(
        pipe,
        mode,
        backend=str(option("compile_backend", "inductor")),
        cache_size=int(option("compile_cache_size", DEFAULT_COMPILE_CACHE)),
    )
    shapes = option("compile_warmup", [])
    if shapes:
        log.info("compiling %s for %d warm-up shape(s)", denoiser_name(pipe), len(shapes))
    return warmup_batches(shapes)


def vae_needs_upcast(pipe: Any) -> bool:
    """As the SDXL pipelines decide it: a float16 VAE whose config says it overflows
    (SDXL's original VAE) runs in float32 for the decode and the encode."""
    vae = getattr(pipe, "vae", None)
    return (
        hasattr(pipe, "upcast_vae")
        and vae is not None
        and vae.dtype == torch.float16
        and bool(getattr(vae.config, "force_upcast", False))
    )


@contextlib.contextmanager
def vae_upcast(pipe: Any) -> Iterator[None]:
    """Within this block the VAE is float32 if `vae_needs_upcast` (the pipelines' own
    decode does the same; this covers the decodes and encodes pixelpool makes itself)."""
    if not vae_needs_upcast(pipe):
        yield
        return
    pipe.vae.to(torch.float32)
    try:
        yield
    finally:
        pipe.vae.to(torch.float16)


def _tensors(module: nn.Module) -> Iterator[torch.Tensor]:
    yield from module.parameters()
    yield from module.buffers()


def pinned_transfer(source: str, target: str) -> bool:
    """Moves between a CUDA device and the host use pinned memory; nothing else does."""
    cuda = source.startswith("cuda") or target.startswith("cuda")
    return cuda and (source == "cpu" or target == "cpu") and torch.cuda.is_available()


def move(pipe: Any, source: str, target: str) -> None:
    """Move the pipeline between tiers. CUDA <-> host goes through pinned host memory with
    asynchronous copies (the host copy of a model in the RAM tier stays pinned, so
    bringing it back is a DMA at full bus speed); any other move is `pipe.to`."""
    if not pinned_transfer(source, target):
        pipe.to(target)
        return
    modules = [m for m in pipe.components.values() if isinstance(m, nn.Module)]
    for module in modules:
        for tensor in _tensors(module):
            if target == "cpu":
                host = torch.empty_like(tensor.data, device="cpu", pin_memory=True)
                host.copy_(tensor.data, non_blocking=True)
                tensor.data = host
            else:
                tensor.data = tensor.data.to(target, non_blocking=True)
    # The host side must not read (or free) pinned pages before the copies finish.
    torch.cuda.synchronize(target if target != "cpu" else source)
