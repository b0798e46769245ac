"""What the routes share: settings, registry, job service, scheduler, event bus, keys."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from fastapi import Request

from pixelpool.api.ratelimit import RateLimiter
from pixelpool.config import Settings
from pixelpool.engine.scheduler import Scheduler
from pixelpool.jobs.events import EventBus
from pixelpool.jobs.keys import KeyStore
from pixelpool.jobs.service import JobService
from pixelpool.registry.registry import Registry


@dataclass
class AppState:
    settings: Settings
    registry: Registry
    jobs: JobService
    scheduler: Scheduler
    bus: EventBus
    keys: KeyStore
    started: float = field(default_factory=time.time)
    limiter: RateLimiter = field(default_factory=RateLimiter)


def get_state(request: Request) -> AppState:
    return request.app.state.pixelpool
