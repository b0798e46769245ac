"""The FastAPI application: builds every layer at start-up and tears it down at exit."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse

from pixelpool import __version__
from pixelpool.api import (
    a1111,
    admin,
    bgremove,
    events,
    health,
    infer,
    keys,
    native,
    observe,
    openai,
    openapi_docs,
    selfhosted,
    status_page,
    tag,
    upscale,
)
from pixelpool.api.diffusion import native as native_diffusion
from pixelpool.api.errors import ErrorInfo, install_error_handlers, render_error
from pixelpool.api.guard import AuthGate
from pixelpool.api.limits import BodyLimitMiddleware
from pixelpool.api.loop_lag import watch_loop_lag
from pixelpool.api.memory import trim_when_idle
from pixelpool.api.metrics import Metrics
from pixelpool.api.state import AppState
from pixelpool.api.vision import artifacts as vision_artifacts
from pixelpool.api.vision import dialect as vision_dialect
from pixelpool.api.vision import native as vision_native
from pixelpool.config import Settings
from pixelpool.engine.pool import build_scheduler
from pixelpool.jobs import datalock
from pixelpool.jobs.artifacts import RECENT_S, ArtifactStore
from pixelpool.jobs.eventlog import EventLog
from pixelpool.jobs.events import MEMORY_S, EventBus
from pixelpool.jobs.keys import KeyStore, keys_path
from pixelpool.jobs.service import JobService
from pixelpool.jobs.store import Database, JobStore, StoreBusy
from pixelpool.registry.registry import Registry

log = logging.getLogger(__name__)
# Finished jobs' events and results stay in memory this long (then only in the store):
# memory is released again once that has passed after a drain.
KEEP_FINISHED_S = max(MEMORY_S, RECENT_S)
SETTLE_S = KEEP_FINISHED_S + 2.0


async def _maintenance(state: AppState) -> None:
    """Expire old results and pick up models added or removed on disk."""
    while True:
        await asyncio.sleep(state.settings.storage.sweep_interval_s)
        try:
            await state.jobs.store.expire(time.time())
            await state.jobs.artifacts.purge_expired()
            await state.bus.purge()
            await asyncio.to_thread(state.registry.scan)
        except Exception:
            log.exception("maintenance pass failed")


def _forget_finished(state: AppState) -> None:
    """Once work drained: drop what memory holds of finished jobs that the store has too."""
    state.bus.prune()
    state.jobs.artifacts.prune()
    state.jobs.forget_finished(KEEP_FINISHED_S)


async def _warm_up(state: AppState) -> None:
    """Load each device's `onload` models and pin its `pinned` ones, once workers are up."""
    while not all(slot.ready for slot in state.scheduler.slots):
        await asyncio.sleep(0.2)
    for device_id, cfg in state.settings.devices.items():
        for op, names in (("load", cfg.onload), ("pin", cfg.pinned)):
            for name in names:
                try:
                    entry = state.registry.resolve(name)
                    reports = await state.scheduler.admin(
                        device_id, op, entry.family, entry.to_wire()
                    )
                except (LookupError, KeyError) as exc:
                    log.error("devices.%s: cannot %s %r: %s", device_id, op, name, exc)
                    continue
                for report in reports:
                    if report["error"]:
                        log.error(
                            "devices.%s: %s %s failed: %s", device_id, op, name, report["error"]
                        )


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    data_dir = settings.server.data_dir
    # First of all: one server per data dir (raises DataDirBusy naming the holder).
    lock = datalock.acquire(data_dir)
    try:
        async with _serving(app, settings):
            yield
    finally:
        lock.release()


@contextlib.asynccontextmanager
async def _serving(app: FastAPI, settings: Settings) -> AsyncIterator[None]:
    data_dir = settings.server.data_dir
    registry = Registry(settings.server.models_dir, data_dir / "registry.db")
    result = await asyncio.to_thread(registry.scan)
    log.info("found %d models in %s", result.total, settings.server.models_dir)
    if not settings.server.models_dir.is_dir():  # a typo in --models-dir, most likely
        log.warning(
            "the models dir %s does not exist: no model can run until it does "
            "(the next rescan finds what is put there)",
            settings.server.models_dir,
        )
    db = Database(settings.job_store_path)
    storage = settings.storage
    event_log = EventLog(db, interval_s=storage.events_flush_s, retain_s=storage.events_retain_s)
    bus = await EventBus.persistent(event_log, retain_s=storage.events_retain_s)
    jobs = JobService(
        settings,
        JobStore(db),
        ArtifactStore(db, data_dir / "artifacts", settings.storage.ttl_s),
        bus,
    )
    scheduler = build_scheduler(settings, jobs, registry.paths)
    jobs.attach(scheduler)
    keys = KeyStore(keys_path(data_dir))
    metrics: Metrics = app.state.metrics
    state = AppState(settings, registry, jobs, scheduler, bus, keys, metrics=metrics)
    jobs.observers.append(metrics.on_job_event)
    scheduler.watchers.append(metrics.on_worker_message)
    metrics.bind(state)
    app.state.pixelpool = state
    await scheduler.start()
    await jobs.recover()
    maintenance = asyncio.create_task(_maintenance(state))
    lag = asyncio.create_task(watch_loop_lag(metrics.loop_lag.observe))
    warmup = asyncio.create_task(_warm_up(state))
    trimmer = asyncio.create_task(
        trim_when_idle(lambda: jobs.active_count() > 0, lambda: _forget_finished(state), SETTLE_S)
    )
    try:
        yield
    finally:
        maintenance.cancel()
        lag.cancel()
        warmup.cancel()
        trimmer.cancel()
        await scheduler.stop()
        await jobs.drain()  # also writes the events still buffered
        db.close()
        keys.close()
        registry.close()


async def _store_busy(request: Request, exc: StoreBusy) -> JSONResponse:
    """Another process holds the job store's write lock: 503, come back later; never 500."""
    headers = {"Retry-After": str(exc.retry_after_s)}
    return render_error(request.app, request.url.path, ErrorInfo(503, str(exc)), headers)


def create_app(settings: Settings) -> FastAPI:
    app = FastAPI(
        title="pixelpool",
        version=__version__,
        description="Self-hosted inference server for image models.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = metrics = Metrics()  # this app's own registry
    # The last added runs first: the request observer (metrics, access log fields), CORS,
    # then the credential check, then the body limit.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.server.max_body_bytes)
    app.add_middleware(AuthGate)
    if settings.server.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.server.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
        )
    app.add_middleware(observe.RequestObserver, metrics=metrics)
    install_error_handlers(app)
    app.add_exception_handler(StoreBusy, _store_busy)  # type: ignore[arg-type]
    app.include_router(health.router)
    app.include_router(native_diffusion.router)  # before native: its enqueue paths win
    for family_api in (upscale, bgremove, tag):  # also before native
        app.include_router(family_api.router)
    app.include_router(vision_native.router)  # before native: its enqueue paths win
    app.include_router(native.router)
    app.include_router(vision_artifacts.router)
    app.include_router(events.router)
    app.include_router(admin.router)
    app.include_router(keys.router)
    app.include_router(infer.router)
    app.include_router(status_page.router)
    app.include_router(observe.router)
    openai.install(app)
    selfhosted.install(app)
    a1111.install(app)
    vision_dialect.install(app)
    openapi_docs.install(app)
    return app
