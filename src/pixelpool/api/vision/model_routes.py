"""The Vision Models API's model management: `/models/status`, `/models/load`,
`/models/unload`, `/models/unload-all`.

A model type is served by an installed model of its task (the request's `model`,
else the first installed). Loading and unloading are the scheduler's per-device
cache commands (as `/api/models/{op}`), so a loaded model is the one jobs use, and
the admin scope is required. `device` is a device id (`cpu`, `cuda0`) or a kind
(`cuda`: every CUDA device); absent, every device that serves the vision family.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import Field

from pixelpool.api import openapi_docs as docs
from pixelpool.api.auth import Caller
from pixelpool.api.errors import ApiError
from pixelpool.api.state import AppState, State
from pixelpool.api.validation import Name, RequestModel
from pixelpool.api.vision.jobs import FAMILY, resolve_vision_model
from pixelpool.api.vision.types import MODEL_TYPES, op_of
from pixelpool.families.vision import task_of
from pixelpool.registry.entry import ModelEntry

router = APIRouter(tags=["vision models API"])


class LoadRequest(RequestModel):
    model_type: Name = Field(description="sam3, grounding-dino, depth-anything or dinov3")
    device: Name | None = Field(None, description="a device id or kind (cuda, cpu); default all")
    model: Name | None = Field(None, description="default: the first installed of the type")


def installed(state: AppState, op: str) -> list[ModelEntry]:
    return [e for e in state.registry.entries()
            if e.family == FAMILY and task_of(e.architecture) == op]  # fmt: skip


def where_loaded(devices: list[dict[str, Any]], entry: ModelEntry) -> list[dict[str, Any]]:
    """The devices whose cache holds the model: tier (device / ram), bytes, pinned."""
    key = entry.to_wire()["path"]
    found = []
    for d in devices:
        for m in d.get("cache", {}).get("models", []):
            if m["key"] == key:
                found.append({"device": d["id"], "tier": m["tier"], "memory_bytes": m["bytes"],
                              "pinned": m["pinned"]})  # fmt: skip
    return found


def type_status(state: AppState, model_type: str, devices: list[dict[str, Any]]) -> dict[str, Any]:
    models = installed(state, MODEL_TYPES[model_type])
    entries = []
    for entry in models:
        where = where_loaded(devices, entry)
        entries.append({"name": entry.name, "architecture": entry.architecture,
                        "size_bytes": entry.size_bytes, "loaded": bool(where), "devices": where,
                        "memory_bytes": sum(w["memory_bytes"] for w in where)})  # fmt: skip
    loaded = [e for e in entries if e["loaded"]]
    return {
        "model_type": model_type,
        "task": MODEL_TYPES[model_type],
        "installed": bool(models),
        "model": models[0].name if models else None,
        "loaded": bool(loaded),
        "device": loaded[0]["devices"][0]["device"] if loaded else None,
        "memory_bytes": sum(e["memory_bytes"] for e in entries),
        "models": entries,
    }


@router.get("/models/status", responses=docs.detail(*docs.AUTH))
async def models_status(state: State, caller: Caller) -> dict[str, Any]:
    """Each model type: the installed models that serve it, where each is loaded, memory."""
    devices = state.scheduler.snapshot()
    return {"models": {t: type_status(state, t, devices) for t in MODEL_TYPES}}


def device_ids(state: AppState, device: str | None) -> list[str | None]:
    """The devices a command goes to: None (all), one id, or every device of a kind."""
    if device is None:
        return [None]
    slots = state.scheduler.snapshot()
    if any(d["id"] == device for d in slots):
        return [device]
    kind = device.split(":")[0]
    ids = [d["id"] for d in slots if d["kind"] == kind]
    if not ids:
        known = ", ".join(d["id"] for d in slots)
        raise ApiError(404, f"device: no such device {device!r}; devices: {known}", "device")
    return list(ids)


async def cache_command(
    state: AppState, op: str, entry: ModelEntry, device: str | None
) -> list[dict[str, Any]]:
    reports = []
    for device_id in device_ids(state, device):
        try:
            reports += await state.scheduler.admin(device_id, op, FAMILY, entry.to_wire())
        except KeyError as exc:
            raise ApiError(404, f"device: no such device {device_id!r}", "device") from exc
    failed = [r for r in reports if r["error"]]
    if failed:
        detail = "; ".join(f"{r['device']}: {r['error']}" for r in failed)
        raise ApiError(409, f"{op} {entry.name} failed on {detail}")
    return reports


async def _load_or_unload(state: AppState, op: str, req: LoadRequest) -> dict[str, Any]:
    task = op_of(req.model_type)
    entry = resolve_vision_model(state, task, req.model)
    await cache_command(state, op, entry, req.device)
    where = where_loaded(state.scheduler.snapshot(), entry)
    status = "loaded" if op == "load" else "unloaded"
    return {"model_type": req.model_type, "model": entry.name, "status": status,
            "devices": where}  # fmt: skip


ADMIN_RESPONSES = docs.detail(400, *docs.SCOPED, 404, 409, 422)


@router.post("/models/load", responses=ADMIN_RESPONSES)
async def load_model(req: LoadRequest, state: State, caller: Caller) -> dict[str, Any]:
    """Load the model serving `model_type` onto `device` (admin scope)."""
    caller.require("admin")
    return await _load_or_unload(state, "load", req)


@router.post("/models/unload", responses=ADMIN_RESPONSES)
async def unload_model(req: LoadRequest, state: State, caller: Caller) -> dict[str, Any]:
    """Drop the model serving `model_type` from `device`'s cache (admin scope)."""
    caller.require("admin")
    return await _load_or_unload(state, "unload", req)


@router.post("/models/unload-all", responses=docs.detail(*docs.SCOPED, 409))
async def unload_all(state: State, caller: Caller) -> dict[str, Any]:
    """Drop every vision model from every device's cache (admin scope)."""
    caller.require("admin")
    devices = state.scheduler.snapshot()
    unloaded = []
    for entry in state.registry.entries():
        if entry.family == FAMILY and where_loaded(devices, entry):
            await cache_command(state, "unload", entry, None)
            unloaded.append(entry.name)
    return {"status": "unloaded", "unloaded": unloaded}
