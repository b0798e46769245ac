"""Operators' view of a real server: /metrics after a known sequence of jobs, and JSON logs
that never carry a secret.

One server (JSON logs; stored keys, a JWT secret and a metrics token; batches of 3
with a 10 s window, so a batch starts exactly when its third job arrives and a lone
job waits long enough to be cancelled while queued). The metrics test uses models of
its own, so what it counts does not depend on the other test.
"""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pixelpool.jobs.keys import KeyStore, keys_path
from pixelpool.testing.server import ServerProcess

from .auth_helpers import SECRET, token

METRICS_TOKEN = "metrics-token-" + "m" * 24
JOB = {"prompt": "a lighthouse", "width": 64, "height": 64, "steps": 2}
ENQUEUE = "/api/enqueue/generate"
ENQUEUE_ROUTE = "/api/enqueue/{operation}"
JOB_PATH = "/api/job/{job_id}"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@dataclass
class Server:
    proc: ServerProcess
    keys: dict[str, str]
    carol: str  # a JWT
    calls: Counter[tuple[str, str, str]] = field(default_factory=Counter)

    def call(self, method: str, template: str, key: str | None, **kw: Any) -> httpx.Response:
        """A request, counted by (method, route template, status) as /metrics should."""
        path = template.format(**kw.pop("path_params", {}))
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        resp = httpx.request(method, self.proc.url + path, headers=headers, timeout=60, **kw)
        self.calls[(method, template, str(resp.status_code))] += 1
        return resp

    def enqueue(self, key: str, **params: Any) -> str:
        resp = self.call(
            "POST",
            ENQUEUE_ROUTE,
            key,
            json={**JOB, **params},
            path_params={"operation": "generate"},
        )
        assert resp.status_code == 200, resp.text
        return resp.json()["job_id"]

    def wait(self, job_id: str, key: str) -> dict[str, Any]:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            body = self.call("GET", JOB_PATH, key, path_params={"job_id": job_id}).json()
            if body["status"] in ("completed", "failed", "cancelled"):
                return body
            time.sleep(0.05)
        raise TimeoutError(job_id)

    def scrape(self, key: str | None = None) -> Samples:
        resp = self.call("GET", "/metrics", key or self.keys["ops"])
        assert resp.status_code == 200, resp.text
        assert resp.headers["content-type"].startswith("text/plain")
        return {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(resp.text)
            for s in family.samples
        }


def _models(shared: Path, root: Path) -> Path:
    """demo-sd for the log test, a copy only the metrics test uses, and a broken copy."""
    source = shared / "sd15" / "demo-sd"
    for name in ("demo-sd", "counted-sd", "broken-sd"):
        shutil.copytree(source, root / "sd15" / name)
    (root / "sd15" / "broken-sd" / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(
        b"these are not weights"
    )
    return root


@pytest.fixture(scope="module")
def server(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    models = _models(models_dir, tmp_path_factory.mktemp("models"))
    data = tmp_path_factory.mktemp("data")
    store = KeyStore(keys_path(data))
    keys = {
        "alice": store.create("alice", ["generate"])[0],
        "ops": store.create("ops", ["admin"])[0],
        "slow": store.create("slow", ["generate"], rate_per_min=1)[0],
    }
    store.close()
    env = {
        "PIXELPOOL_AUTH__JWT_SECRET": SECRET,
        "PIXELPOOL_SERVER__METRICS_TOKEN": METRICS_TOKEN,
        "PIXELPOOL_SERVER__LOG_FORMAT": "json",
        "PIXELPOOL_SCHEDULER__MAX_BATCH": "3",
        "PIXELPOOL_SCHEDULER__BATCH_WINDOW_MS": "10000",
    }
    with ServerProcess(models, data, env=env) as proc:
        yield Server(proc, keys, token("carol"))


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_metrics_count_a_known_sequence_of_jobs(server: Server) -> None:
    alice, carol, cpu = server.keys["alice"], server.carol, {"device": "cpu"}
    before = server.scrape()
    server.calls.clear()
    server.calls[("GET", "/metrics", "200")] += 1  # counted once answered, so in `after`

    # Three jobs of one batch that complete (a JWT's), their model read from disk once.
    done = [server.enqueue(carol, model="counted-sd", seed=i) for i in range(3)]
    # A lone job, held back by the batch window: seen in the queue, then cancelled there.
    lone = server.enqueue(alice, model="counted-sd", width=128)
    queued = server.scrape()
    assert value(queued, "pixelpool_queue_depth", priority="100", key="alice") == 1
    resp = server.call("POST", "/api/job/{job_id}/cancel", alice, path_params={"job_id": lone})
    assert resp.json()["status"] == "cancelled"
    # Three jobs of one batch that fail: their model's weights are not weights.
    broken = [server.enqueue(alice, model="broken-sd", seed=i) for i in range(3)]
    assert [server.wait(j, carol)["status"] for j in done] == ["completed"] * 3
    assert [server.wait(j, alice)["status"] for j in [lone, *broken]] == [
        "cancelled",
        *["failed"] * 3,
    ]
    # The rate limit (one a minute) refuses the key's second request.
    assert server.call("GET", "/api/status", server.keys["slow"]).status_code == 200
    assert server.call("GET", "/api/status", server.keys["slow"]).status_code == 429
    # /metrics: admin scope or the metrics token; nothing else.
    assert server.call("GET", "/metrics", None).status_code == 401
    assert server.call("GET", "/metrics", alice).status_code == 403
    assert server.call("GET", "/metrics", "not-the-metrics-token").status_code == 401
    assert server.call("GET", "/api/status", METRICS_TOKEN).status_code == 401
    after = server.scrape(METRICS_TOKEN)
    server.calls[("GET", "/metrics", "200")] -= 1  # not counted until it has been answered

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    counted = (("operation", "txt2img"), ("model", "counted-sd"))
    failing = (("operation", "txt2img"), ("model", "broken-sd"))
    expected = {
        ("pixelpool_jobs_submitted_total", (("key", "jwt:carol"),), counted): 3,
        ("pixelpool_jobs_submitted_total", (("key", "alice"),), counted): 1,
        ("pixelpool_jobs_submitted_total", (("key", "alice"),), failing): 3,
        ("pixelpool_jobs_total", (("outcome", "completed"),), counted): 3,
        ("pixelpool_jobs_total", (("outcome", "cancelled"),), counted): 1,
        ("pixelpool_jobs_total", (("outcome", "failed"),), counted): 0,
        ("pixelpool_jobs_total", (("outcome", "failed"),), failing): 3,
        ("pixelpool_jobs_total", (("outcome", "completed"),), failing): 0,
        ("pixelpool_images_total", (), counted): 3,
        ("pixelpool_images_total", (), failing): 0,
        ("pixelpool_job_wait_seconds_count", (("device", "cpu"),), counted): 3,
        ("pixelpool_job_wait_seconds_count", (("device", "cpu"),), failing): 3,
        ("pixelpool_job_run_seconds_count", (("device", "cpu"),), counted): 3,
        ("pixelpool_job_run_seconds_count", (("device", "cpu"),), failing): 0,
        ("pixelpool_batch_size_count", (("device", "cpu"),), counted): 1,
        ("pixelpool_batch_size_sum", (("device", "cpu"),), counted): 3,
        ("pixelpool_batch_size_count", (("device", "cpu"),), failing): 1,
        ("pixelpool_batch_size_sum", (("device", "cpu"),), failing): 3,
        ("pixelpool_jobs_requeued_total", (), counted): 0,
    }
    for (name, extra, labels), want in expected.items():
        assert delta(name, **dict(labels), **dict(extra)) == want, (name, extra, labels)
    # Two models read from disk (one load timed: the broken one never loaded), no hits.
    assert delta("pixelpool_model_cache_misses_total", **cpu) == 2
    assert delta("pixelpool_model_cache_hits_total", tier="device", **cpu) == 0
    assert delta("pixelpool_model_load_seconds_count", tier="disk", **cpu) == 1
    assert delta("pixelpool_model_cache_evictions_total", **cpu) == 0
    assert delta("pixelpool_rate_limited_total", key="slow") == 1
    # Every request above, by route template and status (and nothing else happened).
    moved = {
        (dict(labels)["method"], dict(labels)["route"], dict(labels)["status"])
        for (name, labels), v in after.items()
        if name == "pixelpool_http_requests_total" and v != value(before, name, **dict(labels))
    }
    assert moved == set(server.calls)
    for (method, route, status), n in server.calls.items():
        got = delta("pixelpool_http_requests_total", method=method, route=route, status=status)
        assert got == n, (method, route, status)
    # Gauges read at scrape time.
    assert value(after, "pixelpool_worker_ready", **cpu) == 1
    assert value(after, "pixelpool_jobs_running", **cpu) == 0
    assert not [k for k in after if k[0] == "pixelpool_queue_depth"]
    assert value(after, "pixelpool_models_cached", tier="device", **cpu) >= 1
    assert value(after, "pixelpool_worker_resident_memory_bytes", **cpu) > 0
    assert value(after, "process_resident_memory_bytes") > 0
    assert value(after, "pixelpool_storage_free_bytes") > 0
    # The event loop's timer fired all along (4 per second): its lateness is measured.
    assert delta("pixelpool_event_loop_lag_seconds_count") > 0


def _log_lines(proc: ServerProcess) -> list[dict[str, Any]]:
    lines = [line for line in proc.log_path.read_text().splitlines() if line.strip()]
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except ValueError:
            pytest.fail(f"not a JSON line: {line!r}")
    return parsed


def test_json_log_has_job_fields_and_no_secret(server: Server) -> None:
    alice, ops, carol = server.keys["alice"], server.keys["ops"], server.carol
    forged = token("eve", secret="another-secret-" * 3)
    jobs = [server.enqueue(carol, model="demo-sd", seed=i) for i in range(3)]
    for job_id in jobs:
        server.wait(job_id, carol)
    httpx.get(f"{server.proc.url}/api/status?apikey={alice}")
    httpx.get(f"{server.proc.url}/api/status?token={forged}")
    httpx.get(f"{server.proc.url}/metrics?apikey={METRICS_TOKEN}")
    httpx.get(f"{server.proc.url}/api/job/{jobs[0]}", headers={"Authorization": f"Bearer {ops}"})
    httpx.get(f"{server.proc.url}/api/job/{jobs[0]}", headers={"Authorization": f"Bearer {carol}"})
    deadline = time.monotonic() + 10
    while f"/api/job/{jobs[0]} " not in server.proc.log_path.read_text():
        assert time.monotonic() < deadline, "the access log line was not written"
        time.sleep(0.05)

    text = server.proc.log_path.read_text()
    for secret in (*server.keys.values(), carol, forged, SECRET, METRICS_TOKEN):
        assert secret not in text
    records = _log_lines(server.proc)
    assert all({"time", "level", "logger", "message"} <= r.keys() for r in records)
    # The job's life, with its fields.
    mine = [r for r in records if r.get("job_id") == jobs[0] and r["logger"] == "pixelpool.jobs"]
    assert [r["event"] for r in mine] == ["queued", "started", "completed"]
    for record in mine:
        assert record["key"] == "jwt:carol" and record["model"] == "demo-sd"
        assert record["operation"] == "txt2img"
    started, completed = mine[1], mine[2]
    assert started["device"] == "cpu" and started["batch_size"] == 3 and started["wait_s"] >= 0
    assert completed["run_s"] > 0 and completed["total_s"] >= completed["run_s"]
    # Access lines name the job, the key name and the route template.
    access = [r for r in records if r["logger"] == "uvicorn.access"]
    submitted = [
        r for r in access if r.get("route") == ENQUEUE_ROUTE and r.get("key") == "jwt:carol"
    ]
    assert {r["job_id"] for r in submitted} >= set(jobs)
    polled = [r for r in access if r.get("job_id") == jobs[0] and r.get("route") == JOB_PATH]
    assert {(r["key"], r["status"]) for r in polled} >= {("jwt:carol", 200), ("ops", 404)}
    assert any("[redacted]" in r["path"] for r in access)
