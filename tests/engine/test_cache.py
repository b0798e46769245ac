from collections.abc import Callable

from pixelpool.engine.cache import ModelCache
from pixelpool.pipelines.base import Loaded


def _loader(size: int, calls: list[str], key: str) -> Callable[[], Loaded]:
    def load() -> Loaded:
        calls.append(key)
        return Loaded(obj=key, size_bytes=size, architecture="sd15", device="cuda:0", family="fake")

    return load


def _move(loaded: Loaded, device: str) -> Loaded:
    return Loaded(loaded.obj, loaded.size_bytes, loaded.architecture, device, loaded.family)


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


def test_evicted_model_comes_back_from_ram_without_loading() -> None:
    calls: list[str] = []
    cache = ModelCache(budget_bytes=250, ram_budget_bytes=150, device="cuda:0", move=_move)
    for key in ("a", "b", "c"):  # c pushes a to the RAM tier
        cache.get(key, _loader(100, calls, key))
    assert cache.tier_of("a") == "ram"
    assert cache.snapshot()["models"][-1] == {
        "key": "a",
        "bytes": 100,
        "pinned": False,
        "tier": "ram",
    }
    loaded = cache.get("a", _loader(100, calls, "a"))  # back from RAM, b goes to RAM
    assert loaded.device == "cuda:0"
    assert calls == ["a", "b", "c"]
    assert (cache.stats.ram_hits, cache.stats.offloads, cache.stats.evictions) == (1, 2, 0)
    cache.get("d", _loader(100, calls, "d"))  # c to RAM, which only holds one: b is dropped
    assert cache.tier_of("b") is None and cache.tier_of("c") == "ram"
    assert cache.stats.evictions == 1


def test_pinned_models_are_never_evicted() -> None:
    calls: list[str] = []
    cache = ModelCache(budget_bytes=250, pinned={"a"})
    cache.get("a", _loader(100, calls, "a"))
    cache.get("b", _loader(100, calls, "b"))
    cache.get("c", _loader(100, calls, "c"))
    assert "a" in cache and "b" not in cache
    cache.unpin("a")
    cache.get("d", _loader(100, calls, "d"))
    assert "a" not in cache


def test_unload_and_oversized_model() -> None:
    cache = ModelCache(budget_bytes=50, ram_budget_bytes=1000)
    cache.get("a", _loader(10, [], "a"))
    loaded = cache.get("big", _loader(100, [], "big"))  # runs even though over budget
    assert loaded.obj == "big" and "big" in cache and cache.tier_of("a") == "ram"
    assert cache.unload("a") and cache.tier_of("a") is None
    assert not cache.unload("never-loaded")


def test_a_model_whose_files_changed_is_read_again_from_either_tier() -> None:
    """The same path at another version (size, mtime): the files were replaced on disk,
    so the held model is stale wherever it is held; a pin stays on the path."""
    calls: list[str] = []
    cache = ModelCache(budget_bytes=150, ram_budget_bytes=150, device="cuda:0", move=_move)
    old = cache.get("a", _loader(100, calls, "a-v1"), version=(100, 1))
    assert cache.get("a", _loader(100, calls, "a-v1"), version=(100, 1)) is old  # a hit
    cache.pin("a")
    new = cache.get("a", _loader(100, calls, "a-v2"), version=(100, 2))
    assert new.obj == "a-v2" and "a" in cache and cache.pinned == {"a"}
    cache.unpin("a")
    cache.get("b", _loader(100, calls, "b"))  # pushes a (v2) to the RAM tier
    assert cache.tier_of("a") == "ram"
    assert cache.get("a", _loader(100, calls, "a-v3"), version=(90, 3)).obj == "a-v3"
    assert calls == ["a-v1", "a-v2", "b", "a-v3"]
    assert [m["key"] for m in cache.snapshot()["models"]] == ["a", "b"]  # one copy of a
    assert cache.stats.evictions == 2  # v1 and v2, dropped as stale


def test_an_unknown_version_matches_any() -> None:
    """Jobs recorded before versions were (None) neither reload a model nor make the next
    known version reload it."""
    calls: list[str] = []
    cache = ModelCache(budget_bytes=500)
    cache.get("a", _loader(100, calls, "a"), version=None)
    cache.get("a", _loader(100, calls, "a"), version=(100, 1))
    cache.get("a", _loader(100, calls, "a"), version=None)
    cache.get("a", _loader(100, calls, "a"), version=(100, 1))
    assert calls == ["a"]
