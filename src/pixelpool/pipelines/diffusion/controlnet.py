"""Per-request ControlNets: loaded once per worker, joined to the loaded model's modules.

A batch's ControlNets (all images of a batch share them, see `batch_key`) turn the
txt2img, img2img or inpaint pipeline into diffusers' ControlNet variant of it with
`from_pipe` (same UNet, VAE and text encoders: no copies). Each image brings its own
control image, run through its preprocessor here, in the worker. Loaded ControlNets
and the pipelines built on them are kept per loaded model (LRU, small). A union
ControlNet (SDXL's ControlNetUnionModel, alone in its request) takes diffusers' union
pipelines, with its `control_mode`.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from typing import Any

import diffusers
import numpy as np
import torch
from diffusers import DiffusionPipeline
from PIL import Image

from pixelpool.families.diffusion.params import ControlNetRef, DiffusionParams
from pixelpool.pipelines.base import Loaded
from pixelpool.pipelines.diffusion.images import open_image

MAX_MODELS = 4
MAX_PIPELINES = 4

# diffusers imports these on first use: a worker that never sees a ControlNet skips them
PIPELINES: dict[tuple[str, str], str] = {
    ("sd15", "txt2img"): "StableDiffusionControlNetPipeline",
    ("sd15", "img2img"): "StableDiffusionControlNetImg2ImgPipeline",
    ("sd15", "inpaint"): "StableDiffusionControlNetInpaintPipeline",
    ("sdxl", "txt2img"): "StableDiffusionXLControlNetPipeline",
    ("sdxl", "img2img"): "StableDiffusionXLControlNetImg2ImgPipeline",
    ("sdxl", "inpaint"): "StableDiffusionXLControlNetInpaintPipeline",
}
UNION_PIPELINES: dict[tuple[str, str], str] = {
    ("sdxl", "txt2img"): "StableDiffusionXLControlNetUnionPipeline",
    ("sdxl", "img2img"): "StableDiffusionXLControlNetUnionImg2ImgPipeline",
    ("sdxl", "inpaint"): "StableDiffusionXLControlNetUnionInpaintPipeline",
}

_MODELS: weakref.WeakKeyDictionary[Any, OrderedDict[str, Any]] = weakref.WeakKeyDictionary()
_PIPES: weakref.WeakKeyDictionary[Any, OrderedDict[tuple[Any, ...], Any]] = (
    weakref.WeakKeyDictionary()
)


def _load(base: Any, ref: ControlNetRef) -> Any:
    """The ControlNet at `ref.path` on the model's device and dtype (cached by key)."""
    cache = _MODELS.setdefault(base, OrderedDict())
    model = cache.get(ref.key)
    if model is None:
        cls = diffusers.ControlNetUnionModel if ref.union else diffusers.ControlNetModel
        model = cls.from_pretrained(ref.path, dtype=base.unet.dtype, local_files_only=True).eval()
        if ref.union:
            model.forward = OneImageAtATime(model.forward)
        cache[ref.key] = model
        while len(cache) > MAX_MODELS:
            stale, _ = cache.popitem(last=False)
            pipes = _PIPES.get(base, OrderedDict())
            for pipe_key in [k for k in pipes if stale in k[1]]:
                del pipes[pipe_key]
    cache.move_to_end(ref.key)
    return model.to(base.unet.device, base.unet.dtype)


class OneImageAtATime:
    """A union ControlNet's forward, run on each image's rows alone.

    Its control-type transformer gives `nn.MultiheadAttention` a (batch, tokens, width)
    tensor as if it were (sequence, batch, width), so the images of one call attend to
    one another: on the tiny model a batch-mate's control image moved an image's
    residuals by 7e-3, where rounding moves them by 2e-5. Each image's rows (its
    unconditional and conditional halves under guidance, as diffusers passes an image
    made alone) go through it alone, so an image is the same in any batch, bit for bit.
    `images` is set for each batch; 0 or 1 runs the call as it is."""

    def __init__(self, forward: Any) -> None:
        self._forward = forward
        self.images = 0

    def __call__(self, sample: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        rows, images = sample.shape[0], self.images
        if images <= 1 or rows % images or kwargs.get("return_dict", True):
            return self._forward(sample, *args, **kwargs)
        per = rows // images  # 2 under classifier-free guidance: [uncond..., cond...]
        groups = [torch.tensor([i + k * images for k in range(per)]) for i in range(images)]
        parts = [
            self._forward(*_rows((sample, *args), idx, rows), **_rows(kwargs, idx, rows))
            for idx in groups
        ]
        order = torch.cat(groups)
        down = [_merge([p[0][j] for p in parts], order) for j in range(len(parts[0][0]))]
        return down, _merge([p[1] for p in parts], order)


def _rows(value: Any, idx: torch.Tensor, rows: int) -> Any:
    """`value` with every tensor that has a row per batch row cut to the rows `idx`."""
    if isinstance(value, torch.Tensor):
        return value[idx.to(value.device)] if value.ndim and value.shape[0] == rows else value
    if isinstance(value, (list, tuple)):
        return type(value)(_rows(v, idx, rows) for v in value)
    if isinstance(value, dict):
        return {k: _rows(v, idx, rows) for k, v in value.items()}
    return value


def _merge(parts: list[torch.Tensor], order: torch.Tensor) -> torch.Tensor:
    """The per-image outputs back in the call's row order."""
    joined = torch.cat(parts)
    out = torch.empty_like(joined)
    out[order.to(joined.device)] = joined
    return out


def pipeline(loaded: Loaded, kind: str, refs: list[ControlNetRef]) -> DiffusionPipeline:
    """The loaded model as the ControlNet pipeline of `kind` with these ControlNets."""
    base = loaded.obj
    models = [_load(base, ref) for ref in refs]
    key = (kind, tuple(ref.key for ref in refs))
    cache = _PIPES.setdefault(base, OrderedDict())
    if key not in cache:
        union = refs[0].union
        name = (UNION_PIPELINES if union else PIPELINES).get((loaded.architecture, kind))
        if name is None:
            raise ValueError(f"ControlNets are not supported for {loaded.architecture} {kind}")
        cls = getattr(diffusers, name)
        if len(models) == 1:
            controlnet = models[0]
        else:
            from diffusers.models.controlnets.multicontrolnet import MultiControlNetModel

            controlnet = MultiControlNetModel(models)
        extra = {"requires_safety_checker": False} if loaded.architecture == "sd15" else {}
        pipe = cls.from_pipe(base, controlnet=controlnet, **extra)
        pipe.set_progress_bar_config(disable=True)
        cache[key] = pipe
        while len(cache) > MAX_PIPELINES:
            cache.popitem(last=False)
    cache.move_to_end(key)
    return cache[key]


def canny(image: Image.Image, low: int, high: int) -> Image.Image:
    """A1111's canny: OpenCV's edges of the RGB image, as a 3-channel image."""
    import cv2

    edges = cv2.Canny(np.asarray(image.convert("RGB")), low, high)
    return Image.fromarray(np.stack([edges] * 3, axis=-1))


_DEPTH: dict[str, Any] = {}


def depth(image: Image.Image, model_path: str, device: Any = "cpu") -> Image.Image:
    """Depth Anything's relative depth (near is bright), scaled to 0-255, 3 channels."""
    from transformers import AutoImageProcessor, AutoModelForDepthEstimation

    if model_path not in _DEPTH:
        _DEPTH.clear()  # one depth model at a time
        processor = AutoImageProcessor.from_pretrained(model_path, local_files_only=True)
        model = AutoModelForDepthEstimation.from_pretrained(model_path, local_files_only=True)
        _DEPTH[model_path] = (processor, model.eval())
    processor, model = _DEPTH[model_path]
    model.to(device)
    rgb = image.convert("RGB")
    with torch.inference_mode():
        out = model(**processor(images=rgb, return_tensors="pt").to(device))
    found = processor.post_process_depth_estimation(out, target_sizes=[(rgb.height, rgb.width)])
    array = found[0]["predicted_depth"].float().cpu().numpy()
    span = float(array.max() - array.min())
    scaled = (array - array.min()) / span if span > 0 else np.zeros_like(array)
    grey = np.round(scaled * 255).astype(np.uint8)
    return Image.fromarray(np.stack([grey] * 3, axis=-1))


def control_image(ref: ControlNetRef, device: Any = "cpu") -> Image.Image:
    """The control image the ControlNet sees: the upload, through its preprocessor."""
    image = open_image(ref.image).convert("RGB")
    if ref.preprocessor == "canny":
        return canny(image, ref.canny_low, ref.canny_high)
    if ref.preprocessor == "depth":
        if not ref.depth_model:
            raise ValueError("preprocessor depth needs a depth model")
        return depth(image, ref.depth_model, device)
    return image


def call_kwargs(kind: str, params: list[DiffusionParams], device: Any = "cpu") -> dict[str, Any]:
    """The diffusers arguments for one batch: one control image per image (per ControlNet)."""
    first = params[0]
    per_image = [[control_image(ref, device) for ref in p.controlnets] for p in params]
    if first.controlnets[0].union:  # alone: one control type, an image per batch image
        ref = first.controlnets[0]
        return {
            "control_image": [[imgs[0] for imgs in per_image]],
            "control_mode": [ref.control_mode],
            "controlnet_conditioning_scale": ref.conditioning_scale,
            "control_guidance_start": ref.guidance_start,
            "control_guidance_end": ref.guidance_end,
        }
    single = len(first.controlnets) == 1
    images: list[Any] = [imgs[0] for imgs in per_image] if single else per_image
    scales = [ref.conditioning_scale for ref in first.controlnets]
    starts = [ref.guidance_start for ref in first.controlnets]
    ends = [ref.guidance_end for ref in first.controlnets]
    return {
        "image" if kind == "txt2img" else "control_image": images,
        "controlnet_conditioning_scale": scales[0] if single else scales,
        "control_guidance_start": starts[0] if single else starts,
        "control_guidance_end": ends[0] if single else ends,
    }


def prepare(
    loaded: Loaded, kind: str, pipe: DiffusionPipeline, params: list[DiffusionParams]
) -> tuple[DiffusionPipeline, dict[str, Any]]:
    """`pipe` and no extra arguments without ControlNets; else the ControlNet pipeline of
    `kind` and its control arguments for this batch."""
    if not params[0].controlnets:
        return pipe, {}
    device = loaded.obj.unet.device
    control = pipeline(loaded, kind, params[0].controlnets)
    if isinstance(control.controlnet.forward, OneImageAtATime):
        control.controlnet.forward.images = len(params)
    return control, call_kwargs(kind, params, device)
