"""Liveness and readiness: answered from memory, in milliseconds, whatever the load.

`/health` also carries what the self-hosted desktop client reads (`status` is
`healthy` once a worker is up and a model is installed, else `no_model_loaded`;
`current_model`, `available_models`, GPU facts; `ip_adapter_loaded`: an IP-Adapter
for the current model's architecture is installed, so a `reference_image` is used
rather than refused; the worker loads it with the first such request). No model
work, no database.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from pixelpool.api.state import AppState, State
from pixelpool.registry.registry import ModelNotFound

router = APIRouter(tags=["health"])


def current_model(state: AppState) -> str | None:
    """The model a request without one gets (the caller's, `server.default_model`, else
    the first)."""
    try:
        return state.registry.default_entry(state.default_model()).name
    except ModelNotFound:
        return None


def ip_adapter_ready(state: AppState) -> bool:
    """Whether a request without a model that sends a reference image gets an IP-Adapter."""
    try:
        entry = state.registry.default_entry(state.default_model())
    except LookupError:  # no model, or a default of another family
        return False
    return state.registry.ip_adapter(entry.architecture) is not None


def loaded_paths(devices: list[dict[str, Any]]) -> set[str]:
    """Paths of the models some device holds (any tier)."""
    return {m["key"] for d in devices for m in d.get("cache", {}).get("models", [])}


def health_body(state: AppState) -> dict[str, Any]:
    devices = state.scheduler.snapshot()
    gpus = [d for d in devices if d.get("kind") == "cuda"]
    names = [e.name for e in state.registry.entries()]
    serving = state.scheduler.ready and bool(names)
    return {
        "status": "healthy" if serving else "no_model_loaded",
        "uptime_s": round(time.time() - state.started, 1),
        "ready": state.scheduler.ready,
        "current_model": current_model(state),
        "available_models": names,
        "loaded_models": len(loaded_paths(devices)),
        "queue_depth": state.scheduler.queue_depth(),
        "ip_adapter_loaded": ip_adapter_ready(state),
        "cuda_available": bool(gpus),
        "gpu_name": gpus[0]["name"] if gpus else None,
        "vram_allocated_gb": round(
            sum(d.get("cache", {}).get("used_bytes", 0) for d in gpus) / 2**30, 3
        ),
        # The Vision Models API's GPU / memory facts, per device.
        "gpu_count": len(gpus),
        "devices": [_device_memory(d) for d in devices],
        **storage_info(state),
    }


def storage_info(state: AppState) -> dict[str, Any]:
    """Free space where jobs are stored; `storage_low`: new jobs are refused (503)."""
    space = state.jobs.space
    free = space.free_bytes()  # one reading for both fields
    return {"storage_free_gb": round(free / 2**30, 3), "storage_low": space.low(free)}


def _device_memory(device: dict[str, Any]) -> dict[str, Any]:
    cache = device.get("cache", {})
    return {
        "device": device.get("id"),
        "kind": device.get("kind"),
        "name": device.get("name"),
        "ready": device.get("ready"),
        "memory_total_gb": round(device.get("total_memory_bytes", 0) / 2**30, 3),
        "memory_used_gb": round(cache.get("used_bytes", 0) / 2**30, 3),
        "memory_budget_gb": round((cache.get("budget_bytes") or 0) / 2**30, 3),
        "ram_cache_used_gb": round(cache.get("ram_used_bytes", 0) / 2**30, 3),
    }


@router.get("/health")
async def health(state: State) -> dict[str, Any]:
    return health_body(state)


@router.get(
    "/ready",
    responses={
        503: {
            "description": "No worker is ready yet, or too little disk is free to accept "
            "jobs (`storage_low`); the same body, ready: false",
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    },
)
async def ready(state: State) -> JSONResponse:
    storage = storage_info(state)
    ok = state.scheduler.ready and not storage["storage_low"]
    body = {"ready": ok, "workers": sum(s.ready for s in state.scheduler.slots), **storage}
    return JSONResponse(body, status_code=200 if ok else 503)
