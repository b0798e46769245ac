"""overhead: one client, HTTP /api/generate vs the same diffusers pipeline called directly.

Direct is the plain call a user writes, `pipe(...).images[0]` returning a PIL image
(diffusers converts to PIL itself); it does not PNG-encode, because a user calling
diffusers does not have to. The server's response is a PNG, so encoding, IPC, job
bookkeeping and HTTP are exactly what the ratio charges to the server.

Server and direct calls alternate in A B B A quads (direct, server, server, direct;
`bench.common.abba_quads`) and the ratio is the median of the quads' ratios, so slow
drift and bursts of load from other processes hit both sides alike (the median of
each side's calls, which this used to be, is shown beside it). Only one side runs at
a time.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bench.common import Row, abba_quads, fmt_ms, fmt_num, median, ratio, summary
from bench.context import BATCHED, Context
from bench.models import direct_generate
from bench.servers import compare, decode, generate, job_view

SEED = 1234


def _breakdown(client_s: float, view: dict[str, Any]) -> dict[str, float]:
    """Split one server request into its parts, from the job record's timestamps.

    queued: accepted -> handed to the worker; run: worker has the model -> result back
    in the HTTP process (the pipeline call, to uint8, pickling over the pipe); post:
    the rest of the job (dispatch message, PNG encode, artifact and store writes);
    http: everything outside the job (request parsing, response, client).
    """
    elapsed, queued, run = view["elapsed_s"], view["queued_s"], view["gpu_time_s"] or 0.0
    return {
        "queued": queued,
        "run": run,
        "post": max(0.0, elapsed - queued - run),
        "http": max(0.0, client_s - elapsed),
    }


def _workload_result(ctx: Context, workload: Any) -> dict[str, Any]:
    plan = ctx.plan
    pipe = ctx.direct(workload.model)
    ctx.warm_direct(workload)
    ctx.warm_server(BATCHED, workload)
    calls: list[tuple[float, str]] = []  # each request's client seconds and job id
    out: dict[str, Any] = {}
    with ctx.client(BATCHED) as client:

        def server_call(_seed: int) -> None:  # the job record is read after the quads
            seconds, out["png"], job_id = generate(client, workload, SEED)
            calls.append((seconds, job_id))

        def direct_call(_seed: int) -> None:
            out["image"] = direct_generate(pipe, workload, SEED, plan.device)

        # Quads of two calls a side, as many calls as `overhead_reps` (rounded up).
        seeds = [SEED] * (2 * ((plan.overhead_reps + 1) // 2))
        direct_s, server_s, quads = abba_quads(direct_call, server_call, seeds)
        parts = [_breakdown(seconds, job_view(client, job_id)) for seconds, job_id in calls]
        check = compare(decode(out["png"]), np.asarray(out["image"].convert("RGB")))
    parts_median = {k: median([p[k] for p in parts]) for k in parts[0]}
    # What the server adds outside the pipeline call, from its own timestamps: unlike
    # the ratio it does not move with the compute's run-to-run noise.
    fixed = parts_median["queued"] + parts_median["post"] + parts_median["http"]
    return {
        "workload": workload.label(),
        "server_s": summary(server_s),
        "direct_s": summary(direct_s),
        "ratio": median(quads),
        "ratio_of_medians": ratio(median(server_s), median(direct_s)),
        "ratio_of_min": ratio(min(server_s), min(direct_s)),
        "quad_ratios": quads,
        "server_minus_direct_ms": (median(server_s) - median(direct_s)) * 1000,
        "fixed_overhead_ms": fixed * 1000,
        "fixed_overhead_ratio": ratio(median(direct_s) + fixed, median(direct_s)),
        "breakdown_s": parts_median,
        "same_image_as_direct": check,
        "raw": {"server_s": server_s, "direct_s": direct_s},
    }


def run(ctx: Context) -> dict[str, Any]:
    results = [_workload_result(ctx, w) for w in ctx.plan.overhead]
    head = results[0]
    return {
        "ratio": head["ratio"],
        "medians": {
            f"{r['workload']}: {k}": r[k + "_s"]["median"]
            for r in results
            for k in ("server", "direct")
        },
        "workloads": results,
        "threads": ctx.plan.threads,
    }


def rows(result: dict[str, Any]) -> list[Row]:
    out: list[Row] = []
    for r in result["workloads"]:
        b = r["breakdown_s"]
        n = r["server_s"]["n"]
        out += [
            ("overhead", f"server /api/generate, {r['workload']}", fmt_ms(r["server_s"]["median"]),
             f"n={n}, min {fmt_ms(r['server_s']['min'])}"),
            ("overhead", "direct pipe(...).images[0]", fmt_ms(r["direct_s"]["median"]),
             f"n={n}, min {fmt_ms(r['direct_s']['min'])}"),
            ("overhead", "ratio server / direct", fmt_num(r["ratio"]),
             f"median of {len(r['quad_ratios'])} A B B A quads; "
             f"{fmt_num(r['ratio_of_medians'])} of the medians, "
             f"{fmt_num(r['ratio_of_min'])} of mins"),
            ("overhead", "server breakdown", fmt_ms(sum(b.values())),
             "run {} + queued {} + post {} + http {}".format(
                 *(fmt_ms(b[k]) for k in ("run", "queued", "post", "http")))),
            ("overhead", "fixed cost: queued + post + http", fmt_ms(r["fixed_overhead_ms"] / 1000),
             f"(direct + fixed) / direct {fmt_num(r['fixed_overhead_ratio'])}"),
            ("overhead", "same image as direct", str(r["same_image_as_direct"].get("identical")),
             f"max diff {r['same_image_as_direct'].get('max_abs_diff')} levels"),
        ]  # fmt: skip
    return out
