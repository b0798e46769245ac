"""Live previews between denoising steps: TAESD when installed, else latent-to-RGB.

A preview must cost little next to a step, so the model's VAE is never run. With a
TAESD decoder for the model's architecture (found by the registry, passed in the
job's params) the latents are decoded by it: a ~5 MB network that upsamples 8x, so
previews have the image's full size. Without one (or when it cannot be loaded),
each latent pixel is projected to RGB by a published per-architecture table
(ComfyUI's `latent_rgb_factors`), giving previews at 1/8 of the image size.

Both take the latents exactly as the denoiser sees them (model space: scaled, and
shifted for SD3/FLUX), as ComfyUI does; TAESD decoders are trained on that space.
Packed FLUX latents (batch, tokens, 64) are unpacked to (batch, 16, h/8, w/8) first.
A preview never fails a job: a decoder that will not load or run is reported once
in the worker's log and the latent-to-RGB table is used instead.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pixelpool.families.diffusion.params import DiffusionParams, PreviewDecoderRef
from pixelpool.pipelines.base import Loaded

log = logging.getLogger(__name__)

# Latent channel -> (R, G, B) factors and an RGB bias, from ComfyUI's comfy/latent_formats.py.
_SD15 = [[0.3512, 0.2297, 0.3227], [0.3250, 0.4974, 0.2350],
         [-0.2829, 0.1762, 0.2721], [-0.2120, -0.2616, -0.7177]]  # fmt: skip
_SDXL = [[0.3651, 0.4232, 0.4341], [-0.2533, -0.0042, 0.1068],
         [0.1076, 0.1111, -0.0362], [-0.3165, -0.2492, -0.2188]]  # fmt: skip
_SD3 = [
    [-0.0922, -0.0175, 0.0749], [0.0311, 0.0633, 0.0954], [0.1994, 0.0927, 0.0458],
    [0.0856, 0.0339, 0.0902], [0.0587, 0.0272, -0.0496], [-0.0006, 0.1104, 0.0309],
    [0.0978, 0.0306, 0.0427], [-0.0042, 0.1038, 0.1358], [-0.0194, 0.0020, 0.0669],
    [-0.0488, 0.0130, -0.0268], [0.0922, 0.0988, 0.0951], [-0.0278, 0.0524, -0.0542],
    [0.0332, 0.0456, 0.0895], [-0.0069, -0.0030, -0.0810], [-0.0596, -0.0465, -0.0293],
    [-0.1448, -0.1463, -0.1189],
]  # fmt: skip
_FLUX = [
    [-0.0346, 0.0244, 0.0681], [0.0034, 0.0210, 0.0687], [0.0275, -0.0668, -0.0433],
    [-0.0174, 0.0160, 0.0617], [0.0859, 0.0721, 0.0329], [0.0004, 0.0383, 0.0115],
    [0.0405, 0.0861, 0.0915], [-0.0236, -0.0185, -0.0259], [-0.0245, 0.0250, 0.1180],
    [0.1008, 0.0755, -0.0421], [-0.0515, 0.0201, 0.0011], [0.0428, -0.0012, -0.0036],
    [0.0817, 0.0765, 0.0749], [-0.1264, -0.0522, -0.1103], [-0.0280, -0.0881, -0.0499],
    [-0.1262, -0.0982, -0.0778],
]  # fmt: skip
LATENT_RGB: dict[str, tuple[list[list[float]], list[float]]] = {
    "sd15": (_SD15, [0.0, 0.0, 0.0]),
    "sdxl": (_SDXL, [0.1084, -0.0175, -0.0011]),
    "sd3": (_SD3, [0.2394, 0.2135, 0.1925]),
    "flux": (_FLUX, [-0.0329, -0.0718, -0.0851]),
}
# A model whose latents have another channel count than its architecture's table (the
# tiny test models have 4) uses the table made for that count.
_BY_CHANNELS = {4: "sd15", 16: "flux"}

MAX_DECODERS = 4  # loaded TAESD decoders kept per worker (~5 MB each)
_DECODERS: OrderedDict[tuple[str, str, str], torch.nn.Module] = OrderedDict()
_FAILED: set[str] = set()  # decoder keys that would not load: warned once, not retried
_WARNED: set[str] = set()
_LOCK = threading.Lock()


def warn_once(message: str) -> None:
    """A preview problem goes to the worker's log once, not at every step of every job."""
    with _LOCK:
        if message in _WARNED or len(_WARNED) > 1000:
            return
        _WARNED.add(message)
    log.warning("%s", message)


def to_images(rgb: torch.Tensor) -> list[np.ndarray]:
    """(batch, 3, h, w) in [-1, 1] -> uint8 (h, w, 3) arrays."""
    out = ((rgb.float() + 1) / 2).clamp(0, 1).mul(255).round().to(torch.uint8)
    return [np.ascontiguousarray(img) for img in out.permute(0, 2, 3, 1).cpu().numpy()]


def latent_rgb(latents: torch.Tensor, architecture: str) -> list[np.ndarray]:
    """Previews at the latents' size (1/8 of the image) from the architecture's table."""
    channels = latents.shape[1]
    factors, bias = LATENT_RGB.get(architecture, LATENT_RGB["sd15"])
    if len(factors) != channels:
        factors, bias = LATENT_RGB[_BY_CHANNELS.get(channels, "sd15")]
    table = torch.tensor(factors)[:channels]
    x = latents.detach().float().cpu()[:, : len(table)]
    rgb = torch.einsum("bchw,cr->brhw", x, table) + torch.tensor(bias).view(1, 3, 1, 1)
    return to_images(rgb)


def unpack(latents: torch.Tensor, width: int, height: int, vae_scale: int) -> torch.Tensor | None:
    """FLUX's packed (batch, tokens, channels*4) latents -> (batch, channels, h, w),
    as diffusers' FluxPipeline._unpack_latents does; None when the size does not fit."""
    batch, tokens, packed = latents.shape
    h, w = 2 * (height // (vae_scale * 2)), 2 * (width // (vae_scale * 2))
    if tokens != (h // 2) * (w // 2) or packed % 4:
        return None
    x = latents.view(batch, h // 2, w // 2, packed // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(batch, packed // 4, h, w)


def _original_config(sd: dict[str, torch.Tensor]) -> dict[str, Any]:
    """DecoderTiny arguments that reproduce an original (madebyollin/ComfyUI) decoder.

    The original is a Sequential: Clamp (index 0, no weights), conv, ReLU, then stages
    of Blocks (keys `N.conv.*`) each closed by a conv (`N.weight`), with a weightless
    Upsample between stages; the last conv has a bias and gives RGB.
    """
    if "1.weight" not in sd:
        raise ValueError("not a TAESD decoder: it has no '1.weight' (the first conv)")
    indices = sorted({int(k.split(".", 1)[0]) for k in sd if k.split(".", 1)[0].isdigit()})
    stages: list[tuple[int, int]] = []
    blocks, width = 0, int(sd["1.weight"].shape[0])
    for i in indices[1:]:
        if f"{i}.conv.0.weight" in sd:
            blocks, width = blocks + 1, int(sd[f"{i}.conv.0.weight"].shape[0])
        elif f"{i}.weight" in sd:
            stages.append((blocks, width))
            blocks = 0
    if not stages or f"{indices[-1]}.bias" not in sd:
        raise ValueError("not a TAESD decoder: it does not end in an RGB convolution")
    return {
        "in_channels": int(sd["1.weight"].shape[1]),
        "out_channels": int(sd[f"{indices[-1]}.weight"].shape[0]),
        "num_blocks": tuple(n for n, _ in stages),
        "block_out_channels": tuple(c for _, c in stages),
        "upsampling_scaling_factor": 2,
        "act_fn": "relu",
        "upsample_fn": "nearest",
    }


def _load_single_file(path: Path) -> torch.nn.Module:
    """A ComfyUI/A1111 decoder file as diffusers' DecoderTiny, loaded strictly.

    Their keys are diffusers' shifted by one at the top level (the original has a
    weightless Clamp at index 0, which DecoderTiny.forward applies itself):
    original `1.weight` is `layers.0.weight`, `3.conv.0.weight` is `layers.2.conv.0.weight`.
    """
    from diffusers.models.autoencoders.vae import DecoderTiny

    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        sd = load_file(str(path))
    else:
        sd = torch.load(str(path), map_location="cpu", weights_only=True)
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError("not a state dict of tensors")
    for prefix in ("taesd_decoder.", "decoder."):  # some files carry one
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k.removeprefix(prefix): v for k, v in sd.items()}
    decoder = DecoderTiny(**_original_config(sd))
    renamed = {}
    for key, value in sd.items():
        index, _, rest = key.partition(".")
        renamed[f"layers.{int(index) - 1}.{rest}" if index.isdigit() else key] = value
    decoder.load_state_dict(renamed, strict=True)
    return decoder


def _load_diffusers(path: Path) -> torch.nn.Module:
    from diffusers import AutoencoderTiny

    return AutoencoderTiny.from_pretrained(str(path), local_files_only=True).decoder


def load_decoder(ref: PreviewDecoderRef, device: torch.device, dtype: torch.dtype) -> Any:
    """The decoder for `ref` on `device` in `dtype`, loaded once per worker (LRU);
    None when it cannot be loaded (logged once with the reason)."""
    cache_key = (ref.key, str(device), str(dtype))
    with _LOCK:
        if cache_key in _DECODERS:
            _DECODERS.move_to_end(cache_key)
            return _DECODERS[cache_key]
        if ref.key in _FAILED:
            return None
    path = Path(ref.path)
    try:
        module = _load_single_file(path) if ref.format == "single_file" else _load_diffusers(path)
    except Exception as exc:  # any bad file: previews fall back, the job goes on
        with _LOCK:
            _FAILED.add(ref.key)
        warn_once(f"preview decoder {path} cannot be used ({type(exc).__name__}: {exc}); "
                  "previews use latent-to-RGB")  # fmt: skip
        return None
    module = module.to(device=device, dtype=dtype).eval().requires_grad_(False)
    with _LOCK:
        _DECODERS[cache_key] = module
        while len(_DECODERS) > MAX_DECODERS:
            _DECODERS.popitem(last=False)
    return module


def decoder_channels(decoder: torch.nn.Module) -> int:
    return int(decoder.layers[0].in_channels)


@dataclass
class Previewer:
    """Makes the previews of one batch: which steps, and how latents become images."""

    architecture: str
    every: int
    width: int  # of the image being denoised (packed FLUX latents need it)
    height: int
    vae_scale: int
    dtype: torch.dtype
    decoder_ref: PreviewDecoderRef | None = None

    def due(self, step: int, total: int) -> bool:
        return bool(self.every) and (step % self.every == 0 or step == total)

    def __call__(self, latents: torch.Tensor) -> list[np.ndarray]:
        x = latents.detach()
        if x.ndim == 3:
            unpacked = unpack(x, self.width, self.height, self.vae_scale)
            if unpacked is None:
                return []
            x = unpacked
        if x.ndim != 4:
            return []
        if self.decoder_ref is not None:
            images = self._taesd(x)
            if images is not None:
                return images
        return latent_rgb(x, self.architecture)

    def _taesd(self, x: torch.Tensor) -> list[np.ndarray] | None:
        ref = self.decoder_ref
        assert ref is not None
        decoder = load_decoder(ref, x.device, self.dtype)
        problem = None
        if decoder is None:
            return None
        if decoder_channels(decoder) != x.shape[1]:
            problem = (f"takes {decoder_channels(decoder)} latent channels, "
                       f"the {self.architecture} model has {x.shape[1]}")  # fmt: skip
        else:
            try:
                with torch.inference_mode():
                    return to_images(decoder(x.to(self.dtype)))
            except Exception as exc:  # a preview never fails the job
                problem = f"failed ({type(exc).__name__}: {exc})"
        warn_once(f"preview decoder {ref.path} {problem}; previews use latent-to-RGB")
        self.decoder_ref = None  # not again in this batch
        return None


def for_batch(
    loaded: Loaded,
    params: list[DiffusionParams],
    width: int | None = None,
    height: int | None = None,
) -> Previewer | None:
    """The batch's previewer, or None when no job of it asked for previews.

    `width`/`height`: the size this call denoises at, when not the params' (hi-res base).
    """
    every = max((p.preview_every for p in params), default=0)
    if not every:
        return None
    pipe = loaded.obj
    first = params[0]
    return Previewer(
        architecture=loaded.architecture,
        every=every,
        width=width or first.width,
        height=height or first.height,
        vae_scale=int(getattr(pipe, "vae_scale_factor", 8)),
        dtype=getattr(pipe, "dtype", torch.float32),
        decoder_ref=next((p.preview_decoder for p in params if p.preview_decoder), None),
    )
