"""stream: 8 closed-loop clients on two batching servers that differ only in
`[devices.<id>] stream_results`, side by side.

Streamed, a worker sends each job's result as soon as its image is decoded, so the
server stores it and its client sends the next request while the rest of the batch
decodes; not streamed, the results go out once the whole batch is decoded. Each
repetition runs one burst of `throughput_images` on each server, in A B then B A
order (the machine's speed drifts by more than the difference within a minute); the
ratio is the median over the repetitions of streamed / not streamed images/s. The
same seeds run on both, so their images must be identical.

Default on `--gpu` (where "auto" streams), opt-in on the CPU (where it does not:
docs/benchmarks.md, "Each result as it is decoded").
"""

from __future__ import annotations

from typing import Any

from bench.common import Row, fmt_num, median, summary
from bench.context import Context
from bench.servers import compare, decode, merge_comparisons
from bench.suites.throughput import closed_loop

STREAMED, UNSTREAMED = "streamed", "unstreamed"  # the two servers (bench/cli.py)
CLIENTS = 8
BASE_SEED = 9000


def _workload(ctx: Context, workload: Any) -> dict[str, Any]:
    plan = ctx.plan
    for server in (STREAMED, UNSTREAMED):
        ctx.warm_server(server, workload)
    rates: dict[str, list[float]] = {STREAMED: [], UNSTREAMED: []}
    batches: dict[str, list[float]] = {STREAMED: [], UNSTREAMED: []}
    pairs: list[float] = []
    checks = []
    for rep in range(plan.stream_reps):
        seeds = [BASE_SEED + rep * 1000 + i for i in range(plan.throughput_images)]
        order = (STREAMED, UNSTREAMED) if rep % 2 == 0 else (UNSTREAMED, STREAMED)
        out = {}
        for server in order:
            out[server] = closed_loop(ctx, server, workload, seeds, CLIENTS)
            rates[server].append(out[server]["images_per_s"])
            batches[server].append(out[server]["mean_batch"])
            ctx.settle()
        pairs.append(out[STREAMED]["images_per_s"] / out[UNSTREAMED]["images_per_s"])
        a, b = out[STREAMED]["images"], out[UNSTREAMED]["images"]
        checks += [compare(decode(a[s]), decode(b[s])) for s in seeds]
    return {
        "workload": workload.label(),
        "clients": CLIENTS,
        "images_per_burst": plan.throughput_images,
        "images_per_s": {k: summary(v) for k, v in rates.items()},
        "mean_batch_size": {k: median(v) for k, v in batches.items()},
        "pair_ratios": pairs,
        "ratio": median(pairs),
        "same_seed_streamed_vs_not": merge_comparisons(checks),
    }


def run(ctx: Context) -> dict[str, Any]:
    results = [_workload(ctx, w) for w in ctx.plan.throughput[:1]]
    return {"workloads": results, "ratio": results[0]["ratio"]}


def rows(result: dict[str, Any]) -> list[Row]:
    out: list[Row] = []
    for r in result["workloads"]:
        ips, pairs = r["images_per_s"], r["pair_ratios"]
        for server, label in ((STREAMED, "on"), (UNSTREAMED, "off")):
            out.append(("stream", f"{r['clients']} clients, stream_results {label}, "
                        f"{r['workload']}", f"{fmt_num(ips[server]['median'], 2)} img/s",
                        f"mean batch {r['mean_batch_size'][server]:.1f}; "
                        f"{r['images_per_burst']} images x {ips[server]['n']}"))  # fmt: skip
        out += [
            ("stream", "streamed / not streamed", fmt_num(r["ratio"]),
             f"median of {len(pairs)} A B / B A pairs ({fmt_num(min(pairs))} to "
             f"{fmt_num(max(pairs))})"),
            ("stream", "same seed: streamed vs not",
             str(r["same_seed_streamed_vs_not"]["identical"]), ""),
        ]  # fmt: skip
    return out
