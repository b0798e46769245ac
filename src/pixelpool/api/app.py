"""The FastAPI application: builds every layer at start-up and tears it down at exit."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from pixelpool import __version__
from pixelpool.api import health, native
from pixelpool.api.errors import install_error_handlers
from pixelpool.api.limits import BodyLimitMiddleware
from pixelpool.api.state import AppState
from pixelpool.config import Settings
from pixelpool.engine.pool import build_scheduler
from pixelpool.jobs.artifacts import ArtifactStore
from pixelpool.jobs.events import EventBus
from pixelpool.jobs.service import JobService
from pixelpool.jobs.store import Database, JobStore
from pixelpool.registry.registry import Registry

log = logging.getLogger(__name__)

MAINTENANCE_S = 60.0


async def _maintenance(state: AppState) -> None:
    """Expire old results and pick up models added or removed on disk."""
    while True:
        await asyncio.sleep(MAINTENANCE_S)
        try:
            await state.jobs.store.expire(time.time())
            await state.jobs.artifacts.purge_expired()
            await asyncio.to_thread(state.registry.scan)
        except Exception:
            log.exception("maintenance pass failed")


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    data_dir = settings.server.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    registry = Registry(settings.server.models_dir, data_dir / "registry.db")
    result = await asyncio.to_thread(registry.scan)
    log.info("found %d models in %s", result.total, settings.server.models_dir)
    db = Database(settings.job_store_path)
    bus = EventBus()
    jobs = JobService(
        settings,
        JobStore(db),
        ArtifactStore(db, data_dir / "artifacts", settings.storage.ttl_s),
        bus,
    )
    scheduler = build_scheduler(settings, jobs)
    jobs.attach(scheduler)
    state = AppState(settings, registry, jobs, scheduler, bus)
    app.state.pixelpool = state
    await scheduler.start()
    await jobs.recover()
    maintenance = asyncio.create_task(_maintenance(state))
    try:
        yield
    finally:
        maintenance.cancel()
        await scheduler.stop()
        await jobs.drain()
        db.close()
        registry.close()


def create_app(settings: Settings) -> FastAPI:
    app = FastAPI(
        title="pixelpool",
        version=__version__,
        description="Self-hosted inference server for image models.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    if settings.server.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.server.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
        )
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.server.max_body_bytes)
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(native.router)
    return app
