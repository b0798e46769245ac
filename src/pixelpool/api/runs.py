"""What the OpenAI, inference and self-hosted dialects share: build, run, read back.

A request for n images becomes n jobs (seed, seed+1, ...) that the scheduler
batches like any others; the route waits for them (cancelling them if the client
hangs up) and reads the stored results. No dialect generates anything itself.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import anyio
from starlette.requests import Request

from pixelpool.api import ops
from pixelpool.api.errors import ApiError, field_error
from pixelpool.api.state import AppState
from pixelpool.api.waiting import wait_or_cancel
from pixelpool.jobs.spec import JobRecord, JobSpec, JobStatus


@dataclass(frozen=True)
class Output:
    """One finished image: the stored artifact and its bytes."""

    artifact_id: str
    media_type: str
    data: bytes
    seed: int
    width: int
    height: int


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def check_count(state: AppState, n: int | None, field: str = "n") -> int:
    """Images per request within `limits.max_images` (an error above it, never a clamp)."""
    limit = state.settings.limits.max_images
    if n is not None and n > limit:
        raise field_error(field, f"at most {limit} images per request, got {n}", 400)
    return n or 1


def renamed(exc: ApiError, names: dict[str, str]) -> ApiError:
    """The same error, naming the field as this dialect calls it (cfg_scale -> guidance_scale)."""
    new = names.get(exc.field or "")
    if not new or new == exc.field:
        return exc
    suffix = f" ({exc.field})" if list(names.values()).count(new) > 1 else ""
    return ApiError(exc.status, f"{new}: {exc.detail}{suffix}", new, exc.headers)


def build_specs(
    build: Callable[[int | None], JobSpec], seed: int | None, n: int, names: dict[str, str]
) -> list[JobSpec]:
    """n specs from `build(seed)`: seed, seed+1, ... or a random seed each (None, 0, -1)."""
    first = None if seed in (None, 0, -1) else seed
    try:
        return [build(None if first is None else first + i) for i in range(n)]
    except ApiError as exc:
        raise renamed(exc, names) from exc


async def submit_all(state: AppState, specs: list[JobSpec], owner: str | None) -> list[JobRecord]:
    """Submit every spec, or none: if one is refused the others are cancelled."""
    records: list[JobRecord] = []
    try:
        for spec in specs:
            records.append(await ops.submit(state, spec, owner))
    except BaseException:
        await cancel_all(state, records)
        raise
    return records


async def cancel_all(state: AppState, records: list[JobRecord]) -> None:
    """Cancel these jobs; shielded, as it also runs while the request is being cancelled."""
    with anyio.CancelScope(shield=True):
        for record in records:
            with contextlib.suppress(KeyError):
                await state.jobs.cancel(record.id)


async def read_output(state: AppState, record: JobRecord) -> Output:
    """The image of a finished job, or the error a client should see."""
    if record.status is JobStatus.cancelled:
        raise ApiError(409, f"job {record.id} was cancelled")
    if record.status is not JobStatus.completed:
        raise ApiError(500, f"generation failed: {record.error or record.status.value}")
    meta = record.result["artifacts"][0]
    art = await state.jobs.artifacts.get(meta["id"])
    data = await state.jobs.artifacts.read(art) if art is not None else None
    if art is None or data is None:
        raise ApiError(410, f"job {record.id}: result has expired")
    seeds = record.result.get("seeds") or [record.spec.params.get("seed", 0)]  # none: not diffusion
    seed = int(seeds[0])
    return Output(art.id, art.media_type, data, seed, meta["width"], meta["height"])


async def run_images(
    state: AppState, request: Request, specs: list[JobSpec], owner: str | None
) -> list[Output]:
    """Submit, wait (cancel all if the client goes away) and read every image, in order."""
    records = await submit_all(state, specs, owner)
    try:
        done = await asyncio.gather(*(wait_or_cancel(state, request, r.id) for r in records))
    except BaseException:
        await cancel_all(state, records)
        raise
    return [await read_output(state, r) for r in done]
