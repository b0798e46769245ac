"""The worker process: owns one device, its model cache, and runs batches.

A reader thread takes messages from the engine (runs, cancellations) so that a
cancel arrives while a batch is running; the main thread runs batches one at a time.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
import traceback
from multiprocessing.connection import Connection
from typing import Any

from pixelpool.engine.messages import (
    BatchDone,
    BatchStarted,
    CancelJob,
    Heartbeat,
    ItemFailed,
    ItemResult,
    Progress,
    Ready,
    RunBatch,
    Stop,
)

log = logging.getLogger("pixelpool.worker")

HEARTBEAT_S = 2.0
CPU_DEFAULT_BUDGET_FRACTION = 0.5
CUDA_MARGIN_BYTES = 1536 << 20


class Worker:
    def __init__(self, device: dict[str, Any], options: dict[str, Any], conn: Connection) -> None:
        self.device = device
        self.options = options
        self.conn = conn
        self._send_lock = threading.Lock()
        self._runs: queue.Queue[RunBatch | None] = queue.Queue()
        self._cancelled: set[str] = set()
        self._stopping = threading.Event()

    def send(self, message: object) -> None:
        with self._send_lock:
            self.conn.send(message)

    def serve(self) -> None:
        import torch  # imported here: only worker processes load torch and the device

        from pixelpool.engine.cache import ModelCache

        if self.options.get("threads"):
            torch.set_num_threads(int(self.options["threads"]))
        self.torch_device = self.device["torch_device"]
        self.cache = ModelCache(self._budget(torch), set(self.options.get("pinned", [])))
        threading.Thread(target=self._read, name="reader", daemon=True).start()
        threading.Thread(target=self._heartbeat, name="heartbeat", daemon=True).start()
        self.send(Ready(device=self.device, pid=os.getpid()))
        while (run := self._runs.get()) is not None:
            self._run(run)

    def _budget(self, torch: Any) -> int:
        configured = self.options.get("budget_bytes")
        if configured:
            return int(configured)
        if self.device["kind"] == "cuda":
            _free, total = torch.cuda.mem_get_info(self.device["index"])
            return max(total - CUDA_MARGIN_BYTES, total // 2)
        return int(self.device["total_memory_bytes"] * CPU_DEFAULT_BUDGET_FRACTION)

    def _read(self) -> None:
        while True:
            try:
                message = self.conn.recv()
            except (EOFError, OSError):
                message = Stop()  # the engine is gone: finish up
            if isinstance(message, RunBatch):
                self._runs.put(message)
            elif isinstance(message, CancelJob):
                self._cancelled.add(message.job_id)
            elif isinstance(message, Stop):
                self._stopping.set()
                self._runs.put(None)
                return

    def _heartbeat(self) -> None:
        while not self._stopping.wait(HEARTBEAT_S):
            try:
                self.send(Heartbeat(time.time()))
            except OSError:
                return

    def _run(self, run: RunBatch) -> None:
        from pixelpool.pipelines import get_family
        from pixelpool.pipelines.base import Cancelled

        started = time.perf_counter()
        job_ids = [item.job_id for item in run.items]
        items = [i for i in run.items if i.job_id not in self._cancelled]
        for job_id in set(job_ids) - {i.job_id for i in items}:
            self.send(ItemFailed(job_id, "cancelled before start", "cancelled"))
        try:
            if items:
                family = get_family(run.family)
                key = run.model["path"]
                loaded = self.cache.get(
                    key, lambda: family.load(run.model, self.torch_device, self.options["dtype"])
                )
                self.send(BatchStarted(run.batch_id, time.perf_counter() - started))
                live = [i.job_id for i in items]

                def progress(
                    step: int, total: int, stage: str, previews: list[Any] | None = None
                ) -> None:
                    self.send(Progress(run.batch_id, live, step, total, stage, previews))

                def cancel() -> bool:
                    return all(job_id in self._cancelled for job_id in live)

                results = family.run(loaded, items, progress, cancel)
                for item, result in zip(items, results, strict=True):
                    if item.job_id in self._cancelled:
                        self.send(ItemFailed(item.job_id, "cancelled", "cancelled"))
                    else:
                        self.send(ItemResult(item.job_id, result))
        except Cancelled:
            for item in items:
                self.send(ItemFailed(item.job_id, "cancelled", "cancelled"))
        except Exception as exc:
            kind = "oom" if "out of memory" in str(exc).lower() else "error"
            log.error("batch %s failed: %s", run.batch_id, traceback.format_exc())
            for item in items:
                self.send(ItemFailed(item.job_id, f"{type(exc).__name__}: {exc}", kind))
        finally:
            self._cancelled.difference_update(job_ids)
        self.send(BatchDone(run.batch_id, time.perf_counter() - started, self.cache.snapshot()))


def worker_main(device: dict[str, Any], options: dict[str, Any], conn: Connection) -> None:
    """Process entry point (spawned: a clean interpreter per device)."""
    logging.basicConfig(level=options.get("log_level", "INFO").upper())
    if device["kind"] != "cuda":
        os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    Worker(device, options, conn).serve()
