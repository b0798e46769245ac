"""Build the engine from settings: one worker per selected device, behind a scheduler."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from pixelpool.config import Settings
from pixelpool.engine.backend import Backend, make_backend
from pixelpool.engine.devices import DeviceInfo
from pixelpool.engine.scheduler import Scheduler
from pixelpool.engine.slot import Slot
from pixelpool.engine.task import EngineListener

GIB = 1 << 30


def worker_options(settings: Settings, device: DeviceInfo) -> dict[str, Any]:
    cfg = settings.devices.get(device.id)

    def gib(value: float | None) -> int | None:
        return int(value * GIB) if value is not None else None

    return {
        "dtype": cfg.dtype if cfg else "auto",
        "channels_last": cfg.channels_last if cfg else None,
        "compile": cfg.compile if cfg else False,
        "compile_warmup": [list(s) for s in cfg.compile_warmup] if cfg else [],
        "compile_cache_size": cfg.compile_cache_size if cfg else 8,
        "overlap_decode": cfg.overlap_decode if cfg else "auto",
        "stream_results": cfg.stream_results if cfg else "auto",
        "threads": cfg.threads if cfg else None,
        "budget_bytes": gib(cfg.vram_budget_gb) if cfg else None,
        "ram_budget_bytes": gib(cfg.ram_budget_gb) if cfg else None,
        "memory_limit_bytes": gib(cfg.memory_limit_gb) if cfg else None,
        "pinned": [],  # resolved to paths and sent by the app once the registry is up
        "log_level": settings.server.log_level,
        "progress_interval_s": settings.scheduler.progress_interval_ms / 1000,
        "batch_invariant": settings.scheduler.batch_invariant,
        "log_format": settings.server.log_format,
    }


def activation_scale(dtype: str, device_kind: str) -> float:
    """Activation bytes against the float32 the cost estimates assume: half for 16-bit
    dtypes (a device's "auto" is float16 or bfloat16 on CUDA, float32 elsewhere)."""
    if dtype == "auto":
        return 0.5 if device_kind == "cuda" else 1.0
    return 0.5 if dtype in ("float16", "bfloat16") else 1.0


ModelPaths = Callable[[], Sequence[str]]


def build_scheduler(
    settings: Settings, listener: EngineListener, models: ModelPaths = tuple
) -> Scheduler:
    """One slot per device the backend (`cluster.backend`) finds, behind one scheduler.
    `models`: the registry's model paths, asked again at each rediscovery (a cluster's
    nodes each say which they have)."""
    backend = make_backend(settings, lambda device: worker_options(settings, device))
    devices = backend.devices(models())
    if not devices:
        raise RuntimeError("no device is enabled: enable one under [devices.<id>]")

    def slot(device: DeviceInfo) -> Slot:
        config = settings.devices.get(device.id)
        available = backend.models_on(device)
        scale = activation_scale(config.dtype if config else "auto", device.kind)
        if config is None:
            return Slot(backend.make(device), ["*"], models=available, activation_scale=scale)
        served = frozenset(config.families) if config.families is not None else None
        return Slot(backend.make(device), list(config.capabilities), served, models=available,
                    activation_scale=scale)  # fmt: skip

    interval = backend.discover_interval_s
    return Scheduler(
        [slot(d) for d in devices],
        listener,
        settings.scheduler,
        respawn=lambda s: backend.make(s.handle.device),
        nodes=backend.nodes,
        discover=_discovery(backend, models, slot) if interval is not None else None,
        discover_interval_s=interval or 0.0,
        membership=backend.membership(),
    )


def _discovery(
    backend: Backend, models: ModelPaths, slot: Callable[[DeviceInfo], Slot]
) -> Callable[[Scheduler, bool], Any]:
    """Ask the backend again: new machines' devices join, and each slot learns again
    which models its machine has (`refresh`: ask every machine, not only new ones); a
    device not found any more is marked gone."""

    async def discover(scheduler: Scheduler, refresh: bool) -> None:
        devices = await asyncio.to_thread(backend.devices, list(models()), refresh)
        known = {s.device_id: s for s in scheduler.slots}
        for device in devices:
            if device.id in known:
                known[device.id].models = backend.models_on(device)
            else:
                await scheduler.add_slot(slot(device))
        scheduler.seen({d.id for d in devices})  # the others' machines are gone

    return discover
