"""throughput: 8 concurrent clients through the server (batching on, then off) vs
sequential direct calls, in images/s. Ratio = batching-on server / sequential direct.

Clients are closed-loop threads, each with its own connection, taking seeds from one
shared queue, so every mode renders the same seeds and the images can be compared:
the same seed should give the same image batched, unbatched and direct.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

import numpy as np

from bench.common import Row, fmt_num, median, ratio, summary
from bench.context import BATCHED, UNBATCHED, Context
from bench.models import direct_generate
from bench.plan import Workload
from bench.servers import compare, decode, generate, job_view, merge_comparisons, wait_idle

BASE_SEED = 5000


def _clients(ctx: Context, server: str, workload: Workload, seeds: list[int]) -> dict[str, Any]:
    """Run len(seeds) requests from N concurrent clients; images/s over the whole burst."""
    todo: queue.Queue[int] = queue.Queue()
    for seed in seeds:
        todo.put(seed)
    images: dict[int, bytes] = {}
    job_ids: list[str] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(ctx.plan.throughput_clients + 1)

    def client_loop() -> None:
        with ctx.client(server) as client:
            barrier.wait()
            while True:
                try:
                    seed = todo.get_nowait()
                except queue.Empty:
                    return
                try:
                    _s, png, job_id = generate(client, workload, seed)
                except Exception as exc:
                    errors.append(exc)
                    return
                images[seed] = png
                job_ids.append(job_id)

    threads = [threading.Thread(target=client_loop) for _ in range(ctx.plan.throughput_clients)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise errors[0]
    with ctx.client(server) as client:
        views = [job_view(client, j) for j in job_ids]
        wait_idle(client)
    sizes = [v["batch_size"] for v in views]
    per_image: dict[int, list[float]] = {}  # worker seconds per image, by batch size
    for v in views:
        if v.get("gpu_time_s"):
            per_image.setdefault(v["batch_size"], []).append(v["gpu_time_s"] / v["batch_size"])
    return {
        "images_per_s": len(seeds) / elapsed,
        "mean_batch": float(np.mean(sizes)),
        "worker_s_per_image": {b: median(v) for b, v in sorted(per_image.items())},
        "images": images,
    }


def _direct(ctx: Context, workload: Workload, seeds: list[int]) -> dict[str, Any]:
    pipe = ctx.direct(workload.model)
    start = time.perf_counter()
    images = {s: direct_generate(pipe, workload, s, ctx.plan.device) for s in seeds}
    return {"images_per_s": len(seeds) / (time.perf_counter() - start), "images": images}


def _workload_result(ctx: Context, workload: Workload) -> dict[str, Any]:
    plan = ctx.plan
    seeds = [BASE_SEED + i for i in range(plan.throughput_images)]
    direct_seeds = seeds[: plan.throughput_direct_images]
    ctx.warm_direct(workload)
    ctx.warm_server(BATCHED, workload)
    ctx.warm_server(UNBATCHED, workload)
    modes = ["batched", "unbatched", "direct"]
    rates: dict[str, list[float]] = {m: [] for m in modes}
    batches: dict[str, list[float]] = {"batched": [], "unbatched": []}
    per_image: dict[str, dict[int, float]] = {}
    last: dict[str, dict[int, Any]] = {}
    for rep in range(plan.throughput_reps):
        for mode in modes[rep % 3 :] + modes[: rep % 3]:  # rotate the order each repetition
            if mode == "direct":
                out = _direct(ctx, workload, direct_seeds)
            else:
                server = BATCHED if mode == "batched" else UNBATCHED
                out = _clients(ctx, server, workload, seeds)
                batches[mode].append(out["mean_batch"])
                per_image[mode] = out["worker_s_per_image"]
            rates[mode].append(out["images_per_s"])
            last[mode] = out["images"]
            ctx.settle()
    batched = {s: decode(png) for s, png in last["batched"].items()}
    unbatched = {s: decode(png) for s, png in last["unbatched"].items()}
    direct = {s: np.asarray(img.convert("RGB")) for s, img in last["direct"].items()}
    return {
        "workload": workload.label(),
        "clients": plan.throughput_clients,
        "images_per_run": {"server": len(seeds), "direct": len(direct_seeds)},
        "images_per_s": {m: summary(v) for m, v in rates.items()},
        "ratio": ratio(median(rates["batched"]), median(rates["direct"])),
        "ratio_unbatched": ratio(median(rates["unbatched"]), median(rates["direct"])),
        "mean_batch_size": {m: median(v) for m, v in batches.items()},
        "worker_s_per_image_by_batch_size": per_image,
        "same_seed_batched_vs_unbatched": merge_comparisons(
            [compare(batched[s], unbatched[s]) for s in seeds]
        ),
        "same_seed_unbatched_vs_direct": merge_comparisons(
            [compare(unbatched[s], direct[s]) for s in direct_seeds]
        ),
    }


def run(ctx: Context) -> dict[str, Any]:
    results = [_workload_result(ctx, w) for w in ctx.plan.throughput]
    head = results[0]
    return {
        "ratio": head["ratio"],
        "medians": {
            f"{r['workload']}: {m} images/s": r["images_per_s"][m]["median"]
            for r in results
            for m in r["images_per_s"]
        },
        "max_batch": ctx.plan.max_batch,
        "batch_window_ms": ctx.plan.batch_window_ms,
        "workloads": results,
    }


def _same(check: dict[str, Any]) -> str:
    if check.get("identical"):
        return "identical"
    return (
        f"not identical: max diff {check.get('max_abs_diff')} levels, "
        f"{100 * check.get('max_differing_fraction', 0):.3f}% of values"
    )


def rows(result: dict[str, Any]) -> list[Row]:
    out: list[Row] = []
    for r in result["workloads"]:
        ips, mb, n = r["images_per_s"], r["mean_batch_size"], r["images_per_run"]
        c = r["clients"]
        out += [
            ("throughput", f"server batching on, {c} clients, {r['workload']}",
             f"{fmt_num(ips['batched']['median'], 2)} img/s",
             f"mean batch {mb['batched']:.1f}, max_batch {result['max_batch']}, "
             f"{n['server']} images x {ips['batched']['n']}"),
            ("throughput", f"server batching off, {c} clients",
             f"{fmt_num(ips['unbatched']['median'], 2)} img/s",
             f"{n['server']} images x {ips['unbatched']['n']}"),
            ("throughput", "direct, sequential", f"{fmt_num(ips['direct']['median'], 2)} img/s",
             f"{n['direct']} images x {ips['direct']['n']}"),
            ("throughput", "ratio batching on / direct", fmt_num(r["ratio"]),
             f"batching off / direct {fmt_num(r['ratio_unbatched'])}"),
            ("throughput", "same seed: batched vs unbatched",
             str(r["same_seed_batched_vs_unbatched"]["identical"]),
             _same(r["same_seed_batched_vs_unbatched"])),
            ("throughput", "same seed: unbatched vs direct",
             str(r["same_seed_unbatched_vs_direct"]["identical"]),
             _same(r["same_seed_unbatched_vs_direct"])),
        ]  # fmt: skip
    return out
