"""throughput: the batching server at 1, 4, 8 and 16 concurrent clients against the
diffusers pipeline called directly, one image at a time and as one batch.

The direct batch (one call for `throughput_direct_images` seeds) is the ceiling: what
the model itself gains from batching; sequential direct calls are the floor a server
must beat. Ratios: server at 8 clients / direct batch and / sequential direct; at one
client, the server's seconds per image / the direct call's. The server without
batching (8 clients) shows what batching adds.

The machine's speed drifts (on a shared 2-core machine by more than the server's
overhead within a minute), so the two ratios with tight targets compare modes run
side by side, A B B A (a, b, b, a), and take the median over blocks:

- one client against the direct call, image by image: quads of about a second over
  the direct run's seeds, each giving the server's seconds over the direct call's
  (whole 8-image phases gave one ratio per repetition, and three of those spread
  from 0.87 to 1.17);
- eight clients against the direct batch: in every repetition the direct batch,
  the 8-client run twice, the direct batch again, giving one ratio of images/s.

The ratio of the modes' medians is shown beside each.

Clients are closed-loop threads, each with its own connection, taking seeds from one
shared queue, so the modes render the same seeds and the images can be compared: the
same seed should give the same image batched, unbatched and direct. Every repetition
runs every mode, in an order rotated by one each time, so a slow phase of the machine
does not land on one mode; with --quick the modes outside the two targets (4 and 16
clients, no batching) run in the first repetition only and with fewer images, which
keeps the whole quick run under 3 minutes on 2 cores.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

import numpy as np

from bench.common import Row, abba_block, abba_quads, fmt_num, median, ratio, steady_rate, summary
from bench.context import BATCHED, UNBATCHED, Context
from bench.models import direct_batch, direct_generate
from bench.plan import Workload
from bench.servers import compare, decode, generate, job_view, merge_comparisons, wait_idle

BASE_SEED = 5000
UNBATCHED_CLIENTS = 8
DIRECT, DIRECT_BATCH, UNBATCHED_MODE = "direct", "direct batch", "unbatched"


def closed_loop(
    ctx: Context, server: str, workload: Workload, seeds: list[int], clients: int
) -> dict[str, Any]:
    """Run len(seeds) requests from `clients` concurrent clients: images/s once every
    client is in its loop (see `steady_rate`), and over the whole burst."""
    todo: queue.Queue[int] = queue.Queue()
    for seed in seeds:
        todo.put(seed)
    images: dict[int, bytes] = {}
    job_ids: list[str] = []
    finished: list[float] = []  # when each response arrived
    errors: list[BaseException] = []
    barrier = threading.Barrier(clients + 1)

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
                finished.append(time.perf_counter())
                images[seed] = png
                job_ids.append(job_id)

    threads = [threading.Thread(target=client_loop) for _ in range(clients)]
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
    steady = steady_rate(finished, clients)
    return {
        "images_per_s": steady or len(seeds) / elapsed,
        "burst_images_per_s": len(seeds) / elapsed,
        "mean_batch": float(np.mean(sizes)),
        "worker_s_per_image": {b: median(v) for b, v in sorted(per_image.items())},
        "images": images,
    }


def _one_client_quads(
    ctx: Context, workload: Workload, seeds: list[int]
) -> tuple[dict[str, Any], dict[str, Any], list[float]]:
    """Direct calls and one client's requests, image by image as A B B A quads: (the
    direct run, the one-client run, each quad's server seconds / direct seconds)."""
    pipe = ctx.direct(workload.model)
    direct_images: dict[int, Any] = {}
    server_images: dict[int, bytes] = {}
    job_ids: list[str] = []
    with ctx.client(BATCHED) as client:

        def direct_call(seed: int) -> None:
            direct_images[seed] = direct_generate(pipe, workload, seed, ctx.plan.device)

        def server_call(seed: int) -> None:
            _s, server_images[seed], job_id = generate(client, workload, seed)
            job_ids.append(job_id)

        direct_s, server_s, quads = abba_quads(direct_call, server_call, seeds)
        views = [job_view(client, j) for j in job_ids]
    per_image = [v["gpu_time_s"] for v in views if v.get("gpu_time_s")]
    one = {
        "images_per_s": len(server_s) / sum(server_s),
        "mean_batch": float(np.mean([v["batch_size"] for v in views])),
        "worker_s_per_image": {1: median(per_image)} if per_image else {},
        "images": server_images,
    }
    direct = {"images_per_s": len(direct_s) / sum(direct_s), "images": direct_images}
    return direct, one, quads


def _direct(ctx: Context, workload: Workload, seeds: list[int], batched: bool) -> dict[str, Any]:
    pipe = ctx.direct(workload.model)
    start = time.perf_counter()
    if batched:
        made = direct_batch(pipe, workload, seeds, ctx.plan.device)
        images = dict(zip(seeds, made, strict=True))
    else:
        images = {s: direct_generate(pipe, workload, s, ctx.plan.device) for s in seeds}
    return {"images_per_s": len(seeds) / (time.perf_counter() - start), "images": images}


def _server_mode(clients: int) -> str:
    return f"{clients} clients"


def _run_mode(ctx: Context, workload: Workload, mode: str, seeds: list[int]) -> dict[str, Any]:
    direct_seeds = seeds[: ctx.plan.throughput_direct_images]
    if mode in (DIRECT, DIRECT_BATCH):
        return _direct(ctx, workload, direct_seeds, batched=mode == DIRECT_BATCH)
    if mode == UNBATCHED_MODE:
        return closed_loop(ctx, UNBATCHED, workload, seeds, UNBATCHED_CLIENTS)
    return closed_loop(ctx, BATCHED, workload, seeds, int(mode.split()[0]))


def _ratios(rate: dict[str, float], mode: str) -> dict[str, float]:
    return {"to_direct": ratio(rate[mode], rate[DIRECT]),
            "to_direct_batch": ratio(rate[mode], rate[DIRECT_BATCH])}  # fmt: skip


def _workload_result(ctx: Context, workload: Workload) -> dict[str, Any]:
    plan = ctx.plan
    seeds = [BASE_SEED + i for i in range(plan.throughput_images)]
    ctx.warm_direct(workload)
    ctx.warm_server(BATCHED, workload)
    ctx.warm_server(UNBATCHED, workload)
    modes = [DIRECT, DIRECT_BATCH, *map(_server_mode, plan.throughput_clients), UNBATCHED_MODE]
    one = _server_mode(1) if 1 in plan.throughput_clients else None
    direct_seeds = seeds[: plan.throughput_direct_images]
    eight = _server_mode(8) if 8 in plan.throughput_clients else modes[-2]
    paired = eight != one  # eight clients run beside the direct batch, A B B A
    inside = {one, eight if paired else None}  # modes that run inside another's block
    order = [m for m in modes if m not in inside]
    rates: dict[str, list[float]] = {m: [] for m in modes}
    quads: list[float] = []  # server seconds / direct seconds, one per A B B A quad
    pairs: list[float] = []  # 8 clients' images/s / the direct batch's, one per block
    bursts: dict[str, list[float]] = {}  # server modes: images/s over the whole burst
    batches: dict[str, list[float]] = {}
    per_image: dict[str, dict[int, float]] = {}
    last: dict[str, dict[int, Any]] = {}
    targets = {DIRECT if one else None, DIRECT_BATCH if paired else None}
    other_reps = plan.throughput_other_reps or plan.throughput_reps
    other_seeds = seeds[: plan.throughput_other_images or len(seeds)]
    quad_seeds = seeds[: plan.throughput_one_client_images or len(direct_seeds)]
    for rep in range(plan.throughput_reps):
        shift = rep % len(order)
        for mode in order[shift:] + order[:shift]:
            if mode not in targets and rep >= other_reps:
                continue  # enough of it (--quick): the side-by-side targets go on
            if mode == DIRECT and one:
                direct_run, one_run, more = _one_client_quads(ctx, workload, quad_seeds)
                quads += more
                runs = [(DIRECT, direct_run), (one, one_run)]
            elif mode == DIRECT_BATCH and paired:
                ceiling, served, block = abba_block(
                    lambda: _run_mode(ctx, workload, DIRECT_BATCH, seeds),
                    lambda: _run_mode(ctx, workload, eight, seeds),
                    ctx.settle,
                )
                pairs.append(block)
                runs = [(DIRECT_BATCH, r) for r in ceiling] + [(eight, r) for r in served]
            else:
                runs = [(mode, _run_mode(ctx, workload, mode, other_seeds))]
            for name, out in runs:
                if "mean_batch" in out:
                    batches.setdefault(name, []).append(out["mean_batch"])
                    per_image[name] = out["worker_s_per_image"]
                rates[name].append(out["images_per_s"])
                if "burst_images_per_s" in out:
                    bursts.setdefault(name, []).append(out["burst_images_per_s"])
                last[name] = out["images"]
            ctx.settle()
    rate = {m: median(v) for m, v in rates.items()}
    unpaired = ratio(rate[eight], rate[DIRECT_BATCH])
    batched = {s: decode(png) for s, png in last[eight].items()}
    unbatched = {s: decode(png) for s, png in last[UNBATCHED_MODE].items()}
    direct = {s: np.asarray(img.convert("RGB")) for s, img in last[DIRECT].items()}
    direct_b = {s: np.asarray(img.convert("RGB")) for s, img in last[DIRECT_BATCH].items()}
    return {
        "workload": workload.label(),
        "images_per_run": {
            "server": len(seeds),
            "other server modes": len(other_seeds),
            "direct": len(quad_seeds if one else direct_seeds),
            "direct batch": len(direct_seeds),
        },
        "images_per_s": {m: summary(v) for m, v in rates.items()},
        "burst_images_per_s": {m: summary(v) for m, v in bursts.items()},
        "ratio": ratio(rate[eight], rate[DIRECT]),
        "ratio_to_direct_batch": median(pairs) if pairs else unpaired,
        "ratio_to_direct_batch_unpaired": unpaired,
        "ratio_unbatched": ratio(rate[UNBATCHED_MODE], rate[DIRECT]),
        "direct_batch_gain": ratio(rate[DIRECT_BATCH], rate[DIRECT]),
        "one_client_time_ratio": median(quads) if quads else None,
        "one_client_quad_ratios": quads,
        "direct_batch_block_ratios": pairs,
        "one_client_time_ratio_unpaired": ratio(rate[DIRECT], rate[one]) if one else None,
        "by_clients": {m: _ratios(rate, m) for m in modes if m.endswith("clients")},
        "mean_batch_size": {m: median(v) for m, v in batches.items()},
        "worker_s_per_image_by_batch_size": per_image,
        "same_seed_batched_vs_unbatched": _same_seeds(batched, unbatched),
        "same_seed_unbatched_vs_direct": _same_seeds(unbatched, direct),
        "same_seed_direct_batch_vs_direct": _same_seeds(direct_b, direct),
    }


def _same_seeds(a: dict[int, np.ndarray], b: dict[int, np.ndarray]) -> dict[str, Any]:
    """Image by image over the seeds both modes rendered (modes render different counts)."""
    return merge_comparisons([compare(a[s], b[s]) for s in sorted(a.keys() & b.keys())])


def run(ctx: Context) -> dict[str, Any]:
    results = [_workload_result(ctx, w) for w in ctx.plan.throughput]
    head = results[0]
    return {
        "ratio": head["ratio"],
        "ratio_to_direct_batch": head["ratio_to_direct_batch"],
        "one_client_time_ratio": head["one_client_time_ratio"],
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


def _burst(result: dict[str, Any], mode: str) -> str:
    burst = result["burst_images_per_s"].get(mode)
    return f"whole burst {fmt_num(burst['median'], 2)} img/s; " if burst else ""


def _images(result: dict[str, Any], mode: str) -> str:
    n = result["images_per_run"]
    if mode == _server_mode(1):
        return f"{n['direct']} images"  # its quads run the direct call's seeds
    if mode == _server_mode(8) or n["other server modes"] == n["server"]:
        return f"{n['server']} images"
    return f"{n['other server modes']} images"


def rows(result: dict[str, Any]) -> list[Row]:
    out: list[Row] = []
    settings = f"max_batch {result['max_batch']}, window {result['batch_window_ms']}"
    for r in result["workloads"]:
        ips, mb, n = r["images_per_s"], r["mean_batch_size"], r["images_per_run"]
        out += [
            ("throughput", f"direct, sequential, {r['workload']}",
             f"{fmt_num(ips[DIRECT]['median'], 2)} img/s",
             f"{n['direct']} images x {ips[DIRECT]['n']}"),
            ("throughput", f"direct, one batch of {n['direct batch']} (the ceiling)",
             f"{fmt_num(ips[DIRECT_BATCH]['median'], 2)} img/s",
             f"x{fmt_num(r['direct_batch_gain'], 2)} sequential"),
        ]  # fmt: skip
        for mode, ratios in r["by_clients"].items():
            out.append(
                ("throughput", f"server, {mode}", f"{fmt_num(ips[mode]['median'], 2)} img/s",
                 f"{_images(r, mode)} x {ips[mode]['n']}; {_burst(r, mode)}"
                 f"mean batch {mb[mode]:.1f}; "
                 f"x{fmt_num(ratios['to_direct'], 2)} sequential, "
                 f"x{fmt_num(ratios['to_direct_batch'], 2)} direct batch; {settings}")
            )  # fmt: skip
        out += [
            ("throughput", f"server without batching, {UNBATCHED_CLIENTS} clients",
             f"{fmt_num(ips[UNBATCHED_MODE]['median'], 2)} img/s",
             f"{_images(r, UNBATCHED_MODE)} x {ips[UNBATCHED_MODE]['n']}; "
             f"{_burst(r, UNBATCHED_MODE)}x{fmt_num(r['ratio_unbatched'], 2)} sequential"),
            ("throughput", "8 clients / direct batch (target >= 0.95)",
             fmt_num(r["ratio_to_direct_batch"]),
             f"median of the A B B A blocks; {fmt_num(r['ratio_to_direct_batch_unpaired'])} "
             "of the medians"),
            ("throughput", "8 clients / sequential direct (target >= 1.15)",
             fmt_num(r["ratio"]), ""),
        ]  # fmt: skip
        if r["one_client_time_ratio"] is not None:
            unpaired = fmt_num(r["one_client_time_ratio_unpaired"])
            out.append(("throughput", "1 client: server time / direct time (target <= 1.03)",
                        fmt_num(r["one_client_time_ratio"]),
                        f"median of {len(r['one_client_quad_ratios'])} A B B A quads; "
                        f"{unpaired} of the medians"))  # fmt: skip
        for key, label in (
            ("same_seed_batched_vs_unbatched", "same seed: batched vs unbatched"),
            ("same_seed_unbatched_vs_direct", "same seed: unbatched vs direct"),
            ("same_seed_direct_batch_vs_direct", "same seed: direct batch vs direct"),
        ):
            out.append(("throughput", label, str(r[key]["identical"]), _same(r[key])))
    return out
