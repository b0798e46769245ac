"""The metric hooks on their own: cache counters that survive a worker restart, and who may
read /metrics (a policy test with the real key store; the e2e test covers the server)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pixelpool.api.auth import METRICS_READER, metrics_reader
from pixelpool.api.errors import ApiError
from pixelpool.api.metrics import Metrics
from pixelpool.config import Settings
from pixelpool.engine.messages import BatchDone, BatchStarted, Ready
from pixelpool.jobs.diskspace import DiskSpace
from pixelpool.jobs.keys import KeyStore
from pixelpool.testing.fakes import fake_slots, fake_task

TOKEN = "metrics-" + "t" * 20


def _values(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(metrics.registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _cache(**counts: int) -> dict[str, Any]:
    return {"hits": 0, "ram_hits": 0, "misses": 0, "evictions": 0, "offloads": 0, **counts}


def test_cache_counts_add_up_across_a_worker_restart() -> None:
    metrics = Metrics()
    (slot,) = fake_slots(1)
    device = (("device", slot.device_id),)
    metrics.on_worker_message(slot, Ready({}, 1, 0, _cache()))
    metrics.on_worker_message(slot, BatchStarted("b1", 0.5, "disk"))
    metrics.on_worker_message(slot, BatchDone("b1", 1.0, _cache(misses=1)))
    metrics.on_worker_message(slot, BatchStarted("b2", 0.0, "device"))  # a hit: not timed
    metrics.on_worker_message(slot, BatchDone("b2", 1.0, _cache(misses=1, hits=1, evictions=2)))
    metrics.on_worker_message(slot, Ready({}, 2, 0, _cache()))  # a new worker counts from 0
    metrics.on_worker_message(slot, BatchDone("b3", 1.0, _cache(misses=1)))
    values = _values(metrics)
    assert values[("pixelpool_model_cache_misses_total", device)] == 2
    assert values[("pixelpool_model_cache_hits_total", (*device, ("tier", "device")))] == 1
    assert values[("pixelpool_model_cache_evictions_total", device)] == 2
    assert values[("pixelpool_model_load_seconds_count", (*device, ("tier", "disk")))] == 1
    assert ("pixelpool_model_load_seconds_count", (*device, ("tier", "device"))) not in values


def _state(tmp_path: Path, token: str | None, keys: list[str] | None = None) -> Any:
    settings = Settings.model_validate(
        {"server": {"metrics_token": token}, "auth": {"keys": keys or []}}
    )
    return SimpleNamespace(settings=settings, keys=KeyStore(tmp_path / "keys.db"))


def test_the_metrics_token_opens_metrics_and_nothing_else(tmp_path: Path) -> None:
    state = _state(tmp_path, TOKEN, keys=["admin-key"])
    assert metrics_reader(state, "/metrics", TOKEN) is METRICS_READER
    assert metrics_reader(state, "/api/status", TOKEN) is None  # the usual check applies
    assert metrics_reader(state, "/metrics", "admin-key") is None  # ... and lets admins in
    assert metrics_reader(state, "/metrics", None) is None
    assert not METRICS_READER.scopes


def test_a_metrics_token_closes_metrics_even_without_auth(tmp_path: Path) -> None:
    state = _state(tmp_path, TOKEN)
    assert metrics_reader(state, "/metrics", TOKEN) is METRICS_READER
    for wrong in (None, "", TOKEN[:-1]):
        with pytest.raises(ApiError) as refused:
            metrics_reader(state, "/metrics", wrong)
        assert refused.value.status == 401
    assert metrics_reader(_state(tmp_path, None), "/metrics", None) is None  # no token: open


def test_the_metrics_token_must_be_long_enough() -> None:
    with pytest.raises(ValueError, match="metrics_token"):
        Settings.model_validate({"server": {"metrics_token": "short"}})


def test_the_dashboard_and_the_docs_use_the_names_the_server_exports() -> None:
    metrics = Metrics()
    queue = SimpleNamespace(tasks=lambda: [fake_task("j", owner="alice")])
    space = DiskSpace([Path(__file__).parent], min_free_bytes=0)
    state = SimpleNamespace(
        scheduler=SimpleNamespace(slots=fake_slots(1), queue=queue),
        jobs=SimpleNamespace(space=space),
    )
    metrics.bind(state)  # type: ignore[arg-type]
    exported = text_string_to_metric_families(generate_latest(metrics.registry).decode())
    # `_created` series: the docs name them once for all.
    families = {f.name for f in exported if not f.name.endswith("_created")}
    # Present only with a CUDA device (NVML): named by the docs, used by the dashboard.
    families |= {"pixelpool_device_memory_used_bytes", "pixelpool_device_memory_total_bytes",
                 "pixelpool_device_utilization_ratio"}  # fmt: skip
    docs = Path(__file__).parents[2] / "docs"
    dashboard = (docs / "grafana-dashboard.json").read_text()
    json.loads(dashboard)
    used = {re.sub(r"_(bucket|sum|count|total)$", "", n)
            for n in re.findall(r"pixelpool_\w+", dashboard)}  # fmt: skip
    assert used and used <= families, used - families
    named = re.findall(r"`(pixelpool_\w+)`", (docs / "operations.md").read_text())
    listed = {re.sub(r"_total$", "", n) for n in named}
    assert listed == {f for f in families if f.startswith("pixelpool_")}
