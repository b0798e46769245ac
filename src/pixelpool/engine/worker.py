"""The worker core: owns one device, its model cache, and runs batches.

It knows nothing of pipes, processes or clusters: a transport hands it the engine's
messages (`deliver`, from any thread, so a cancel lands while a batch runs) and gives
it a `send` callable for its replies. `serve` runs batches and cache commands one at
a time, in arrival order. Transports: `engine/pipe.py` (a local subprocess) and
`engine/ray_actor.py` (a Ray actor on any node of a cluster).
"""

from __future__ import annotations

import logging
import os
import queue
import resource
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from pixelpool import logs
from pixelpool.engine.finisher import Finisher, enabled
from pixelpool.engine.messages import (
    Admin,
    AdminDone,
    BatchDenoised,
    BatchDone,
    BatchStarted,
    CancelJob,
    ItemFailed,
    ItemResult,
    Progress,
    Ready,
    RunBatch,
    Stop,
)
from pixelpool.engine.progress import INTERVAL_S, CoalescedProgress
from pixelpool.engine.task import model_version
from pixelpool.pipelines.base import Cancelled, Pending, WorkItem

log = logging.getLogger("pixelpool.worker")

# Workers compute in bursts that can take every core; the HTTP process must still
# answer /health and status reads at once, so workers yield the CPU to it first.
WORKER_NICE = 5
CPU_DEFAULT_BUDGET_FRACTION = 0.5
RAM_TIER_DEFAULT_FRACTION = 0.25  # of system RAM, for accelerator devices
CUDA_MARGIN_BYTES = 1536 << 20
# torch's CUDA and CPU allocators; oneDNN says the last when it has no memory for a kernel.
OOM_MARKERS = (
    "out of memory",
    "can't allocate memory",
    "cannot allocate memory",
    "could not create a primitive",
)


def system_ram_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 0


def is_out_of_memory(exc: BaseException) -> bool:
    """Python's own MemoryError, or one of the libraries' messages."""
    return isinstance(exc, MemoryError) or any(m in str(exc).lower() for m in OOM_MARKERS)


def limit_memory(device: dict[str, Any], limit: int | None) -> None:
    """Cap a CPU worker's private memory (RLIMIT_DATA): allocations beyond it fail cleanly.

    Not applied to GPU workers, whose drivers map host memory in their own ways.
    """
    if not limit:
        return
    if device["kind"] != "cpu":
        log.warning("memory_limit_gb applies to CPU workers only; ignored on %s", device["id"])
        return
    _soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))


Send = Callable[[object], None]


class WorkerCore:
    """One device's worker, whatever carries its messages."""

    def __init__(self, device: dict[str, Any], options: dict[str, Any], send: Send) -> None:
        self.device = device
        self.options = options
        self.send = send
        self._inbox: queue.Queue[RunBatch | Admin | None] = queue.Queue()
        self._cancelled: set[str] = set()
        self.stopping = threading.Event()
        self._engine_gone = False  # its end of the transport closed: nobody to report to
        self.finisher: Finisher | None = None  # set by `open` where overlap_decode is on
        self.stream = False  # `stream_results`, set by `open`
        self._cache_lock = threading.RLock()

    def deliver(self, message: object) -> None:
        """Take one message from the engine (any thread): a cancel or stop acts at once,
        the rest queue for `serve`."""
        if isinstance(message, CancelJob):
            self._cancelled.add(message.job_id)
        elif isinstance(message, Stop):
            self.stopping.set()
            self._inbox.put(None)
        elif isinstance(message, RunBatch | Admin):
            self._inbox.put(message)
        else:
            log.warning("worker ignored an unknown message %s", type(message).__name__)

    def engine_gone(self) -> None:
        """The engine's end of the transport closed (its server stopped or died): stop
        the running batch at its next step and end, quietly, with nobody left to tell."""
        self._engine_gone = True
        self.deliver(Stop())

    def open(self) -> None:
        """Import torch, open the device and the model cache, then report Ready."""
        import torch  # imported here: only workers load torch and the device

        from pixelpool.engine.cache import ModelCache
        from pixelpool.pipelines import configure, get_family

        configure(self.options)
        self.torch = torch
        if self.options.get("threads"):
            torch.set_num_threads(int(self.options["threads"]))
        self.torch_device = self.device["torch_device"]
        self.cache = ModelCache(
            self._budget(),
            self._ram_budget(),
            set(self.options.get("pinned", [])),
            device=self.torch_device,
            move=lambda loaded, dev: get_family(loaded.family).move(loaded, dev),
        )
        if enabled(self.options.get("overlap_decode"), self.device["kind"]):
            self.finisher = Finisher(torch, self.torch_device)
        self.stream = enabled(self.options.get("stream_results"), self.device["kind"])
        self.send(Ready(self.device, os.getpid(), self.cache.budget_bytes, self._snapshot()))

    def serve(self) -> None:
        """Run queued batches and cache commands until Stop (call `open` first); a batch
        still decoding at Stop finishes and reports first."""
        try:
            while (message := self._inbox.get()) is not None:
                if isinstance(message, RunBatch):
                    self._run(message)
                else:
                    self._admin(message)
        finally:
            if self.finisher is not None:
                self.finisher.close()

    def _snapshot(self) -> dict[str, Any]:
        from pixelpool.pipelines import family_stats

        with self._cache_lock:  # the finisher's thread reads it while the next batch runs
            return {**self.cache.snapshot(), **family_stats()}

    def _budget(self) -> int:
        configured = self.options.get("budget_bytes")
        if configured:
            return int(configured)
        if self.device["kind"] == "cuda":
            _free, total = self.torch.cuda.mem_get_info(self.device["index"])
            return max(total - CUDA_MARGIN_BYTES, total // 2)
        return int(self.device["total_memory_bytes"] * CPU_DEFAULT_BUDGET_FRACTION)

    def _ram_budget(self) -> int:
        configured = self.options.get("ram_budget_bytes")
        if configured is not None:
            return int(configured)
        # On the CPU the device tier already is RAM: parking models there too is opt-in.
        return (
            0
            if self.device["kind"] == "cpu"
            else int(system_ram_bytes() * RAM_TIER_DEFAULT_FRACTION)
        )

    def _loaded(self, family_name: str, model: dict[str, Any]) -> Any:
        from pixelpool.pipelines import get_family

        family = get_family(family_name)
        with self._cache_lock:
            return self.cache.get(
                model["path"],
                lambda: family.load(model, self.torch_device, self.options["dtype"]),
                version=model_version(model),  # its files replaced on disk: read again
            )

    def _admin(self, message: Admin) -> None:
        if self.finisher is not None:
            self.finisher.wait()  # a model must not move or go while a decode uses it
        key = message.model["path"]
        error = None
        try:
            if message.op == "load":
                self._loaded(message.family, message.model)
            elif message.op == "unload":
                self.cache.unload(key)
                self._free_memory()
            elif message.op == "pin":
                self._loaded(message.family, message.model)
                self.cache.pin(key)
            elif message.op == "unpin":
                self.cache.unpin(key)
            else:
                error = f"unknown cache operation {message.op!r}"
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
        self.send(AdminDone(message.request_id, error, self._snapshot()))

    def _free_memory(self) -> None:
        """Give cached device memory back, and the pinned host buffers the RAM tier's
        moves left in torch's host cache (private API: where this torch has it)."""
        if self.device["kind"] == "cuda":
            self.torch.cuda.empty_cache()
        host_empty_cache = getattr(self.torch._C, "_host_emptyCache", None)
        if callable(host_empty_cache):
            try:
                host_empty_cache()
            except RuntimeError:  # no CUDA in this build or process: nothing pinned
                log.debug("no pinned host memory to release")

    def _run(self, run: RunBatch) -> None:
        """Run a batch up to its decode, then finish it here, or (`overlap_decode`) in the
        finisher's thread while this loop takes the next batch."""
        from pixelpool.pipelines import get_family
        from pixelpool.pipelines.base import start

        started = time.perf_counter()
        job_ids = [item.job_id for item in run.items]
        items = [i for i in run.items if i.job_id not in self._cancelled]
        for job_id in set(job_ids) - {i.job_id for i in items}:
            self.send(ItemFailed(job_id, "cancelled before start", "cancelled"))
        live = [i.job_id for i in items]

        def cancel() -> bool:
            return self._engine_gone or all(job_id in self._cancelled for job_id in live)

        pending = None
        try:
            if items:
                if self.finisher is not None and self.cache.tier_of(run.model["path"]) != "device":
                    self.finisher.wait()  # loading may evict the model a decode is using
                source = self.cache.tier_of(run.model["path"]) or "disk"
                loaded = self._loaded(run.family, run.model)
                self.send(BatchStarted(run.batch_id, time.perf_counter() - started, source))

                def send_progress(
                    step: int, total: int, stage: str, previews: list[Any] | None = None
                ) -> None:
                    self.send(Progress(run.batch_id, live, step, total, stage, previews))

                interval = self.options.get("progress_interval_s", INTERVAL_S)
                progress = CoalescedProgress(send_progress, interval)
                pending = start(get_family(run.family), loaded, items, progress, cancel)
        except Exception as exc:
            self._failed(run, items, exc)
            pending = None
            items = []
        if pending is not None and pending.overlap and self.finisher is not None:
            self.send(BatchDenoised(run.batch_id))
            self.finisher.submit(
                pending, lambda: self._finish(run, items, job_ids, started, pending, cancel)
            )
        else:
            if self.finisher is not None:
                self.finisher.wait()  # batches report (and snapshot the cache) in order
            self._finish(run, items, job_ids, started, pending, cancel)

    def _finish(
        self,
        run: RunBatch,
        items: list[WorkItem],
        job_ids: list[str],
        started: float,
        pending: Pending | None,
        cancel: Callable[[], bool],
    ) -> None:
        """Decode (what `pending` has left), send each job's outcome, then BatchDone. With
        `stream_results` each result goes out as soon as it is made (the server stores
        one while the next decodes); otherwise once the whole batch is decoded."""
        sent = 0  # jobs reported: an error after them fails only the rest
        try:
            if pending is not None:
                if pending.overlap and cancel():
                    raise Cancelled()
                results = iter(pending.finish() if self.stream else list(pending.finish()))
                try:
                    for item, result in zip(items, results, strict=True):
                        if item.job_id in self._cancelled:
                            self.send(ItemFailed(item.job_id, "cancelled", "cancelled"))
                        else:
                            self.send(ItemResult(item.job_id, result))
                        sent += 1
                finally:
                    close = getattr(results, "close", None)  # a generator: its VAE lock now
                    if close is not None:
                        close()
        except Exception as exc:
            self._failed(run, items[sent:], exc)
        finally:
            self._cancelled.difference_update(job_ids)
        self.send(BatchDone(run.batch_id, time.perf_counter() - started, self._snapshot()))

    def _failed(self, run: RunBatch, items: list[WorkItem], exc: Exception) -> None:
        """Every job of the batch ends with the reason: cancelled, out of memory, or the error."""
        if isinstance(exc, Cancelled):
            for item in items:
                self.send(ItemFailed(item.job_id, "cancelled", "cancelled"))
            return
        oom = is_out_of_memory(exc)
        log.error("batch %s failed: %s", run.batch_id, traceback.format_exc())
        if oom:
            self._free_memory()
        for item in items:
            self.send(
                ItemFailed(item.job_id, f"{type(exc).__name__}: {exc}", "oom" if oom else "error")
            )


def lower_priority(increment: int) -> None:
    """Lower this process's CPU priority (nice); where that is not allowed, leave it."""
    try:
        os.nice(increment)
    except (OSError, AttributeError):  # AttributeError: no os.nice on this platform
        log.debug("could not lower the worker's CPU priority")


def no_progress_bars() -> None:
    """Progress bars are for a terminal: among JSON log lines they would break the lines."""
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"  # read by libraries imported later
    from diffusers.utils import logging as diffusers_logging  # which ignores the variable
    from huggingface_hub.utils import disable_progress_bars

    diffusers_logging.disable_progress_bar()
    disable_progress_bars()
    if "transformers" in sys.modules:  # imported already: it has read the variable
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()


def prepare_process(device: dict[str, Any], options: dict[str, Any]) -> None:
    """What every worker process does first, whichever transport started it."""
    logs.configure(options.get("log_level", "info"), options.get("log_format", "text"))
    if options.get("log_format") == "json":
        no_progress_bars()
    lower_priority(WORKER_NICE)
    if device["kind"] != "cuda":
        os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    limit_memory(device, options.get("memory_limit_bytes"))
