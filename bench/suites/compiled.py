"""compile (GPU only): seconds per image at one client, the server and the direct
diffusers call, each with torch.compile off and on.

On: the server's `[devices.cuda0] compile` setting with `compile_warmup` at the
workload's size (compiled when the model loads, before the first request); the
direct side compiles its UNet the same way (`unet.compile(dynamic=False)`) and is
warmed up by one call. The first-call (compile) time of each is reported apart.
The four sides alternate, so drift hits them alike.
"""

from __future__ import annotations

import time
from typing import Any

from bench.common import Row, fmt_ms, fmt_num, median, ratio, summary
from bench.context import BATCHED, Context
from bench.models import direct_generate, load_direct
from bench.servers import generate

COMPILED = "compiled"  # the batching server with torch.compile on
SEED = 4321


def _compiled_direct(ctx: Context, workload: Any) -> tuple[Any, float]:
    """A second direct pipeline with its UNet compiled; its first call's time."""
    pipe = load_direct(ctx.model_paths[workload.model], ctx.plan.device)
    pipe.unet.compile(mode=ctx.plan.compile_mode, dynamic=False)
    start = time.perf_counter()
    direct_generate(pipe, workload, SEED, ctx.plan.device)
    return pipe, time.perf_counter() - start


def _workload(ctx: Context, workload: Any) -> dict[str, Any]:
    plan = ctx.plan
    eager = ctx.direct(workload.model)
    ctx.warm_direct(workload)
    ctx.warm_server(BATCHED, workload)
    compiled, direct_first_s = _compiled_direct(ctx, workload)
    start = time.perf_counter()
    ctx.warm_server(COMPILED, workload)  # loads the model, compiles the warm-up shapes
    server_first_s = time.perf_counter() - start
    times: dict[str, list[float]] = {k: [] for k in ("direct", "direct_compiled", "server",
                                                     "server_compiled")}  # fmt: skip
    with ctx.client(BATCHED) as plain, ctx.client(COMPILED) as fast:
        for rep in range(plan.compile_reps):
            sides = list(times) if rep % 2 == 0 else list(reversed(times))
            for side in sides:
                start = time.perf_counter()
                if side == "direct":
                    direct_generate(eager, workload, SEED, plan.device)
                elif side == "direct_compiled":
                    direct_generate(compiled, workload, SEED, plan.device)
                else:
                    generate(fast if side == "server_compiled" else plain, workload, SEED)
                times[side].append(time.perf_counter() - start)
                ctx.settle()
    del compiled
    s = {k: median(v) for k, v in times.items()}
    return {
        "workload": workload.label(),
        "s_per_image": {k: summary(v) for k, v in times.items()},
        "speedup_direct": ratio(s["direct"], s["direct_compiled"]),
        "speedup_server": ratio(s["server"], s["server_compiled"]),
        "ratio_server_direct": ratio(s["server"], s["direct"]),
        "ratio_server_direct_compiled": ratio(s["server_compiled"], s["direct_compiled"]),
        "first_call_s": {"direct_compiled": direct_first_s, "server_compiled": server_first_s},
    }


def run(ctx: Context) -> dict[str, Any]:
    results = [_workload(ctx, w) for w in ctx.plan.compile_workloads]
    ctx.drop_direct()
    return {
        "mode": ctx.plan.compile_mode,
        "workloads": results,
        "medians": {
            f"{r['workload']}: {side} s/image": v["median"]
            for r in results
            for side, v in r["s_per_image"].items()
        },
    }


def rows(result: dict[str, Any]) -> list[Row]:
    out: list[Row] = []
    for r in result["workloads"]:
        t = r["s_per_image"]
        first = r["first_call_s"]
        out += [
            ("compile", f"direct, {r['workload']}", fmt_ms(t["direct"]["median"]),
             f"n={t['direct']['n']}"),
            ("compile", f"direct, compile={result['mode']}",
             fmt_ms(t["direct_compiled"]["median"]),
             f"x{fmt_num(r['speedup_direct'])} faster; "
             f"first call {fmt_ms(first['direct_compiled'])}"),
            ("compile", "server, 1 client", fmt_ms(t["server"]["median"]),
             f"server / direct {fmt_num(r['ratio_server_direct'])}"),
            ("compile", f"server, compile={result['mode']}",
             fmt_ms(t["server_compiled"]["median"]),
             f"x{fmt_num(r['speedup_server'])} faster; server / direct "
             f"{fmt_num(r['ratio_server_direct_compiled'])}; load + warm-up "
             f"{fmt_ms(first['server_compiled'])}"),
        ]  # fmt: skip
    return out
