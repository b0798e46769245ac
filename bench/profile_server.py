"""Where a server request's time goes: py-spy on the HTTP process and the worker.

    python bench/profile_server.py [--size 256] [--steps 10] [--requests 30] [--threads N]

Starts one server on the tiny demo model (temp dir), sends sequential /api/generate
requests while py-spy samples both processes, then prints the job-record breakdown
and the heaviest frames of each process. Needs py-spy (`pip install py-spy`).
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import median
from bench.plan import Workload
from bench.servers import TIMEOUT, device_env, generate, job_view, scheduler_env, status


def summarize(raw: Path, top: int, only: str = "") -> list[str]:
    """Inclusive share of samples per frame from py-spy's collapsed-stack output."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        frames, n = stack.split(";"), int(count)
        total += n
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    lines = [f"{total} samples"]
    picked = [(f, n) for f, n in inclusive.most_common() if only in f][:top]
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in picked]
    lines.append("  self time:")
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in own.most_common(12)]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    args = parser.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        raise SystemExit("py-spy not found: pip install py-spy")

    import httpx

    from bench.plan import cpu_plan
    from pixelpool.testing import write_demo_models
    from pixelpool.testing.server import ServerProcess

    plan = cpu_plan(True, args.threads)
    workload = Workload("demo-sd", args.size, args.size, args.steps)
    with tempfile.TemporaryDirectory(prefix="pixelpool-profile-") as tmp:
        write_demo_models(Path(tmp) / "models")
        env = device_env(plan) | scheduler_env(True, plan.max_batch, 0)
        with ServerProcess(Path(tmp) / "models", Path(tmp) / "data", env=env) as server:
            client = httpx.Client(base_url=server.url, timeout=TIMEOUT)
            for seed in (1, 2):
                generate(client, workload, seed)  # load and warm up
            assert server.process is not None
            pids = {"http": server.process.pid, "worker": status(client)["devices"][0]["pid"]}
            spies = {
                name: subprocess.Popen(
                    [
                        spy,
                        "record",
                        "-p",
                        str(pid),
                        "-f",
                        "raw",
                        "-r",
                        str(args.rate),
                        "--nonblocking",
                        "-o",
                        f"{tmp}/{name}.txt",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                for name, pid in pids.items()
            }
            time.sleep(1.0)
            parts: dict[str, list[float]] = collections.defaultdict(list)
            for i in range(args.requests):
                seconds, _png, job_id = generate(client, workload, 100 + i)
                view = job_view(client, job_id)
                parts["client"].append(seconds)
                parts["queued"].append(view["queued_s"])
                parts["run"].append(view["gpu_time_s"])
                parts["post"].append(view["elapsed_s"] - view["queued_s"] - view["gpu_time_s"])
                parts["http"].append(seconds - view["elapsed_s"])
            for proc in spies.values():
                proc.send_signal(signal.SIGINT)
                proc.wait(30)
            print(f"workload {workload.label()}, {args.threads} threads, {args.requests} requests")
            print(
                "median ms: " + ", ".join(f"{k} {median(v) * 1000:.1f}" for k, v in parts.items())
            )
            for name in pids:
                raw = Path(tmp) / f"{name}.txt"
                print(f"\n== {name} process ==")
                print("\n".join(summarize(raw, 40) if raw.exists() else ["(no samples)"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
