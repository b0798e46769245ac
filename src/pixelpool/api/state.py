"""What the routes share: settings, registry, job service, scheduler, event bus, keys."""

from __future__ import annotations

import time
from collections import Counter
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from pixelpool.api.metrics import Metrics
from pixelpool.api.ratelimit import RateLimiter
from pixelpool.config import Settings
from pixelpool.engine.scheduler import Scheduler
from pixelpool.jobs.events import EventBus
from pixelpool.jobs.keys import KeyStore
from pixelpool.jobs.service import JobService
from pixelpool.registry.registry import Registry

# The job owner of the request being served, set by AuthGate (None: auth off or no
# credential). Lets "the default model" mean the caller's own, on every dialect,
# without threading the caller through every spec builder.
current_owner: ContextVar[str | None] = ContextVar("pixelpool_owner", default=None)


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
    metrics: Metrics = field(default_factory=Metrics)  # the app's own (see create_app)
    # Per-key default models set with /switch-model by non-admin keys (until restart).
    preferences: dict[str, str] = field(default_factory=dict)
    # Per owner: open WebSocket connections that asked for round-trip caches.
    cache_listeners: Counter[str | None] = field(default_factory=Counter)

    def default_model(self) -> str | None:
        """The model a request without one gets: the caller's own choice, else the
        server's (`server.default_model`; None: the registry's first)."""
        owner = current_owner.get()
        mine = self.preferences.get(owner) if owner is not None else None
        return mine or self.settings.server.default_model


def get_state(request: Request) -> AppState:
    return request.app.state.pixelpool


# A route parameter annotated `State` gets the app's state (one definition for every router).
State = Annotated[AppState, Depends(get_state)]
