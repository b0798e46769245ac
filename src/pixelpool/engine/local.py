"""The local backend: one subprocess per device on this machine.

CPU workers start from a fork server (`multiprocessing`'s forkserver) that has imported
torch and the families once (`engine/preload.py`): a clean process like a spawned
one, without paying the imports at every start and restart. GPU workers are spawned
(see `_context`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing as mp
import threading
from multiprocessing import forkserver
from multiprocessing.connection import Connection
from typing import Any

import psutil

from pixelpool.engine.devices import DeviceInfo
from pixelpool.engine.handle import OnExit, OnMessage, WorkerHandle
from pixelpool.engine.messages import Stop
from pixelpool.engine.pipe import worker_main

log = logging.getLogger(__name__)

PRELOAD = ["pixelpool.engine.preload"]


def _context(device: DeviceInfo) -> Any:
    """Spawn for GPU workers, the preloaded fork server for the others.

    A process forked from one where CUDA was initialised cannot use CUDA. On an H200
    machine (torch 2.11) every forked GPU worker failed at start with "Cannot
    re-initialize CUDA in forked subprocess", though importing the preload alone did
    not initialise CUDA there: what did was not pinned down, and spawning does not
    depend on it. A spawned worker imports torch itself (seconds, next to loading a
    model); CPU workers keep the fast fork, which is what makes their restarts cheap."""
    if device.kind != "cpu":
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def start_fork_server(devices: list[DeviceInfo]) -> None:
    """Start the fork server now if a CPU worker will need it, so that its imports
    (~10 s of one core) run while the HTTP process imports and starts, not after.

    It does not wait for them: the first worker's start does (in a thread)."""
    cpu = next((device for device in devices if device.kind == "cpu"), None)
    if cpu is not None:
        _context(cpu)  # sets the preload
        forkserver.ensure_running()


class LocalWorker(WorkerHandle):
    def __init__(self, device: DeviceInfo, options: dict[str, Any]) -> None:
        self.device = device
        self.options = options
        self._process: mp.process.BaseProcess | None = None
        self._conn: Connection | None = None
        self._send_lock = threading.Lock()
        self._join_lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def describe(self) -> dict[str, Any]:
        return {"pid": self.pid}

    def rss_bytes(self) -> int | None:
        if self.pid is None or not self.is_alive():
            return None
        try:
            return int(psutil.Process(self.pid).memory_info().rss)
        except (psutil.Error, OSError):
            return None

    async def start(self, on_message: OnMessage, on_exit: OnExit) -> None:
        loop = asyncio.get_running_loop()
        ctx = _context(self.device)
        parent, child = ctx.Pipe(duplex=True)
        wire = {**self.device.to_dict(), "torch_device": self.device.torch_device}
        process = ctx.Process(
            target=worker_main,
            args=(wire, self.options, child),
            name=f"pixelpool-worker-{self.device.id}",
            daemon=True,
        )
        # A fork server's first start waits for its imports (~10 s): in the event loop
        # that kept the port closed and every request waiting until the worker was up.
        await asyncio.to_thread(process.start)
        child.close()
        self._process, self._conn = process, parent

        def read() -> None:
            # This thread alone closes `parent`: closed under a blocked recv, the
            # connection raised TypeError here instead of EOFError.
            while True:
                try:
                    message = parent.recv()
                except (EOFError, OSError):
                    break
                loop.call_soon_threadsafe(on_message, self, message)
            parent.close()
            self.join(5)
            reason = f"worker process exited with code {process.exitcode}"
            if not loop.is_closed():
                loop.call_soon_threadsafe(on_exit, self, reason)

        threading.Thread(target=read, name=f"reader-{self.device.id}", daemon=True).start()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the process to end, one thread at a time: a fork server's child reports
        its exit status once, so two threads joining at once (the reader at EOF, `stop`)
        left one reading nothing, and the process's exit code read 255 though it was 0."""
        if self._process is not None:
            with self._join_lock:
                self._process.join(timeout)

    def send(self, message: object) -> None:
        if self._conn is None:
            raise RuntimeError("worker not started")
        with self._send_lock:
            self._conn.send(message)

    def is_alive(self) -> bool:
        """`is_alive` reads the exit status too: while a thread joins, the process counts
        as alive (its end is reported by the reader thread right after)."""
        if self._process is None:
            return False
        if not self._join_lock.acquire(blocking=False):
            return True
        try:
            return self._process.is_alive()
        finally:
            self._join_lock.release()

    def kill(self) -> None:
        if self._process is not None and self._process.is_alive():
            self._process.kill()

    async def stop(self, timeout: float = 10.0) -> None:
        process = self._process
        if process is None:
            return
        with contextlib.suppress(OSError, RuntimeError):
            self.send(Stop())
        await asyncio.to_thread(self.join, timeout)
        if process.is_alive():
            log.warning("worker %s did not stop in %.0fs; killing it", self.device.id, timeout)
            process.kill()
            await asyncio.to_thread(self.join, 5)
        # The pipe closes in the reader thread, at the EOF the worker's exit gives.
