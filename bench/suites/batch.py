"""batch (GPU only): images/s of one direct pipeline call at batch 1, 2, 4 and 8.

It shows how much a GPU gains from batching at all, which bounds what the server's
batching can win under load (the throughput suite).
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from bench.common import Row, fmt_num, median, summary
from bench.context import Context
from bench.models import direct_batch


def run(ctx: Context) -> dict[str, Any]:
    plan = ctx.plan
    results = []
    for workload in plan.batch_workloads:
        pipe = ctx.direct(workload.model)
        per_size: dict[str, Any] = {}
        for size in plan.batch_sizes:
            seeds = list(range(1, size + 1))
            warm = replace(workload, steps=2)  # same shapes, so the same kernels and buffers
            direct_batch(pipe, warm, seeds, plan.device)
            rates = []
            for _ in range(plan.batch_reps):
                start = time.perf_counter()
                direct_batch(pipe, workload, seeds, plan.device)
                rates.append(size / (time.perf_counter() - start))
            per_size[str(size)] = summary(rates)
        results.append({"workload": workload.label(), "images_per_s": per_size})
        ctx.settle()
    return {
        "workloads": results,
        "medians": {
            f"{r['workload']}: batch {b} images/s": s["median"]
            for r in results
            for b, s in r["images_per_s"].items()
        },
    }


def rows(result: dict[str, Any]) -> list[Row]:
    out: list[Row] = []
    for r in result["workloads"]:
        base = r["images_per_s"]["1"]["median"]
        for size, s in r["images_per_s"].items():
            out.append(
                ("batch", f"direct batch {size}, {r['workload']}",
                 f"{fmt_num(s['median'], 2)} img/s",
                 f"x{median([s['median']]) / base:.2f} vs batch 1, n={s['n']}")
            )  # fmt: skip
    return out
