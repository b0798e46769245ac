"""WorkerHandle: how the scheduler reaches a worker, whatever backend runs it."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

from pixelpool.engine.devices import DeviceInfo

OnMessage = Callable[["WorkerHandle", object], None]
OnExit = Callable[["WorkerHandle", str], None]


class WorkerHandle(ABC):
    """One worker on one device. Callbacks are invoked on the event loop thread."""

    device: DeviceInfo

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

    @property
    @abstractmethod
    def pid(self) -> int | None: ...
