"""Gauges read at scrape time: the queue, the workers, their caches, device memory and
the data dir's free space.

Reading the live state when Prometheus asks is cheaper than keeping gauges up to
date on every change, and never drifts from what `/api/status` shows.

Device memory: on CUDA devices through NVML (`nvidia-ml-py`, imported on the first
scrape that has a CUDA worker; NVML does not initialise CUDA, so the HTTP process
still never touches the device); on every device of this host, the worker process's
resident memory (`WorkerHandle.rss_bytes`), which is what a CPU worker's models and
batches take. Devices on other machines (the Ray backend) have neither here.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from pixelpool.api.state import AppState
    from pixelpool.engine.slot import Slot

log = logging.getLogger(__name__)


class _Nvml:
    """NVML opened once, on first use; unavailable (no driver, no package): no readings."""

    def __init__(self) -> None:
        self._lib: Any = None
        self._failed = False

    def read(self, index: int) -> tuple[int, int, float] | None:
        """(used bytes, total bytes, utilisation 0..1) of the GPU, or None."""
        if self._failed:
            return None
        try:
            if self._lib is None:
                import pynvml  # nvidia-ml-py

                pynvml.nvmlInit()
                self._lib = pynvml
            handle = self._lib.nvmlDeviceGetHandleByIndex(index)
            memory = self._lib.nvmlDeviceGetMemoryInfo(handle)
            busy = self._lib.nvmlDeviceGetUtilizationRates(handle).gpu
            return int(memory.used), int(memory.total), busy / 100.0
        except Exception as exc:  # no NVML here: say so once, then skip these gauges
            log.warning("device memory metrics unavailable (NVML: %s)", exc)
            self._failed = True
            return None


class StateCollector(Collector):
    def __init__(self, state: AppState) -> None:
        self.state = state
        self.nvml = _Nvml()

    def collect(self) -> Iterator[Metric]:
        yield self._queue()
        yield from self._workers(self.state.scheduler.slots)
        yield GaugeMetricFamily(
            "pixelpool_storage_free_bytes",
            "Free space on the disk where jobs are stored (new jobs get 503 under "
            "storage.min_free_mb).",
            value=self.state.jobs.space.free_bytes(),
        )

    def _queue(self) -> Metric:
        depth = GaugeMetricFamily(
            "pixelpool_queue_depth",
            "Jobs waiting in the queue, by priority and key name.",
            labels=["priority", "key"],
        )
        counts = Counter((t.priority, t.owner or "") for t in self.state.scheduler.queue.tasks())
        for (priority, key), n in sorted(counts.items()):
            depth.add_metric([str(priority), key], n)
        return depth

    def _workers(self, slots: list[Slot]) -> Iterator[Metric]:
        def gauge(name: str, doc: str, labels: tuple[str, ...] = ("device",)) -> Any:
            return GaugeMetricFamily(name, doc, labels=list(labels))

        up = gauge("pixelpool_worker_ready", "1 when the device's worker is ready.")
        running = gauge("pixelpool_jobs_running", "Jobs running on the device.")
        restarts = CounterMetricFamily(
            "pixelpool_worker_restarts", "Workers started again after one died.", labels=["device"]
        )
        cached = gauge("pixelpool_model_cache_bytes", "Bytes of models held, by tier.",
                       ("device", "tier"))  # fmt: skip
        budget = gauge("pixelpool_model_cache_budget_bytes", "Model cache budget, by tier.",
                       ("device", "tier"))  # fmt: skip
        models = gauge("pixelpool_models_cached", "Models held, by tier.", ("device", "tier"))
        rss = gauge("pixelpool_worker_resident_memory_bytes", "The worker process's RSS.")
        used = gauge("pixelpool_device_memory_used_bytes", "GPU memory in use (NVML).")
        total = gauge("pixelpool_device_memory_total_bytes", "GPU memory (NVML).")
        busy = gauge("pixelpool_device_utilization_ratio", "GPU busy fraction, 0..1 (NVML).")
        for slot in slots:
            device = slot.device_id
            up.add_metric([device], 1.0 if slot.ready else 0.0)
            running.add_metric([device], len(slot.tasks()))
            restarts.add_metric([device], slot.restarts)
            cache = slot.cache
            tiers = Counter(m.get("tier") for m in cache.get("models", []))
            for tier, used_key, budget_key in (
                ("device", "used_bytes", "budget_bytes"),
                ("ram", "ram_used_bytes", "ram_budget_bytes"),
            ):
                cached.add_metric([device, tier], cache.get(used_key, 0))
                budget.add_metric([device, tier], cache.get(budget_key, 0))
                models.add_metric([device, tier], tiers.get(tier, 0))
            resident = slot.handle.rss_bytes()
            if resident is not None:
                rss.add_metric([device], resident)
            if slot.handle.device.kind == "cuda" and slot.handle.on_this_host:
                reading = self.nvml.read(slot.handle.device.index)
                if reading is not None:
                    used.add_metric([device], reading[0])
                    total.add_metric([device], reading[1])
                    busy.add_metric([device], reading[2])
        yield from (up, running, restarts, cached, budget, models, rss, used, total, busy)
