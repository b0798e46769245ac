"""Prompt inputs for a diffusers call: plain text, or weighted / long-prompt embeddings.

Plain prompts (no emphasis, no BREAK, at most 75 tokens) go to diffusers as text, so
its own encoding runs. Otherwise, for CLIP-conditioned models (SD 1.x, SDXL), the
prompt is encoded as A1111 does: split into 75-token chunks (BREAK starts a new one),
each chunk framed by BOS/EOS and padded to 77, encoded separately and concatenated;
each token's embedding is scaled by its weight, then the chunk is rescaled to keep
its original mean. The pooled embedding (SDXL) comes from the first chunk.
"""

from __future__ import annotations

from typing import Any

import torch

from pixelpool.families.diffusion.params import DiffusionParams
from pixelpool.families.diffusion.prompts import BREAK, is_plain, parse_weighted
from pixelpool.pipelines.diffusion import caches, text_cache

CHUNK = 75  # tokens per chunk between BOS and EOS


def _plain_tokens(tokenizer: Any, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False, truncation=False, verbose=False)["input_ids"]


def needs_embeddings(pipe: Any, prompts: list[str]) -> bool:
    """True when a prompt has weights or BREAK, or is longer than the encoder's window."""
    if getattr(pipe, "tokenizer", None) is None or hasattr(pipe, "transformer"):
        return False  # SD3 / FLUX: T5 takes long prompts; weighting is CLIP-only here
    return any(not is_plain(p) or len(_plain_tokens(pipe.tokenizer, p)) > CHUNK for p in prompts)


def token_chunks(tokenizer: Any, prompt: str) -> list[tuple[list[int], list[float]]]:
    """(77 token ids, 77 weights) per chunk of a prompt."""
    chunks: list[tuple[list[int], list[float]]] = []
    ids: list[int] = []
    weights: list[float] = []

    def close() -> None:
        pad = CHUNK - len(ids)
        chunk_ids = [tokenizer.bos_token_id, *ids, tokenizer.eos_token_id]
        chunk_ids += [tokenizer.pad_token_id] * pad
        chunks.append((chunk_ids, [1.0, *weights, 1.0] + [1.0] * pad))
        ids.clear()
        weights.clear()

    for text, weight in parse_weighted(prompt):
        if text == BREAK and weight == -1:
            close()
            continue
        for token in _plain_tokens(tokenizer, text):
            if len(ids) == CHUNK:
                close()
            ids.append(token)
            weights.append(weight)
    if ids or not chunks:
        close()
    return chunks


def _encode_chunk(
    encoder: Any, ids: list[int], weights: list[float], penultimate: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One chunk's weighted hidden states, and the encoder's pooled output (if it has one)."""
    device = encoder.device
    out = encoder(torch.tensor([ids], device=device), output_hidden_states=penultimate)
    hidden = out.hidden_states[-2] if penultimate else out[0]
    pooled = out[0] if penultimate and out[0].ndim == 2 else None
    w = torch.tensor(weights, device=device, dtype=hidden.dtype)
    if bool((w != 1).any()):
        mean = hidden.mean()
        hidden = hidden * w[None, :, None]
        hidden = hidden * (mean / hidden.mean())
    return hidden, pooled


def encode_prompt(
    pipe: Any, prompt: str, chunks: int | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(1, 77*chunks, dim) embeddings and the pooled embedding (SDXL) of one prompt."""
    encoders = [(pipe.tokenizer, pipe.text_encoder)]
    sdxl = getattr(pipe, "text_encoder_2", None) is not None
    if sdxl:
        encoders.append((pipe.tokenizer_2, pipe.text_encoder_2))
    per_encoder, pooled = [], None
    for tokenizer, encoder in encoders:
        parts = token_chunks(tokenizer, prompt)
        while chunks is not None and len(parts) < chunks:
            parts.append(token_chunks(tokenizer, "")[0])
        hidden = []
        for i, (ids, weights) in enumerate(parts):
            h, p = _encode_chunk(encoder, ids, weights, penultimate=sdxl)
            hidden.append(h)
            if i == 0 and p is not None:
                pooled = p
        per_encoder.append(torch.cat(hidden, dim=1))
    return torch.cat(per_encoder, dim=-1), pooled


def _chunk_count(pipe: Any, prompt: str) -> int:
    tokenizers = [pipe.tokenizer]
    if getattr(pipe, "tokenizer_2", None) is not None:
        tokenizers.append(pipe.tokenizer_2)
    return max(len(token_chunks(t, prompt)) for t in tokenizers)


@torch.inference_mode()
def prompt_embeddings(pipe: Any, params: list[DiffusionParams]) -> dict[str, Any]:
    """prompt_embeds (and pooled, for SDXL) for the batch, all padded to one length."""
    texts = [p.prompt for p in params] + [p.negative_prompt for p in params]
    chunks = max(_chunk_count(pipe, t) for t in texts)
    # An empty negative prompt is encoded, not zeroed: what diffusers does when given "".
    embeds, pooled = [], []
    for text in texts:
        e, p = text_cache.encoded(
            pipe,
            params[0],
            text,
            ("chunked", chunks),
            lambda t=text: encode_prompt(pipe, t, chunks),
        )
        embeds.append(e)
        pooled.append(p)
    n = len(params)
    out: dict[str, Any] = {
        "prompt_embeds": torch.cat(embeds[:n]),
        "negative_prompt_embeds": torch.cat(embeds[n:]),
    }
    if pooled[0] is not None:
        out["pooled_prompt_embeds"] = torch.cat(pooled[:n])  # type: ignore[arg-type]
        out["negative_pooled_prompt_embeds"] = torch.cat(pooled[n:])  # type: ignore[arg-type]
    return out


def prompt_inputs(pipe: Any, params: list[DiffusionParams]) -> dict[str, Any]:
    """Keyword arguments that give `pipe` the batch's prompts (the clients' cached
    embeddings where they sent them; see caches.py). Prompts are encoded one at a time
    and kept per model (text_cache.py)."""
    texts = [p.prompt for p in params] + [p.negative_prompt for p in params]
    needs = needs_embeddings(pipe, texts)
    cached = caches.batch_prompts(pipe, params, prompt_embeddings, needs)
    if cached is not None:
        return cached
    if needs:
        return prompt_embeddings(pipe, params)
    if text_cache.applies(pipe):
        return text_cache.batch_inputs(pipe, params)
    return {
        "prompt": [p.prompt for p in params],
        "negative_prompt": [p.negative_prompt for p in params],
    }
