"""WorkerHandle: how the scheduler reaches a worker, whatever backend runs it."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from pixelpool.engine.devices import DeviceInfo

OnMessage = Callable[["WorkerHandle", object], None]
OnExit = Callable[["WorkerHandle", str], None]


class MachineGone(RuntimeError):
    """`start` cannot place the worker: its machine has left (a cluster node that died or
    was removed). The scheduler marks the device gone rather than only retrying."""


class WorkerHandle(ABC):
    """One worker on one device. Callbacks are invoked on the event loop thread.

    The scheduler drives every backend through this alone: it never learns whether the
    worker is a local process or an actor on another machine."""

    device: DeviceInfo
    # False where the worker runs on another machine: this host's NVML and process
    # table then say nothing about it.
    on_this_host: bool = True

    @abstractmethod
    async def start(self, on_message: OnMessage, on_exit: OnExit) -> None: ...

    @abstractmethod
    def send(self, message: object) -> None: ...

    @abstractmethod
    def is_alive(self) -> bool: ...

    @abstractmethod
    def kill(self) -> None: ...

    @abstractmethod
    async def stop(self, timeout: float = 10.0) -> None: ...

    def describe(self) -> dict[str, Any]:
        """What the status page shows about where the worker runs (pid, node ...)."""
        return {}

    def rss_bytes(self) -> int | None:
        """The worker's resident memory, where this process can read it."""
        return None
