"""Real pixelpool servers for the suites, and the few HTTP calls the suites make.

Servers run as `pixelpool serve` subprocesses (`pixelpool.testing.server`), configured
only through PIXELPOOL_* environment variables, with the data dir under the run's
temp dir. Several can start at once: start-up is mostly imports, so doing it in
parallel saves wall time before any measurement begins.
"""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

from bench.common import log
from bench.plan import Plan, Workload

TIMEOUT = httpx.Timeout(900.0, connect=10.0)
START_TIMEOUT_S = 120  # imports and a worker start; models load on the first request


def device_env(plan: Plan, **device_keys: Any) -> dict[str, str]:
    """PIXELPOOL_DEVICES__<ID>__<KEY> for the device the plan runs on (cpu or cuda0)."""
    dev = "CPU" if plan.device == "cpu" else "CUDA0"
    env = {f"PIXELPOOL_DEVICES__{dev}__THREADS": str(plan.threads)}
    for key, value in device_keys.items():
        env[f"PIXELPOOL_DEVICES__{dev}__{key.upper()}"] = str(value)
    return env


def scheduler_env(batching: bool, max_batch: int | str, window_ms: int | str) -> dict[str, str]:
    return {
        "PIXELPOOL_SCHEDULER__BATCHING": "true" if batching else "false",
        "PIXELPOOL_SCHEDULER__MAX_BATCH": str(max_batch),
        "PIXELPOOL_SCHEDULER__BATCH_WINDOW_MS": str(window_ms),
    }


class Servers:
    """Named servers, started on demand (several at once) and all stopped at the end."""

    def __init__(self, models_dir: Path, data_root: Path, plan: Plan) -> None:
        self.models_dir = models_dir
        self.data_root = data_root
        self.plan = plan
        self.configs: dict[str, dict[str, str]] = {}
        self.running: dict[str, Any] = {}
        self._lock = threading.RLock()  # client threads may ask for a URL at the same time

    def define(self, name: str, env: dict[str, str]) -> None:
        self.configs[name] = env

    def start(self, *names: str) -> None:
        """Start the named servers in parallel and wait until each has a ready worker."""

        with self._lock:
            self._start(names)

    def _start(self, names: tuple[str, ...]) -> None:
        from pixelpool.testing.server import ServerProcess

        todo = [n for n in names if n not in self.running]
        errors: list[BaseException] = []

        def one(name: str) -> None:
            server = ServerProcess(self.models_dir, self.data_root / name, env=self.configs[name])
            try:
                server.start(timeout=START_TIMEOUT_S)
                self.running[name] = server
            except BaseException as exc:  # reported below, after every start has finished
                server.stop()
                errors.append(exc)

        started = time.perf_counter()
        threads = [threading.Thread(target=one, args=(n,)) for n in todo]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise RuntimeError(f"a benchmark server failed to start: {errors[0]}") from errors[0]
        if todo:
            log(f"servers {', '.join(todo)} ready in {time.perf_counter() - started:.1f}s")
            if self.plan.device == "cuda":
                for name in todo:
                    self._check_cuda(name)

    def _check_cuda(self, name: str) -> None:
        """A GPU run must not silently measure a CPU worker (no nvidia-smi -> CPU fallback)."""
        status = httpx.get(f"{self.running[name].url}/api/status", timeout=30).json()
        kinds = {d["kind"] for d in status["devices"]}
        if kinds != {"cuda"}:
            raise RuntimeError(
                f"--gpu: server {name} has workers on {sorted(kinds)}, expected only cuda "
                "(pixelpool finds GPUs with nvidia-smi: is it on PATH?)"
            )

    def url(self, name: str) -> str:
        self.start(name)
        return self.running[name].url

    def stop(self, *names: str) -> None:
        """Stop the named servers (none named: none stopped; see stop_all)."""
        with self._lock:
            for name in names:
                server = self.running.pop(name, None)
                if server is not None:
                    server.stop()

    def stop_all(self) -> None:
        self.stop(*list(self.running))

    def log_tail(self, name: str) -> str:
        server = self.running.get(name)
        return server.log() if server is not None else ""


def generate(client: httpx.Client, workload: Workload, seed: int) -> tuple[float, bytes, str]:
    """POST /api/generate; returns (seconds, PNG bytes, job id). Raises on any non-200."""
    start = time.perf_counter()
    response = client.post("/api/generate", json=workload.request(seed))
    elapsed = time.perf_counter() - start
    if response.status_code != 200:
        raise RuntimeError(f"/api/generate -> {response.status_code}: {response.text[:500]}")
    return elapsed, response.content, response.headers.get("x-job-id", "")


def job_view(client: httpx.Client, job_id: str) -> dict[str, Any]:
    response = client.get(f"/api/job/{job_id}")
    response.raise_for_status()
    return response.json()


def status(client: httpx.Client) -> dict[str, Any]:
    response = client.get("/api/status")
    response.raise_for_status()
    return response.json()


def wait_idle(client: httpx.Client, timeout: float = 600) -> None:
    """Until no job is queued or running: suites must not overlap on the worker."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = status(client)
        if st["queue_depth"] == 0 and not any(d["busy"] for d in st["devices"]):
            return
        time.sleep(0.05)
    raise TimeoutError("server still busy")


def decode(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def compare(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    """Identical, or by how much: max |difference| in 8-bit levels and share of differing values."""
    if a.shape != b.shape:
        return {"identical": False, "note": f"shapes differ: {a.shape} vs {b.shape}"}
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return {
        "identical": bool(diff.max() == 0),
        "max_abs_diff": int(diff.max()),
        "differing_fraction": float((diff > 0).mean()),
    }


def merge_comparisons(items: list[dict[str, Any]]) -> dict[str, Any]:
    if not items:
        return {"identical": None, "images": 0}
    return {
        "identical": all(i.get("identical") for i in items),
        "images": len(items),
        "max_abs_diff": max(i.get("max_abs_diff", 255) for i in items),
        "max_differing_fraction": max(i.get("differing_fraction", 1.0) for i in items),
    }
