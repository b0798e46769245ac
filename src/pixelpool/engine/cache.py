"""A worker's model cache in two tiers, LRU by bytes within each tier's budget.

The device tier holds models ready to run. A model pushed out of it moves to the
RAM tier (when it fits there) so that it comes back without reading the disk;
pushed out of RAM too, it is dropped. Pinned models never leave the device tier.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pixelpool.pipelines.base import Loaded

MoveFn = Callable[[Loaded, str], Loaded]


@dataclass
class CacheStats:
    hits: int = 0
    ram_hits: int = 0
    misses: int = 0
    evictions: int = 0  # models dropped from memory altogether
    offloads: int = 0  # models moved from the device tier to the RAM tier


def _bytes(tier: OrderedDict[str, Loaded]) -> int:
    return sum(m.size_bytes for m in tier.values())


class ModelCache:
    def __init__(
        self,
        budget_bytes: int,
        ram_budget_bytes: int = 0,
        pinned: set[str] | None = None,
        device: str = "cpu",
        move: MoveFn | None = None,
    ) -> None:
        self.budget_bytes = budget_bytes
        self.ram_budget_bytes = ram_budget_bytes
        self.pinned = set(pinned or ())
        self.device = device
        self._move = move or (lambda loaded, _device: loaded)
        self.stats = CacheStats()
        self._device: OrderedDict[str, Loaded] = OrderedDict()
        self._ram: OrderedDict[str, Loaded] = OrderedDict()
        self._versions: dict[str, object] = {}  # the files' version each model was loaded at

    @property
    def used_bytes(self) -> int:
        return _bytes(self._device)

    def __contains__(self, key: str) -> bool:
        return key in self._device

    def tier_of(self, key: str) -> str | None:
        return "device" if key in self._device else "ram" if key in self._ram else None

    def get(self, key: str, loader: Callable[[], Loaded], version: object = None) -> Loaded:
        """The model on the device: from the device tier, the RAM tier, or the disk.

        `version` names the files' state (size and mtime): a model held at another
        version was replaced on disk under the same path, so it is dropped from both
        tiers and read again (a pin stays), rather than served stale until a restart.
        None (unknown: a job recorded before versions were) matches any version."""
        held = self._versions.get(key)
        if version is not None and held not in (None, version) and self.tier_of(key):
            self._device.pop(key, None)
            self._ram.pop(key, None)
            self.stats.evictions += 1
        if version is not None:
            self._versions[key] = version
        if key in self._device:
            self.stats.hits += 1
            self._device.move_to_end(key)
            return self._device[key]
        if key in self._ram:
            self.stats.ram_hits += 1
            loaded = self._move(self._ram.pop(key), self.device)
        else:
            self.stats.misses += 1
            loaded = loader()
        self._device[key] = loaded
        self._make_room(keep=key)
        return loaded

    def unload(self, key: str) -> bool:
        """Drop a model from both tiers (and unpin it)."""
        self.pinned.discard(key)
        self._versions.pop(key, None)
        return (self._device.pop(key, None) or self._ram.pop(key, None)) is not None

    def pin(self, key: str) -> None:
        self.pinned.add(key)

    def unpin(self, key: str) -> None:
        self.pinned.discard(key)

    def _make_room(self, keep: str) -> None:
        for key in list(self._device):
            if self.used_bytes <= self.budget_bytes:
                return
            if key == keep or key in self.pinned:
                continue
            self._offload(key, self._device.pop(key))

    def _offload(self, key: str, loaded: Loaded) -> None:
        if loaded.size_bytes > self.ram_budget_bytes:
            self.stats.evictions += 1
            return
        self._ram[key] = self._move(loaded, "cpu")
        self.stats.offloads += 1
        while _bytes(self._ram) > self.ram_budget_bytes:
            self._ram.popitem(last=False)
            self.stats.evictions += 1

    def snapshot(self) -> dict[str, Any]:
        def rows(tier: OrderedDict[str, Loaded], name: str) -> list[dict[str, Any]]:
            return [
                {"key": k, "bytes": m.size_bytes, "pinned": k in self.pinned, "tier": name}
                for k, m in tier.items()
            ]

        return {
            "budget_bytes": self.budget_bytes,
            "used_bytes": self.used_bytes,
            "ram_budget_bytes": self.ram_budget_bytes,
            "ram_used_bytes": _bytes(self._ram),
            "models": rows(self._device, "device") + rows(self._ram, "ram"),
            **self.stats.__dict__,
        }
