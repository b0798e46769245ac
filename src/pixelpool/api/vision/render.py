"""A finished vision job as a client reads it: the worker's `info` with each named
array (masks, depth, features) encoded as the client asked, or referred to by id.

The worker's arrays are already stored as `.npy` artifacts of the job (see
`jobs/service.py`), so `return: "artifact"` costs nothing: each array becomes a
reference (`{"artifact_id", "url", "media_type", "size", "dtype", "shape"}`) to
that artifact, which a later job can also take by id. `return: "auto"` renders
inline, and falls back to references when the inline JSON would be larger than
`limits.inline_result_bytes`.

Per image (`results[i]`):
- segment: `{width, height, prompts: [{prompt, masks, instances: [{box, score, mask}]}]}`;
  `masks` holds one encoded mask per instance (`output_format`), `mask` is its index.
- detect: `{width, height, boxes, scores, labels}` (xyxy pixels of the input).
- depth: `{width, height, min, max, depth}`; `depth` is the float32 array
  (`array_format`), or with `depth_format` `png16` / `color` a PNG
  `{"media_type": "image/png", "base64"}` (16-bit grey scaled min..max to 0..65535,
  or an 8-bit colourised preview, near = bright).
- embed: `{dim, embedding, patches?}` (arrays in `array_format`).
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request

from pixelpool.api.errors import ApiError
from pixelpool.api.state import AppState
from pixelpool.api.vision.artifacts import (
    NPY_MEDIA_TYPE,
    ROUTE_NAME,
    should_store,
    store_bytes,
)
from pixelpool.api.vision.encode import MAX_TOLERANCE, cv2, encode_array, encode_masks
from pixelpool.jobs.spec import JobRecord, JobStatus

PNG_MEDIA_TYPE = "image/png"
DEPTH_FORMATS: tuple[str, ...] = ("array", "png16", "color")


class OutputOptions(BaseModel):
    """How a vision result is encoded (every vision route takes these fields)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    output_format: Literal["dense", "rle", "polygons"] = Field(
        "dense", description="masks: dense 0/1 arrays, COCO RLE, or polygons"
    )
    tolerance: float = Field(
        0.0, ge=0, le=MAX_TOLERANCE, allow_inf_nan=False,
        description="polygons: simplification tolerance in pixels (0: exact contour)",
    )  # fmt: skip
    array_format: Literal["list", "npy"] = Field(
        "list", description="arrays (dense masks, depth, features): nested lists or base64 .npy"
    )
    depth_format: Literal["array", "png16", "color"] = Field(
        "array", description="depth: float array, 16-bit PNG, or a colourised PNG preview"
    )
    return_mode: Literal["auto", "inline", "artifact"] = Field(
        "auto", alias="return",
        description="arrays inline, by artifact reference, or auto (references when large)",
    )  # fmt: skip


OUTPUT_FIELDS = frozenset({"output_format", "tolerance", "array_format", "depth_format", "return"})


def split_output(body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the op's options, the output options) of a request body's fields."""
    output = {k: v for k, v in body.items() if k in OUTPUT_FIELDS}
    return {k: v for k, v in body.items() if k not in OUTPUT_FIELDS}, output


# --- arrays of the job ------------------------------------------------------------------


class JobArrays:
    """The job's named `.npy` artifacts, loaded on demand."""

    def __init__(self, state: AppState, request: Request, record: JobRecord) -> None:
        self.state, self.request, self.record = state, request, record
        self.meta = {a["name"]: a for a in record.result.get("artifacts", []) if a.get("name")}

    async def load(self, name: str) -> np.ndarray:
        meta = self.meta.get(name)
        store = self.state.jobs.artifacts
        art = await store.get(meta["id"]) if meta else None
        data = await store.read(art) if art is not None else None
        if data is None:
            raise ApiError(410, f"job {self.record.id}: result has expired")
        return await asyncio.to_thread(np.load, io.BytesIO(data), allow_pickle=False)

    def reference(self, name: str) -> dict[str, Any]:
        meta = self.meta.get(name)
        if meta is None:
            raise ApiError(410, f"job {self.record.id}: result has expired")
        url = str(self.request.url_for(ROUTE_NAME, artifact_id=meta["id"]))
        return {"artifact_id": meta["id"], "url": url, "media_type": NPY_MEDIA_TYPE,
                "size": meta["size"], "dtype": meta["dtype"], "shape": meta["shape"]}  # fmt: skip


# --- depth as PNG -----------------------------------------------------------------------


def _scaled(depth: np.ndarray, top: float) -> np.ndarray:
    lo, hi = float(depth.min()), float(depth.max())
    span = hi - lo if hi > lo else 1.0
    return np.clip((depth - lo) / span * top + 0.5, 0, top)


def depth_png(depth: np.ndarray, fmt: str) -> bytes:
    """`png16`: 16-bit grey, min..max -> 0..65535; `color`: an 8-bit inferno preview."""
    if fmt == "png16":
        image = _scaled(depth, 65535).astype(np.uint16)
    else:
        cv = cv2()
        image = cv.applyColorMap(_scaled(depth, 255).astype(np.uint8), cv.COLORMAP_INFERNO)
    ok, buf = cv2().imencode(".png", image)
    if not ok:  # pragma: no cover - OpenCV encodes any uint8/uint16 array
        raise ValueError("PNG encoding failed")
    return buf.tobytes()


# --- rendering --------------------------------------------------------------------------


class Renderer:
    """Renders one job's images with fixed options; `by_ref` turns arrays into references."""

    def __init__(self, arrays: JobArrays, output: OutputOptions, by_ref: bool, owner: str | None):
        self.arrays, self.output, self.by_ref, self.owner = arrays, output, by_ref, owner

    async def array(self, name: str) -> Any:
        if self.by_ref:
            return self.arrays.reference(name)
        return encode_array(await self.arrays.load(name), self.output.array_format)

    async def masks(self, name: str) -> Any:
        if self.by_ref:
            return self.arrays.reference(name)
        stack = await self.arrays.load(name)
        if stack.shape[0] == 0:
            return []
        o = self.output
        return await asyncio.to_thread(
            encode_masks, stack, o.output_format, tolerance=o.tolerance, dense_format=o.array_format
        )

    async def depth(self, entry: dict[str, Any]) -> Any:
        fmt = self.output.depth_format
        if fmt == "array":
            return await self.array(entry["depth"])
        data = await asyncio.to_thread(depth_png, await self.arrays.load(entry["depth"]), fmt)
        if self.by_ref:
            a = self.arrays
            return await store_bytes(a.state, a.request, self.owner, data, PNG_MEDIA_TYPE)
        return {"media_type": PNG_MEDIA_TYPE, "base64": base64.b64encode(data).decode("ascii")}

    async def image(self, task: str, entry: dict[str, Any]) -> dict[str, Any]:
        out = dict(entry)
        if task == "segment":
            out["prompts"] = [
                {**p, "masks": await self.masks(p["masks"])} for p in entry["prompts"]
            ]
        elif task == "depth":
            out["depth"] = await self.depth(entry)
        elif task == "embed":
            out["embedding"] = await self.array(entry["embedding"])
            if "patches" in entry:
                out["patches"] = await self.array(entry["patches"])
        return out

    async def all(self, task: str, images: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [await self.image(task, entry) for entry in images]


def check_finished(record: JobRecord) -> None:
    """A job that has no result to render: the error a client should see."""
    if record.status is JobStatus.cancelled:
        raise ApiError(409, f"job {record.id} was cancelled")
    if record.status is JobStatus.expired:
        raise ApiError(410, f"job {record.id}: result has expired")
    if record.status is not JobStatus.completed:
        raise ApiError(500, f"inference failed: {record.error or record.status.value}")


def _json_size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":"), allow_nan=False))


async def render_results(
    state: AppState, request: Request, owner: str | None, record: JobRecord, output: OutputOptions
) -> list[dict[str, Any]]:
    """The per-image results of a completed vision job, encoded per `output`."""
    check_finished(record)
    info = record.result.get("info") or {}
    task = str(info.get("task") or record.spec.op)
    images = info.get("images") or []
    arrays = JobArrays(state, request, record)
    mode = output.return_mode
    if mode != "artifact":
        inline = await Renderer(arrays, output, False, owner).all(task, images)
        if mode == "inline":
            return inline
        size = await asyncio.to_thread(_json_size, inline)
        if not should_store(size, mode, state.settings.limits.inline_result_bytes):
            return inline
    return await Renderer(arrays, output, True, owner).all(task, images)


async def render_result(
    state: AppState, request: Request, owner: str | None, record: JobRecord, output: OutputOptions
) -> dict[str, Any]:
    """A completed job as the response body: model, task, per-image `results`, timings."""
    results = await render_results(state, request, owner, record, output)
    info = record.result.get("info") or {}
    run_s = record.result.get("run_s")
    return {
        "job_id": record.id,
        "model": record.spec.model["name"],
        "task": info.get("task") or record.spec.op,
        "architecture": info.get("architecture") or record.spec.model.get("architecture"),
        "results": results,
        "inference_time_ms": round(run_s * 1000, 3) if run_s is not None else None,
    }
