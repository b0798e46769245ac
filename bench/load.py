"""Load: many clients with several keys against one server, then a drain; bounded, local.

    python bench/load.py [--quick] [--clients 64] [--keys 8] [--duration 120]

It starts its own server (demo model, 127.0.0.1 only, a temp data dir) and stops by
itself: after `--duration` seconds (or `--max-requests`) the clients stop, every
accepted job is polled until it ended (at most `--drain` seconds), and a table is
printed. Traffic, mixed at random (seeded) per request: sync generate, enqueue +
poll, enqueue + follow the job's server-sent events, and status reads; a prober in
its own process times /health throughout.

What counts: requests by status, errors other than 429 (any other non-2xx, and
transport errors), accepted jobs by end state (`lost` = accepted but not ended once
the queue drained), /health p50/p99, and the server process's RSS at start, at its
peak and once drained. Results and how to read them: docs/benchmarks.md ("Load").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` importable as a package
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from bench.common import log, percentile, render_table

ENDED = ("completed", "failed", "cancelled", "expired")
MIX = (("sync", 0.3), ("poll", 0.3), ("events", 0.2), ("status", 0.2))


@dataclass
class Stats:
    by_status: Counter[tuple[str, int | str]] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)  # other than 429
    accepted: dict[str, str] = field(default_factory=dict)  # job id -> key
    health_ms: list[float] = field(default_factory=list)
    rss_mb: list[tuple[float, float]] = field(default_factory=list)

    def requests(self) -> int:
        return sum(self.by_status.values())

    def record(self, kind: str, response: httpx.Response) -> None:
        self.by_status[(kind, response.status_code)] += 1
        if response.status_code >= 400 and response.status_code != 429:
            self.errors.append(f"{kind} {response.status_code}: {response.text[:200]}")

    def failed(self, kind: str, exc: BaseException) -> None:
        self.by_status[(kind, type(exc).__name__)] += 1
        self.errors.append(f"{kind} {type(exc).__name__}: {exc}")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


SIZE, STEPS = 64, 2  # set from --size / --steps


def job_body(seed: int) -> dict[str, Any]:
    return {
        "prompt": f"a lighthouse {seed}", "width": SIZE, "height": SIZE, "steps": STEPS,
        "seed": seed,
    }  # fmt: skip


class Client:
    """One simulated user: a key, a random generator, and the jobs it has seen."""

    def __init__(
        self, http: httpx.AsyncClient, key: str, seed: int, stats: Stats, max_requests: int
    ) -> None:
        self.http = http
        self.headers = {"Authorization": f"Bearer {key}"}
        self.key = key
        self.rng = random.Random(seed)
        self.stats = stats
        self.mine: list[str] = []
        self.max_requests = max_requests

    async def run(self, until: float) -> None:
        kinds, weights = zip(*MIX, strict=True)
        while time.monotonic() < until and self.stats.requests() < self.max_requests:
            kind = self.rng.choices(kinds, weights)[0]
            try:
                await getattr(self, kind)(until)
            except httpx.HTTPError as exc:
                self.stats.failed(kind, exc)
                await asyncio.sleep(0.2)

    def _accepted(self, job_id: str) -> None:
        self.stats.accepted[job_id] = self.key
        self.mine.append(job_id)
        del self.mine[:-20]

    async def _enqueue(self) -> str | None:
        body = job_body(self.rng.randrange(2**31))
        response = await self.http.post("/api/enqueue/generate", json=body, headers=self.headers)
        self.stats.record("enqueue", response)
        if response.status_code == 429:
            await asyncio.sleep(float(response.headers.get("Retry-After", 1)))
        if response.status_code != 200:
            return None
        job_id = response.json()["job_id"]
        self._accepted(job_id)
        return job_id

    async def sync(self, until: float) -> None:
        body = job_body(self.rng.randrange(2**31))
        response = await self.http.post("/api/generate", json=body, headers=self.headers)
        self.stats.record("sync", response)
        if response.status_code == 200:
            self._accepted(response.headers["x-job-id"])
        elif response.status_code == 429:
            await asyncio.sleep(float(response.headers.get("Retry-After", 1)))

    async def poll(self, until: float) -> None:
        job_id = await self._enqueue()
        while job_id is not None and time.monotonic() < until:
            response = await self.http.get(f"/api/job/{job_id}", headers=self.headers)
            self.stats.record("poll", response)
            if response.status_code != 200 or response.json()["status"] in ENDED:
                return
            await asyncio.sleep(0.2)

    async def events(self, until: float) -> None:
        job_id = await self._enqueue()
        if job_id is None:
            return
        url = f"/api/job/{job_id}/events"
        async with self.http.stream("GET", url, headers=self.headers) as response:
            self.stats.record("events", response)
            async for line in response.aiter_lines():
                if line.startswith("event: ") and line[7:] in ENDED:
                    return
                if time.monotonic() > until:
                    return

    async def status(self, until: float) -> None:
        if self.mine and self.rng.random() < 0.7:
            path = f"/api/job/{self.rng.choice(self.mine)}"
        else:
            path = "/api/status"
        response = await self.http.get(path, headers=self.headers)
        self.stats.record("status", response)
        await asyncio.sleep(0.1)


def probe_health(url: str, stop: Any, out: Any) -> None:
    """In its own process: /health every 50 ms on its own connection. Its own process, so
    the 64 clients' event loop in this one does not delay the probe and inflate the figure."""
    latencies, statuses = [], Counter()
    with httpx.Client(base_url=url, timeout=30) as http:
        while not stop.is_set():
            start = time.perf_counter()
            try:
                statuses[http.get("/health").status_code] += 1
                latencies.append((time.perf_counter() - start) * 1000)
            except httpx.HTTPError as exc:
                statuses[type(exc).__name__] += 1
            stop.wait(0.05)
    out.put((latencies, dict(statuses)))


async def sample_rss(pid: int, stats: Stats, stop: asyncio.Event) -> None:
    while not stop.is_set():
        stats.rss_mb.append((time.monotonic(), rss_mb(pid)))
        await asyncio.sleep(0.5)


async def drain(url: str, stats: Stats, timeout_s: float) -> Counter[str]:
    """Poll every accepted job until it ended (or the time is up): its end state, or lost."""
    ends: Counter[str] = Counter()
    pending = dict(stats.accepted)
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        while pending and time.monotonic() < deadline:
            for job_id, key in list(pending.items()):
                headers = {"Authorization": f"Bearer {key}"}
                body = (await http.get(f"/api/job/{job_id}", headers=headers)).json()
                if body.get("status") in ENDED:
                    ends[body["status"]] += 1
                    del pending[job_id]
            if pending:
                await asyncio.sleep(0.5)
    ends["lost"] = len(pending)
    return ends


async def run_load(args: argparse.Namespace, url: str, pid: int) -> dict[str, Any]:
    keys = [f"load-key-{n:02d}-{'x' * 24}" for n in range(args.keys)]
    stats = Stats()
    stop = asyncio.Event()
    rss_start = rss_mb(pid)
    limits = httpx.Limits(max_connections=args.clients + 8, max_keepalive_connections=args.clients)
    ctx = mp.get_context("spawn")
    probe_stop, probe_out = ctx.Event(), ctx.Queue()
    prober = ctx.Process(target=probe_health, args=(url, probe_stop, probe_out), daemon=True)
    prober.start()
    background = [asyncio.create_task(sample_rss(pid, stats, stop))]
    started = time.monotonic()
    until = started + args.duration
    # A sync request waits for its job, which may wait behind the whole queue: no read
    # timeout shorter than the run, so a slow queue is not reported as an error.
    timeout = httpx.Timeout(args.duration + args.drain, connect=10)
    async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits) as http:
        clients = [
            Client(http, keys[n % len(keys)], args.seed * 1000 + n, stats, args.max_requests)
            for n in range(args.clients)
        ]
        # Each client finishes the request it is in, at most `drain` s past the end.
        runs = [asyncio.create_task(c.run(until)) for c in clients]
        done, late = await asyncio.wait(runs, timeout=args.duration + args.drain)
        for task in late:
            task.cancel()
        for task in done:
            if task.exception() is not None:
                stats.failed("client", task.exception())  # type: ignore[arg-type]
    load_s = time.monotonic() - started
    log(f"load over after {load_s:.0f}s; draining {len(stats.accepted)} accepted jobs")
    probe_stop.set()
    latencies, statuses = await asyncio.to_thread(probe_out.get, True, 60)
    prober.join(10)
    stats.health_ms = latencies
    for status, n in statuses.items():
        stats.by_status[("health", status)] += n
        if status != 200:
            stats.errors.append(f"health {status} x{n}")
    ends = await drain(url, stats, args.drain)
    rss_drained_now = rss_mb(pid)
    await asyncio.sleep(args.settle)  # the sweep and the allocator get a moment
    stop.set()
    await asyncio.gather(*background)
    peak = max(v for _, v in stats.rss_mb)
    return {
        "clients": args.clients,
        "keys": args.keys,
        "duration_s": round(load_s, 1),
        "requests": {f"{k} {s}": n for (k, s), n in sorted(stats.by_status.items(), key=str)},
        "errors_other_than_429": len(stats.errors),
        "error_samples": stats.errors[:10],
        "accepted_jobs": len(stats.accepted),
        "ended": dict(ends),
        "health_p50_ms": round(percentile(stats.health_ms, 50), 1),
        "health_p99_ms": round(percentile(stats.health_ms, 99), 1),
        "health_probes": len(stats.health_ms),
        "rss_start_mb": round(rss_start, 1),
        "rss_peak_mb": round(peak, 1),
        "rss_at_drain_mb": round(rss_drained_now, 1),
        "rss_drained_mb": round(rss_mb(pid), 1),
    }


def render(result: dict[str, Any]) -> str:
    rows = [(f"requests: {k}", str(n)) for k, n in result["requests"].items()]
    rows += [
        ("errors other than 429", str(result["errors_other_than_429"])),
        ("accepted jobs", str(result["accepted_jobs"])),
    ]
    rows += [(f"jobs ended {k}", str(n)) for k, n in sorted(result["ended"].items())]
    rows += [
        ("/health p50", f"{result['health_p50_ms']} ms"),
        ("/health p99", f"{result['health_p99_ms']} ms"),
        ("server RSS at start", f"{result['rss_start_mb']} MB"),
        ("server RSS peak", f"{result['rss_peak_mb']} MB"),
        ("server RSS when drained", f"{result['rss_at_drain_mb']} MB"),
        ("server RSS drained + settle", f"{result['rss_drained_mb']} MB"),
    ]
    note = (
        f"{result['clients']} clients, {result['keys']} keys, {result['duration_s']} s, "
        f"{SIZE}x{SIZE} {STEPS} steps"
    )
    return render_table(("load", m, v, note if n == 0 else "") for n, (m, v) in enumerate(rows))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/load.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="20 s of load instead of 120")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--keys", type=int, default=8)
    parser.add_argument("--duration", type=float, default=None, help="seconds of load")
    parser.add_argument("--max-requests", type=int, default=200_000, help="stop sooner")
    parser.add_argument("--drain", type=float, default=180, help="max seconds to drain")
    parser.add_argument(
        "--settle", type=float, default=65, help="seconds after the drain (past the 60 s caches)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--rounds", type=int, default=1,
        help="repeat the load on the same server: does RSS grow again after round 1?",
    )  # fmt: skip
    parser.add_argument("--size", type=int, default=64, help="image width and height")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="worker torch threads")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (server log)")
    args = parser.parse_args(argv)
    if args.duration is None:
        args.duration = 20.0 if args.quick else 120.0
    return args


def main(argv: list[str] | None = None) -> int:
    from pixelpool.testing import write_demo_models
    from pixelpool.testing.server import ServerProcess

    global SIZE, STEPS
    args = parse_args(argv)
    SIZE, STEPS = args.size, args.steps
    keys = [f"load-key-{n:02d}-{'x' * 24}" for n in range(args.keys)]
    tmp = Path(tempfile.mkdtemp(prefix="pixelpool-load-"))
    log(f"writing demo models and starting a server under {tmp}")
    write_demo_models(tmp / "models")
    env = {"PIXELPOOL_AUTH__KEYS": json.dumps(keys), "PIXELPOOL_SERVER__LOG_LEVEL": "warning"}
    if args.threads:
        env["PIXELPOOL_DEVICES__CPU__THREADS"] = str(args.threads)
    server = ServerProcess(tmp / "models", tmp / "data", env=env)  # binds 127.0.0.1 only
    try:
        server.start(timeout=300)
        assert server.process is not None
        # One job first, so the model load is not part of the load and RSS starts warm.
        warm = httpx.post(
            f"{server.url}/api/generate", json=job_body(0),
            headers={"Authorization": f"Bearer {keys[0]}"}, timeout=300,
        )  # fmt: skip
        warm.raise_for_status()
        results = []
        for n in range(args.rounds):
            log(f"load round {n + 1}/{args.rounds}: {args.clients} clients, {args.keys} keys, "
                f"{args.duration:.0f}s")  # fmt: skip
            results.append(asyncio.run(run_load(args, server.url, server.process.pid)))
    finally:
        server.stop()
        if not args.keep:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    for n, result in enumerate(results):
        if len(results) > 1:
            print(f"round {n + 1} of {len(results)}")
        print(render(result))
    if args.json:
        args.json.write_text(json.dumps(results[0] if len(results) == 1 else results, indent=2))
    ok = all(r["errors_other_than_429"] == 0 and r["ended"].get("lost", 0) == 0 for r in results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
