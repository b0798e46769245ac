"""liveness: p50/p99 of GET /health while every worker is busy with queued jobs.

A feeder keeps more jobs queued than one batch takes, so the worker never idles,
and results keep arriving (PNG encoding and store writes in the HTTP process) while
/health is probed. Each probe opens a new connection, as orchestrators' probes do.
The same probes against the idle server give the baseline.
"""

from __future__ import annotations

import http.client
import threading
import time
from typing import Any
from urllib.parse import urlparse

from bench.common import Row, fmt_num, median, percentile
from bench.context import BATCHED, Context
from bench.servers import status, wait_idle

FEED_SEED = 90_000


def _probe(host: str, port: int) -> float:
    start = time.perf_counter()
    conn = http.client.HTTPConnection(host, port, timeout=30)
    try:
        conn.request("GET", "/health")
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"/health -> {response.status}")
    finally:
        conn.close()
    return time.perf_counter() - start


def _probes(
    host: str, port: int, count: int | None, until: float | None, gap: float
) -> list[float]:
    out: list[float] = []
    while (count is None or len(out) < count) and (until is None or time.monotonic() < until):
        out.append(_probe(host, port))
        time.sleep(gap)
    return out


def run(ctx: Context) -> dict[str, Any]:
    plan = ctx.plan
    workload = plan.liveness
    ctx.warm_server(BATCHED, workload)
    url = urlparse(ctx.servers.url(BATCHED))
    host, port = url.hostname or "127.0.0.1", url.port or 80
    idle = _probes(host, port, plan.liveness_idle_samples, None, plan.liveness_interval_s)

    stop = threading.Event()
    busy_flags: list[bool] = []
    job_ids: list[str] = []
    depth = (plan.max_batch if isinstance(plan.max_batch, int) else 16) + 2  # > one batch

    def feeder() -> None:
        seed = FEED_SEED
        with ctx.client(BATCHED) as client:
            while not stop.is_set():
                st = status(client)
                busy_flags.append(all(d["busy"] for d in st["devices"]))
                for _ in range(max(0, depth - st["queue_depth"])):
                    response = client.post("/api/enqueue/generate", json=workload.request(seed))
                    response.raise_for_status()
                    job_ids.append(response.json()["job_id"])
                    seed += 1
                stop.wait(0.25)

    thread = threading.Thread(target=feeder, name="feeder")
    thread.start()
    with ctx.client(BATCHED) as client:
        deadline = time.monotonic() + 60
        while not all(d["busy"] for d in status(client)["devices"]):
            if time.monotonic() > deadline:
                raise TimeoutError("workers never became busy")
            time.sleep(0.02)
    busy_flags.clear()
    busy = _probes(
        host, port, None, time.monotonic() + plan.liveness_busy_s, plan.liveness_interval_s
    )
    stop.set()
    thread.join()
    with ctx.client(BATCHED) as client:
        for job_id in job_ids:
            client.post(f"/api/job/{job_id}/cancel")
        wait_idle(client)
    return {
        "p50_ms": median(busy) * 1000,
        "p99_ms": percentile(busy, 99) * 1000,
        "max_ms": max(busy) * 1000,
        "samples": len(busy),
        "busy_fraction": sum(busy_flags) / len(busy_flags) if busy_flags else None,
        "idle": {
            "p50_ms": median(idle) * 1000,
            "p99_ms": percentile(idle, 99) * 1000,
            "samples": len(idle),
        },
        "jobs_enqueued": len(job_ids),
        "medians": {"busy p50 ms": median(busy) * 1000, "idle p50 ms": median(idle) * 1000},
        "workload": workload.label(),
    }


def rows(result: dict[str, Any]) -> list[Row]:
    idle = result["idle"]
    busy_share = result["busy_fraction"]
    busy_note = (
        f"{100 * busy_share:.0f}% of status polls saw every worker busy" if busy_share else ""
    )
    return [
        ("liveness", "GET /health p50, workers busy", f"{fmt_num(result['p50_ms'], 2)} ms",
         f"n={result['samples']}, {result['jobs_enqueued']} jobs queued; {busy_note}"),
        ("liveness", "GET /health p99, workers busy", f"{fmt_num(result['p99_ms'], 2)} ms",
         f"max {fmt_num(result['max_ms'], 1)} ms"),
        ("liveness", "GET /health p50 / p99, idle",
         f"{fmt_num(idle['p50_ms'], 2)} ms",
         f"p99 {fmt_num(idle['p99_ms'], 2)} ms, n={idle['samples']}"),
    ]  # fmt: skip
