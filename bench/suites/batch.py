"""batch (GPU only): images/s of one direct pipeline call at batch 1 to 16, and the
model FLOPs utilisation (MFU) at the best batch.

It shows how much a GPU gains from batching at all, which bounds what the server's
batching can win under load (the throughput suite). MFU: bench/mfu.py.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from bench import mfu
from bench.common import Row, fmt_num, median, summary
from bench.context import Context
from bench.models import direct_batch


def utilisation(pipe: Any, workload: Any, per_size: dict[str, Any]) -> dict[str, Any]:
    """MFU at the batch size with the most images/s."""
    import torch

    best = max(per_size, key=lambda size: per_size[size]["median"])
    rate = per_size[best]["median"]
    call = mfu.measure_call_flops(pipe, workload, int(best))
    per_image = mfu.flops_per_image(call, int(best), workload.steps)
    name = torch.cuda.get_device_name(0)
    peak = mfu.peak_tflops(name)
    return {"best_batch": int(best), "images_per_s": rate, "denoiser_tflops_per_image":
            per_image / 1e12, "gpu": name, "peak_tflops": peak,
            "mfu": mfu.mfu(per_image, rate, peak)}  # fmt: skip


def run(ctx: Context) -> dict[str, Any]:
    plan = ctx.plan
    results = []
    for workload in plan.batch_workloads:
        pipe = ctx.direct(workload.model)
        per_size: dict[str, Any] = {}
        sizes = [n for n in plan.batch_sizes if n <= plan.batch_max.get(workload.model, n)]
        for size in sizes:
            seeds = list(range(1, size + 1))
            warm = replace(workload, steps=2)  # same shapes, so the same kernels and buffers
            direct_batch(pipe, warm, seeds, plan.device)
            rates = []
            for _ in range(plan.batch_reps):
                start = time.perf_counter()
                direct_batch(pipe, workload, seeds, plan.device)
                rates.append(size / (time.perf_counter() - start))
            per_size[str(size)] = summary(rates)
        results.append({"workload": workload.label(), "images_per_s": per_size,
                        "utilisation": utilisation(pipe, workload, per_size)})  # fmt: skip
        ctx.settle()
    return {
        "workloads": results,
        "medians": {
            f"{r['workload']}: batch {b} images/s": s["median"]
            for r in results
            for b, s in r["images_per_s"].items()
        }
        | {f"{r['workload']}: MFU at best batch": r["utilisation"]["mfu"] for r in results},
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
        u = r["utilisation"]
        value = "n/a (GPU not in bench/mfu.py)" if u["mfu"] is None else f"{u['mfu']:.1%}"
        out.append(("batch", f"MFU at best batch {u['best_batch']}, {r['workload']}", value,
                    f"{u['denoiser_tflops_per_image']:.1f} TFLOP/image (denoiser), "
                    f"peak {u['peak_tflops']} TFLOPS, {u['gpu']}"))  # fmt: skip
    return out
