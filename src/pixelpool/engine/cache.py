"""A worker's model cache: LRU by bytes within a budget; pinned models never leave."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pixelpool.pipelines.base import Loaded


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    evictions: int = 0


class ModelCache:
    def __init__(self, budget_bytes: int, pinned: set[str] | None = None) -> None:
        self.budget_bytes = budget_bytes
        self.pinned = set(pinned or ())
        self.stats = CacheStats()
        self._models: OrderedDict[str, Loaded] = OrderedDict()

    @property
    def used_bytes(self) -> int:
        return sum(m.size_bytes for m in self._models.values())

    def __contains__(self, key: str) -> bool:
        return key in self._models

    def get(self, key: str, loader: Callable[[], Loaded]) -> Loaded:
        """The cached model, or load it after making room (least recently used first)."""
        if key in self._models:
            self.stats.hits += 1
            self._models.move_to_end(key)
            return self._models[key]
        self.stats.misses += 1
        loaded = loader()
        self._models[key] = loaded
        self._evict_to_fit(keep=key)
        return loaded

    def drop(self, key: str) -> bool:
        return self._models.pop(key, None) is not None

    def _evict_to_fit(self, keep: str) -> None:
        for key in list(self._models):
            if self.used_bytes <= self.budget_bytes:
                return
            if key == keep or key in self.pinned:
                continue
            del self._models[key]
            self.stats.evictions += 1

    def snapshot(self) -> dict[str, Any]:
        return {
            "budget_bytes": self.budget_bytes,
            "used_bytes": self.used_bytes,
            "models": [
                {"key": k, "bytes": m.size_bytes, "pinned": k in self.pinned, "tier": "device"}
                for k, m in self._models.items()
            ],
            "hits": self.stats.hits,
            "misses": self.stats.misses,
            "evictions": self.stats.evictions,
        }
