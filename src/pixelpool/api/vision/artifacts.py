"""Large results by reference: inline in the response, or stored as an artifact and
returned as `{"artifact_id", "url", "media_type", "size"}`.

The client picks with `return`: `inline`, `artifact`, or `auto` (the default:
inline unless the encoding is larger than `limits.inline_result_bytes`). Artifacts
are the job store's own (content-addressed, owned by the caller's key, expiring
with `storage.ttl_s`), so an id can also feed a later job. `GET /api/artifacts/{id}`
serves one to the key that made it (another key's is a 404, as for jobs).
"""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any, Literal

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response

from pixelpool.api import openapi_docs as docs
from pixelpool.api.auth import Caller
from pixelpool.api.errors import ApiError
from pixelpool.api.state import AppState, State
from pixelpool.api.validation import check_id
from pixelpool.api.vision.encode import check_choice

ReturnMode = Literal["auto", "inline", "artifact"]
RETURN_MODES: tuple[str, ...] = ("auto", "inline", "artifact")
NPY_MEDIA_TYPE = "application/x-npy"
JSON_MEDIA_TYPE = "application/json"
ROUTE_NAME = "artifact_data"

router = APIRouter(prefix="/api", tags=["native"])


def check_return_mode(value: Any, field: str = "return") -> str:
    """The client's `return` choice, or a 422 naming `field`."""
    return check_choice(value, RETURN_MODES, field)


def should_store(size: int, mode: str, limit: int) -> bool:
    """Whether a result of `size` bytes goes to an artifact: always, never, or over `limit`."""
    return mode == "artifact" or (mode == "auto" and size > limit)


async def store_bytes(
    state: AppState, request: Request, owner: str | None, data: bytes, media_type: str
) -> dict[str, Any]:
    """Store `data` as an artifact of `owner`; its reference, with a URL to fetch it by."""
    art = await state.jobs.artifacts.put(data, media_type, owner)
    url = str(request.url_for(ROUTE_NAME, artifact_id=art.id))
    return {"artifact_id": art.id, "url": url, "media_type": media_type, "size": art.size}


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(array), allow_pickle=False)
    return buf.getvalue()


async def store_array(
    state: AppState, request: Request, owner: str | None, array: np.ndarray
) -> dict[str, Any]:
    """An array stored as a `.npy` artifact (read it with `numpy.load`); its reference."""
    data = await asyncio.to_thread(npy_bytes, array)
    ref = await store_bytes(state, request, owner, data, NPY_MEDIA_TYPE)
    return {**ref, "dtype": str(np.asarray(array).dtype), "shape": list(np.shape(array))}


async def inline_or_artifact(
    state: AppState, request: Request, owner: str | None, result: Any, mode: str = "auto"
) -> Any:
    """`result` (any JSON value, already encoded) as is, or stored as a JSON artifact and
    replaced by its reference, per the client's `mode` and `limits.inline_result_bytes`."""
    mode = check_return_mode(mode)
    if mode == "inline":
        return result
    data = await asyncio.to_thread(_json_bytes, result)
    if not should_store(len(data), mode, state.settings.limits.inline_result_bytes):
        return result
    return await store_bytes(state, request, owner, data, JSON_MEDIA_TYPE)


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()


@router.get(
    "/artifacts/{artifact_id}",
    name=ROUTE_NAME,
    response_class=FileResponse,
    responses={
        **docs.binary(NPY_MEDIA_TYPE, JSON_MEDIA_TYPE, "image/png", description="The artifact"),
        **docs.native(*docs.AUTH, 404),
    },
)
async def artifact_data(artifact_id: str, state: State, caller: Caller) -> Response:
    """A stored result, for the key that made it (another key's is 404); expires with the TTL."""
    check_id("artifact_id", artifact_id, "artifact")
    art = await state.jobs.artifacts.get(artifact_id)
    if art is None or not caller.may_see(art.owner):
        raise ApiError(404, "artifact_id: artifact not found or expired", "artifact_id")
    if art.data is not None:
        return Response(art.data, media_type=art.media_type)
    return FileResponse(art.path, media_type=art.media_type)
