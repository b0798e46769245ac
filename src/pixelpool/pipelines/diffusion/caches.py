"""Client round-trip caches in the worker: cached text embeddings in, embeddings and
denoised latents out (FoxBurrow's `clip_embeddings` / `latent_cache`).

While a batch runs inside `collecting()`, `prompt_inputs` (embeddings.py) asks
`batch_prompts` for the embeddings of a batch with cached embeddings or asking for its
caches, and the step callback hands each step's latents to `record_latents`; `attach`
then puts each job's caches on its Result. Embeddings that do not fit the model's text
encoders (another model or architecture) are ignored: the prompt is encoded as usual
and the result's info says why.

Exactness: what is emitted is what the model was conditioned on, in the model's dtype;
prompts diffusers encodes itself are encoded here with diffusers' own `encode_prompt`,
so an image made from returned embeddings equals the one made from the prompt.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from safetensors.torch import load_file

from pixelpool.families.diffusion.clip_cache import TOKENS_PER_CHUNK
from pixelpool.families.diffusion.params import DiffusionParams
from pixelpool.pipelines.base import Result, WorkItem

Embeds = dict[str, torch.Tensor]  # prompt_embeds, negative_prompt_embeds[, pooled...]
KEYS = ("prompt_embeds", "negative_prompt_embeds")
POOLED = ("pooled_prompt_embeds", "negative_pooled_prompt_embeds")


@dataclass
class Collected:
    """One batch's caches, keyed by the id of each job's params object."""

    embeds: dict[int, tuple[DiffusionParams, Embeds]] = field(default_factory=dict)
    notes: dict[int, tuple[DiffusionParams, str]] = field(default_factory=dict)
    latents: dict[int, tuple[DiffusionParams, torch.Tensor]] = field(default_factory=dict)
    current: list[DiffusionParams] = field(default_factory=list)


_local = threading.local()


def _collected() -> Collected | None:
    return getattr(_local, "collected", None)


@contextlib.contextmanager
def collecting() -> Iterator[Collected]:
    got = Collected()
    _local.collected = got
    try:
        yield got
    finally:
        _local.collected = None


def record_latents(latents: Any) -> None:
    """The step callback's latents: after the last step of the last call, the denoised ones."""
    got = _collected()
    if got is None or not isinstance(latents, torch.Tensor) or not got.current:
        return
    if not any(p.emit_caches for p in got.current) or latents.shape[0] != len(got.current):
        return
    seen: set[int] = set()
    for i, p in enumerate(got.current):
        if id(p) not in seen:  # a job's first image (img2img may give it several)
            seen.add(id(p))
            got.latents[id(p)] = (p, latents[i : i + 1])


def supported(pipe: Any) -> bool:
    """CLIP-conditioned UNet models (SD 1.x, SDXL): the embeddings FoxBurrow exchanges."""
    return getattr(pipe, "text_encoder", None) is not None and hasattr(pipe, "unet")


def _sdxl(pipe: Any) -> bool:
    return getattr(pipe, "text_encoder_2", None) is not None


def _load(pipe: Any, p: DiffusionParams) -> tuple[Embeds | None, str]:
    """The job's cached embeddings as pipeline inputs, or None and why they do not fit."""
    if not supported(pipe):
        return None, "ignored: this model takes no CLIP embeddings"
    try:
        raw = load_file(p.prompt_cache or "")
    except Exception as exc:  # a deleted or unreadable upload
        return None, f"ignored: unreadable ({exc})"
    width_l = pipe.text_encoder.config.hidden_size
    dtype, device = pipe.unet.dtype, pipe.unet.device
    out: Embeds = {}
    if _sdxl(pipe):
        width_g = pipe.text_encoder_2.config.hidden_size
        width_p = pipe.text_encoder_2.config.projection_dim
        if "clip_g.positive" not in raw:
            return None, "ignored: SD 1.x embeddings (clip_l only); this is an SDXL model"
        for key, polarity in zip(KEYS, ("positive", "negative"), strict=True):
            clip_l, clip_g = raw[f"clip_l.{polarity}"], raw[f"clip_g.{polarity}"]
            pooled = raw[f"clip_g_pooled.{polarity}"]
            if (clip_l.shape[-1], clip_g.shape[-1], pooled.shape[-1]) != (
                width_l, width_g, width_p):  # fmt: skip
                return None, (f"ignored: widths {clip_l.shape[-1]}/{clip_g.shape[-1]}/"
                              f"{pooled.shape[-1]} do not fit this model's encoders "
                              f"({width_l}/{width_g}/{width_p})")  # fmt: skip
            out[key] = torch.cat([clip_l, clip_g], dim=-1)[None].to(device, dtype)
            out[POOLED[key == KEYS[1]]] = pooled[None].to(device, dtype)
        return out, "used"
    if "clip_g.positive" in raw:
        return None, "ignored: SDXL embeddings; this is an SD 1.x model"
    for key, polarity in zip(KEYS, ("positive", "negative"), strict=True):
        clip_l = raw[f"clip_l.{polarity}"]
        if clip_l.shape[-1] != width_l:
            return None, (f"ignored: width {clip_l.shape[-1]} does not fit this model's "
                          f"text encoder ({width_l})")  # fmt: skip
        out[key] = clip_l[None].to(device, dtype)
    return out, "used"


def _diffusers_encode(pipe: Any, params: list[DiffusionParams]) -> list[Embeds]:
    """Per job, exactly what diffusers computes from the text (its own encode_prompt, one
    prompt at a time, through the model's prompt cache)."""
    from pixelpool.pipelines.diffusion import text_cache

    return text_cache.per_job(pipe, params)


def _pad(pipe: Any, embeds: Embeds, tokens: int, empty: Callable[[], torch.Tensor]) -> Embeds:
    """Longer token sequences for a batch with a longer prompt: empty chunks appended, as
    `prompt_embeddings` pads (the pooled vector stays)."""
    out = dict(embeds)
    for key in KEYS:
        have = out[key].shape[1]
        if have < tokens:
            chunk = empty().to(out[key].device, out[key].dtype)
            extra = (tokens - have) // TOKENS_PER_CHUNK
            out[key] = torch.cat([out[key], *[chunk] * extra], dim=1)
    return out


def batch_prompts(
    pipe: Any, params: list[DiffusionParams], encode: Callable[..., Any], needs: bool
) -> dict[str, Any] | None:
    """Prompt inputs for a batch that has cached embeddings or emits them; None: leave the
    batch to the usual path. `encode(pipe, params)` is the chunked encoder, used when
    `needs` (weighted or long prompts); else diffusers' own encoding."""
    got = _collected()
    if got is not None:
        got.current = list(params)
    wanted = any(p.emit_caches for p in params)
    if not supported(pipe) or not (wanted or any(p.prompt_cache for p in params)):
        return None
    per_job: list[Embeds | None] = []
    for p in params:
        embeds, note = _load(pipe, p) if p.prompt_cache else (None, "")
        if note and got is not None:
            got.notes.setdefault(id(p), (p, note))
        per_job.append(embeds)
    if all(e is None for e in per_job) and not wanted:
        return None  # every cache ignored: the prompts are encoded as usual
    missing = [p for p, e in zip(params, per_job, strict=True) if e is None]
    if missing:
        batch = encode(pipe, missing) if needs else None
        fresh = (
            [{k: v[i : i + 1] for k, v in batch.items()} for i in range(len(missing))]
            if batch is not None
            else _diffusers_encode(pipe, missing)
        )
        it = iter(fresh)
        per_job = [e if e is not None else next(it) for e in per_job]
    done: list[Embeds] = [e for e in per_job if e is not None]
    tokens = max(e[KEYS[0]].shape[1] for e in done)
    empty_cache: list[torch.Tensor] = []

    def empty() -> torch.Tensor:
        if not empty_cache:
            from pixelpool.pipelines.diffusion.embeddings import encode_prompt

            empty_cache.append(encode_prompt(pipe, "", 1)[0])
        return empty_cache[0]

    done = [_pad(pipe, e, tokens, empty) for e in done]
    if got is not None:
        for p, e in zip(params, done, strict=True):
            got.embeds.setdefault(id(p), (p, e))
    return {k: torch.cat([e[k] for e in done]) for k in done[0]}


def _bytes(t: torch.Tensor) -> tuple[bytes, str]:
    t = t.detach().contiguous().cpu()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().tobytes(), "bf16"
    if t.dtype == torch.float16:
        return t.numpy().tobytes(), "fp16"
    return t.float().numpy().tobytes(), "fp32"


def clip_entries(pipe: Any, embeds: Embeds) -> list[dict[str, Any]]:
    """FoxBurrow's entries (data as bytes; the server base64-encodes them)."""
    width_l = pipe.text_encoder.config.hidden_size
    sides = list(zip(("positive", "negative"), KEYS, POOLED, strict=True))
    parts = [("clip_l", polarity, embeds[key][0][:, :width_l]) for polarity, key, _ in sides]
    if _sdxl(pipe):  # FoxBurrow's order: clip_l, clip_g, clip_g_pooled; positive first
        parts += [("clip_g", polarity, embeds[key][0][:, width_l:]) for polarity, key, _ in sides]
        parts += [("clip_g_pooled", polarity, embeds[pooled][0]) for polarity, _, pooled in sides]
    entries = []
    for encoder, polarity, t in parts:
        data, dtype = _bytes(t)
        entries.append({"encoder_type": encoder, "polarity": polarity, "data": data,
                        "dtype": dtype, "dim0": int(t.shape[0]),
                        "dim1": int(t.shape[1]) if t.ndim == 2 else None})  # fmt: skip
    return entries


def _find(table: dict[int, tuple[DiffusionParams, Any]], item: WorkItem) -> Any:
    """A job's entry: its params are equal to the recorded ones (equal jobs, equal caches)."""
    for p, value in table.values():
        try:
            if type(p).model_validate(item.params) == p:
                return value
        except ValueError:
            continue
    return None


def attach(pipe: Any, batch: list[WorkItem], results: list[Result], got: Collected) -> None:
    """Each job's caches (when it asked) and what became of its cached embeddings."""
    for item, result in zip(batch, results, strict=False):
        note = _find(got.notes, item) if item.params.get("prompt_cache") else None
        if note:
            result.info["clip_embeddings"] = note
        if not item.params.get("emit_caches"):
            continue
        embeds = _find(got.embeds, item)
        if embeds is not None:
            result.caches["clip_embeddings"] = clip_entries(pipe, embeds)
        latents = _find(got.latents, item)
        if latents is not None and latents.ndim == 4:  # not packed (FLUX) latents
            data, dtype = _bytes(latents)
            result.caches["latent_cache"] = {"data": data, "dtype": dtype,
                                             "shape": list(latents.shape)}  # fmt: skip
