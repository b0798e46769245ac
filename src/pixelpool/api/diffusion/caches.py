"""FoxBurrow's round-trip caches on a request: `clip_embeddings` sent back (checked, stored
as one upload the worker reads) and `emit_caches` (send this job's caches).

Entries are checked off the event loop (base64 of megabytes); anything malformed is a
422 naming the entry's field. Whether they fit the model is the worker's to say: it
falls back to the prompt and reports it in the result's info.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pixelpool.api.errors import field_error
from pixelpool.api.state import AppState
from pixelpool.api.uploads import store_blob
from pixelpool.families.diffusion import clip_cache
from pixelpool.families.diffusion.params import OP_PARAMS
from pixelpool.jobs.spec import JobSpec


def _checked(entries: Any) -> tuple[bytes, int]:
    arrays = clip_cache.parse_entries(entries)
    return clip_cache.to_safetensors(arrays), clip_cache.token_count(arrays)


async def attach(state: AppState, spec: JobSpec, req: Any, owner: str | None) -> None:
    """Put the request's cached embeddings and cache wish on its job."""
    if getattr(req, "emit_caches", False):
        spec.params["emit_caches"] = True
    entries = getattr(req, "clip_embeddings", None)
    if entries is None:
        return
    try:
        blob, tokens = await asyncio.to_thread(_checked, entries)
    except clip_cache.CacheError as exc:
        raise field_error(exc.field, exc.message) from exc
    path = await store_blob(state, blob, "application/octet-stream", owner)
    spec.params.update(prompt_cache=str(path), prompt_cache_tokens=tokens)
    spec.batch_key = list(OP_PARAMS[spec.op].model_validate(spec.params).batch_key())
