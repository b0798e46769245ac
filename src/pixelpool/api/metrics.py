"""Prometheus metrics, counted in the HTTP process.

Workers already tell the scheduler what they do (batch started with the model's
load time and source, results, cache snapshots with hit and eviction counts), so
every counter lives here, fed by the job service's events and the scheduler's
worker messages: no worker process holds a metric, and no multiprocess directory
is needed. Gauges (queue depth, running jobs, cache bytes, device memory) are read
at scrape time from the live state (`metrics_state.StateCollector`), so they are
always right and cost nothing between scrapes.

Each app has its own `CollectorRegistry` (several apps in one test process never
collide). Labels are bounded: operation, model *name*, device id, outcome, key
*name* (never the key; empty when auth is off), route template (never the raw path).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client.registry import Collector

from pixelpool.engine.messages import AdminDone, BatchDone, BatchStarted, Ready, RunBatch
from pixelpool.jobs.spec import JobRecord

if TYPE_CHECKING:
    from pixelpool.api.state import AppState
    from pixelpool.engine.slot import Slot

SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
           120.0, 300.0, 600.0)  # fmt: skip
LOAD_SECONDS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
HTTP_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0, 60.0)  # fmt: skip
LAG_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_SIZES = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
JOB = ("operation", "model")
JOB_ON_DEVICE = ("operation", "model", "device")
# Cache snapshot counters -> (metric attribute, tier label or None).
CACHE_COUNTS = {
    "hits": ("cache_hits", "device"),
    "ram_hits": ("cache_hits", "ram"),
    "misses": ("cache_misses", None),
    "evictions": ("cache_evictions", None),
    "offloads": ("cache_offloads", None),
}


def _job_labels(record: JobRecord) -> tuple[str, str]:
    return record.spec.op, str(record.spec.model.get("name", ""))


class Metrics:
    """The server's instruments and the hooks that move them."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.jobs_submitted = Counter(
            "pixelpool_jobs_submitted", "Jobs accepted, by key name.", [*JOB, "key"], registry=r
        )
        self.jobs = Counter(
            "pixelpool_jobs",
            "Jobs that ended, by outcome (completed, failed, cancelled).",
            [*JOB, "outcome"],
            registry=r,
        )
        self.jobs_requeued = Counter(
            "pixelpool_jobs_requeued",
            "Jobs put back in the queue (worker lost, out of memory).",
            list(JOB),
            registry=r,
        )
        self.images = Counter(
            "pixelpool_images", "Images produced by completed jobs.", list(JOB), registry=r
        )
        self.wait = Histogram(
            "pixelpool_job_wait_seconds",
            "Time from submission to the start of each run of a job.",
            list(JOB_ON_DEVICE),
            buckets=SECONDS,
            registry=r,
        )
        self.run = Histogram(
            "pixelpool_job_run_seconds",
            "Run time of completed jobs on their worker (from their batch's start).",
            list(JOB_ON_DEVICE),
            buckets=SECONDS,
            registry=r,
        )
        self.batch_size = Histogram(
            "pixelpool_batch_size",
            "Jobs per batch the scheduler started.",
            list(JOB_ON_DEVICE),
            buckets=BATCH_SIZES,
            registry=r,
        )
        self.model_load = Histogram(
            "pixelpool_model_load_seconds",
            "Time to bring a model to the device for a batch, by where it came from "
            "(ram: the RAM tier; disk: not cached).",
            ["device", "tier"],
            buckets=LOAD_SECONDS,
            registry=r,
        )
        self.cache_hits = Counter(
            "pixelpool_model_cache_hits",
            "Model cache hits, by the tier that held the model (device, ram).",
            ["device", "tier"],
            registry=r,
        )
        self.cache_misses = Counter(
            "pixelpool_model_cache_misses", "Models loaded from disk.", ["device"], registry=r
        )
        self.cache_evictions = Counter(
            "pixelpool_model_cache_evictions",
            "Models dropped from memory altogether to make room.",
            ["device"],
            registry=r,
        )
        self.cache_offloads = Counter(
            "pixelpool_model_cache_offloads",
            "Models moved from the device tier to the RAM tier.",
            ["device"],
            registry=r,
        )
        self.http_requests = Counter(
            "pixelpool_http_requests",
            "HTTP requests answered, by route template and status.",
            ["method", "route", "status"],
            registry=r,
        )
        self.http_seconds = Histogram(
            "pixelpool_http_request_duration_seconds",
            "Time until the response's headers, by route template.",
            ["route"],
            buckets=HTTP_SECONDS,
            registry=r,
        )
        self.rate_limited = Counter(
            "pixelpool_rate_limited",
            "Requests refused by the per-key rate limit.",
            ["key"],
            registry=r,
        )
        self.loop_lag = Histogram(
            "pixelpool_event_loop_lag_seconds",
            "How late the HTTP process's event loop fired a 0.25 s timer: the time it "
            "spent on work that blocked every request.",
            buckets=LAG_SECONDS,
            registry=r,
        )
        ProcessCollector(registry=r)  # process_*: this (the HTTP) process
        # Each device's last cache counts, to turn snapshots into increments.
        self._cache_seen: dict[str, dict[str, int]] = {}
        self._http_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._state_collector: Collector | None = None

    def bind(self, state: AppState) -> None:
        """Once the app's state exists: gauges read at scrape time from it."""
        from pixelpool.api.metrics_state import StateCollector

        if self._state_collector is not None:  # the app started again: read the new state
            self.registry.unregister(self._state_collector)
        self._state_collector = StateCollector(state)
        self.registry.register(self._state_collector)

    # --- the job service's events ---------------------------------------------------

    def on_job_event(self, record: JobRecord, kind: str, extra: dict[str, Any]) -> None:
        op, model = _job_labels(record)
        if kind == "queued":
            if extra.get("reason"):
                self.jobs_requeued.labels(op, model).inc()
            else:
                self.jobs_submitted.labels(op, model, record.owner or "").inc()
        elif kind == "started" and record.started is not None:
            device = record.device or ""
            self.wait.labels(op, model, device).observe(max(0.0, record.started - record.created))
        elif kind in ("completed", "failed", "cancelled"):
            self.jobs.labels(op, model, kind).inc()
            if kind == "completed":
                result = record.result or {}
                run_s = result.get("run_s")
                if isinstance(run_s, int | float):
                    self.run.labels(op, model, record.device or "").observe(run_s)
                images = sum(
                    1
                    for a in result.get("artifacts", [])
                    if str(a.get("media_type", "")).startswith("image/")
                )
                if images:
                    self.images.labels(op, model).inc(images)

    # --- the scheduler's worker messages ------------------------------------------------

    def on_worker_message(self, slot: Slot, message: object) -> None:
        device = slot.device_id
        match message:
            case RunBatch(model=model, items=items) if items:
                name = str(model.get("name", ""))
                self.batch_size.labels(items[0].op, name, device).observe(len(items))
            case BatchStarted(model_load_s=seconds, source=source) if source in ("ram", "disk"):
                self.model_load.labels(device, source).observe(seconds)
            case Ready(cache=cache):
                self._cache_seen[device] = {}  # a new worker counts from zero
                self._count_cache(device, cache)
            case BatchDone(cache=cache) | AdminDone(cache=cache):
                self._count_cache(device, cache)

    def _count_cache(self, device: str, cache: dict[str, Any]) -> None:
        seen = self._cache_seen.setdefault(device, {})
        for field, (attribute, tier) in CACHE_COUNTS.items():
            now = cache.get(field)
            if not isinstance(now, int):
                continue
            added = now - seen.get(field, 0)
            seen[field] = now
            if added > 0:
                counter = getattr(self, attribute)
                (counter.labels(device, tier) if tier else counter.labels(device)).inc(added)

    # --- the HTTP layer ------------------------------------------------------------

    def http_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """Per request, so the labelled children are looked up once and kept (bounded:
        route templates times methods times statuses)."""
        key = (method, route, status)
        children = self._http_children.get(key)
        if children is None:
            children = self._http_children[key] = (
                self.http_requests.labels(method, route, str(status)),
                self.http_seconds.labels(route),
            )
        children[0].inc()
        children[1].observe(seconds)

    def refused(self, key: str | None) -> None:
        self.rate_limited.labels(key or "").inc()
