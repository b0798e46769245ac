from pixelpool.engine.cache import ModelCache
from pixelpool.pipelines.base import Loaded


def _loader(size: int, calls: list[str], key: str):
    def load() -> Loaded:
        calls.append(key)
        return Loaded(obj=key, size_bytes=size, architecture="sd15", device="cpu")

    return load


def test_lru_by_bytes() -> None:
    calls: list[str] = []
    cache = ModelCache(budget_bytes=250)
    cache.get("a", _loader(100, calls, "a"))
    cache.get("b", _loader(100, calls, "b"))
    cache.get("a", _loader(100, calls, "a"))  # hit: a is now most recent
    cache.get("c", _loader(100, calls, "c"))  # evicts b, the least recently used
    assert "a" in cache and "c" in cache and "b" not in cache
    assert calls == ["a", "b", "c"]
    assert (cache.stats.hits, cache.stats.misses, cache.stats.evictions) == (1, 3, 1)
    assert cache.used_bytes == 200


def test_pinned_models_are_never_evicted() -> None:
    calls: list[str] = []
    cache = ModelCache(budget_bytes=250, pinned={"a"})
    cache.get("a", _loader(100, calls, "a"))
    cache.get("b", _loader(100, calls, "b"))
    cache.get("c", _loader(100, calls, "c"))
    assert "a" in cache and "b" not in cache


def test_a_model_bigger_than_the_budget_still_runs() -> None:
    cache = ModelCache(budget_bytes=50)
    cache.get("a", _loader(10, [], "a"))
    loaded = cache.get("big", _loader(100, [], "big"))
    assert loaded.obj == "big" and "a" not in cache and "big" in cache
    snap = cache.snapshot()
    assert [m["key"] for m in snap["models"]] == ["big"]
