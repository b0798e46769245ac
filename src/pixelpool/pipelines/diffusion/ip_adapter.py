"""Per-request IP-Adapters: loaded once per model, scaled per call, detached when unused.

Loading an adapter reads its weights and image encoder and replaces the UNet's
cross-attention processors; switching its scale only sets a number. So each loaded
pipeline keeps one adapter (the last used): a batch without references detaches it
(the UNet's plain processors and no image projection, as if never loaded) and the
next batch with references re-attaches it without reading a file. Another adapter
replaces it (diffusers' `unload_ip_adapter`, then `load_ip_adapter`).

Each job brings its own reference images. diffusers gives one set of image
embeddings to a whole call, so the embeddings are computed here per job exactly as
diffusers computes them (`encode_image`: the encoder's image embeddings, or its
penultimate hidden states for "plus" adapters; zeros, or the encoding of a black
image, as the negative) and the pipeline's `prepare_ip_adapter_image_embeds` is
replaced for that call by one that stacks them in batch order (all negatives, then
all positives, as classifier-free guidance batches them). An image made in a batch
thus equals the image made alone, and a job alone equals diffusers given
`ip_adapter_image=` directly. Several references for one job are one adapter's list
(`ip_adapter_image=[[a, b]]`): the adapter attends to all of their tokens.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers.models.embeddings import ImageProjection
from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

from pixelpool.families.diffusion.params import DiffusionParams, IPAdapterRef
from pixelpool.pipelines.diffusion.images import open_image


@dataclass
class _Adapter:
    key: str
    plain: dict[str, Any]  # the UNet's attention processors without the adapter
    adapted: dict[str, Any]  # with it (they hold its key/value projections)
    projection: Any  # the UNet's encoder_hid_proj with the adapter
    attached: bool = True


_LOADED: weakref.WeakKeyDictionary[Any, _Adapter] = weakref.WeakKeyDictionary()


def loaded_key(pipe: Any) -> str | None:
    """The key of the adapter the pipeline holds (attached or not), if any."""
    state = _LOADED.get(pipe)
    return state.key if state is not None else None


def is_attached(pipe: Any) -> bool:
    state = _LOADED.get(pipe)
    return state is not None and state.attached


def _load(pipe: Any, ref: IPAdapterRef) -> _Adapter:
    """Load the adapter with its own image encoder (the pipeline's components gain it)."""
    unet = pipe.unet
    plain = dict(unet.attn_processors)
    encoder = CLIPVisionModelWithProjection.from_pretrained(
        ref.image_encoder, dtype=pipe.dtype, local_files_only=True
    ).to(pipe.device)
    pipe.register_modules(image_encoder=encoder)
    size = encoder.config.image_size
    processor = getattr(pipe, "feature_extractor", None)
    crop = getattr(processor, "crop_size", None)
    height = crop.get("height") if isinstance(crop, dict) else getattr(crop, "height", None)
    if processor is not None and height != size:
        # one kept from an adapter whose encoder took another size: as diffusers makes it
        pipe.register_modules(feature_extractor=CLIPImageProcessor(size=size, crop_size=size))
    path = Path(ref.path)
    pipe.load_ip_adapter(
        str(path.parent), subfolder="", weight_name=path.name, image_encoder_folder=None,
        local_files_only=True,
    )  # fmt: skip
    return _Adapter(ref.key, plain, dict(unet.attn_processors), unet.encoder_hid_proj)


def _detach(pipe: Any, state: _Adapter) -> None:
    unet = pipe.unet
    unet.set_attn_processor(dict(state.plain))
    unet.encoder_hid_proj = None
    unet.config.encoder_hid_dim_type = None  # as diffusers' unload_ip_adapter does
    state.attached = False


def _attach(pipe: Any, state: _Adapter) -> None:
    """Put the kept adapter back, on the UNet's device (the model may have moved tiers)."""
    unet = pipe.unet
    for proc in state.adapted.values():
        if isinstance(proc, torch.nn.Module):
            proc.to(device=unet.device, dtype=unet.dtype)
    unet.set_attn_processor(dict(state.adapted))
    unet.encoder_hid_proj = state.projection.to(device=unet.device, dtype=unet.dtype)
    unet.config.encoder_hid_dim_type = "ip_image_proj"
    state.attached = True


def activate(pipe: Any, ref: IPAdapterRef | None) -> None:
    """Make exactly this adapter (at its scale), or none, active on the pipeline's UNet."""
    state = _LOADED.get(pipe)
    if ref is None:
        if state is not None and state.attached:
            _detach(pipe, state)
        return
    if state is not None and state.key != ref.key:
        if not state.attached:
            _attach(pipe, state)
        pipe.unload_ip_adapter()
        del _LOADED[pipe]
        state = None
    if state is None:
        state = _LOADED[pipe] = _load(pipe, ref)
    elif not state.attached:
        _attach(pipe, state)
    pipe.set_ip_adapter_scale(ref.scale)


def _embeddings(pipe: Any, ref: IPAdapterRef) -> tuple[torch.Tensor, torch.Tensor]:
    """(positive, negative) embeddings of one job's references: (1, n, ...) each."""
    images = [open_image(path).convert("RGB") for path in ref.images]
    projection = pipe.unet.encoder_hid_proj.image_projection_layers[0]
    hidden = not isinstance(projection, ImageProjection)
    positive, negative = pipe.encode_image(images, pipe.device, 1, hidden)
    return positive[None], negative[None]


@contextlib.contextmanager
def applied(base: Any, pipe: Any, params: list[DiffusionParams]) -> Iterator[dict[str, Any]]:
    """For one call of `pipe` (sharing `base`'s UNet): the batch's adapter active, and
    the keyword arguments that give each image its own job's references."""
    ref = params[0].ip_adapter
    activate(base, ref)
    if ref is None:
        yield {}
        return
    refs = [p.ip_adapter for p in params]
    per_job: dict[tuple[str, ...], tuple[torch.Tensor, torch.Tensor]] = {}
    for each in refs:  # an img2img job with several images repeats its params
        if each is None:  # the batch key includes the adapter: never mixed
            raise ValueError("a batch mixes jobs with and without reference images")
        if tuple(each.images) not in per_job:
            per_job[tuple(each.images)] = _embeddings(base, each)
    ordered = [per_job[tuple(each.images)] for each in refs if each is not None]
    positive = torch.cat([pos for pos, _ in ordered])
    negative = torch.cat([neg for _, neg in ordered])

    def prepare(*_args: Any, **_kwargs: Any) -> list[torch.Tensor]:
        both = torch.cat([negative, positive]) if pipe.do_classifier_free_guidance else positive
        return [both.to(pipe.device)]

    pipe.prepare_ip_adapter_image_embeds = prepare
    try:
        yield {"ip_adapter_image_embeds": [positive]}
    finally:
        del pipe.prepare_ip_adapter_image_embeds


def result_info(ref: IPAdapterRef | None) -> dict[str, Any]:
    """What a result reports about its references."""
    if ref is None:
        return {}
    return {"ip_adapter": {"name": ref.name, "scale": ref.scale, "references": len(ref.images)}}
