"""Backends: where workers run. The scheduler sees only the WorkerHandles they make.

`local` runs one subprocess per device of this machine (`engine/local.py`); `ray` one
actor per device of every node of a Ray cluster (`engine/ray_backend.py`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

from pixelpool.config import Settings
from pixelpool.engine.devices import DeviceInfo, detect_devices, select_devices
from pixelpool.engine.handle import WorkerHandle
from pixelpool.engine.membership import Membership

Options = Callable[[DeviceInfo], dict[str, Any]]


class Backend(ABC):
    """Discovers devices and makes one worker handle per device."""

    @abstractmethod
    def devices(self, models: Sequence[str] = (), refresh: bool = True) -> list[DeviceInfo]:
        """The devices on live machines that get a worker (ids unique across every
        machine). `models`: every model path the registry knows (LoRAs and the like
        included), for backends whose machines each have their own; `refresh`: ask every
        machine again, not only new ones, which of them it has."""

    @abstractmethod
    def make(self, device: DeviceInfo) -> WorkerHandle:
        """A new, not yet started, worker for the device (also to replace a dead one)."""

    def nodes(self) -> list[dict[str, Any]]:
        """The machines the workers run on, for the status page."""
        return []

    def models_on(self, device: DeviceInfo) -> frozenset[str] | None:
        """The model paths the device's machine has (as of the last `devices` call);
        None: every model (one machine, one models dir)."""
        return None

    def membership(self) -> Membership | None:
        """How the scheduler follows machines that come and go; None: they do not."""
        return None

    @property
    def discover_interval_s(self) -> float | None:
        """Call `devices` again this often to find new machines (0: only when the models
        change); None: never, the devices are fixed."""
        return None


class LocalBackend(Backend):
    def __init__(self, settings: Settings, options: Options) -> None:
        self.settings = settings
        self.options = options

    def devices(self, models: Sequence[str] = (), refresh: bool = True) -> list[DeviceInfo]:
        return select_devices(detect_devices(), self.settings.devices)

    def make(self, device: DeviceInfo) -> WorkerHandle:
        from pixelpool.engine.local import LocalWorker

        return LocalWorker(device, self.options(device))


def make_backend(settings: Settings, options: Options) -> Backend:
    if settings.cluster.backend == "ray":
        from pixelpool.engine.ray_backend import RayBackend  # ray is an optional extra

        return RayBackend(settings, options)
    return LocalBackend(settings, options)
