"""cluster: the Ray backend with 1, 2 and 4 CPU worker actors, 16 clients.

Each count gets its own server (`cluster.backend = "ray"`, a Ray runtime started by
the server on this machine, `cluster.cpu_actors_per_node` actors of one torch thread
each). Images/s over a burst from 16 clients; the ratio is to N times one actor's
rate (target >= 0.9), side by side: the one-actor server stays up while each N is
measured beside it in bursts one, N, N, one. One machine bounds it at cores / N where
N exceeds its cores (4 one-thread actors on 2 cores: 0.5), and the server and its
clients share those cores; on a real cluster each actor brings its own machine.
Beside it, the Ray backend's own cost: seconds per image at one client, one Ray actor
against a local worker process, both one thread, side by side in A B B A quads
(ratio > 1: what the actor calls add). And the ceiling: N processes calling diffusers
directly at once, one thread each, the same images in batches of 8
(`bench/parallel_direct.py`): what this machine gives N independent workers with no
server at all. Opt-in.
"""

from __future__ import annotations

import os
import secrets
from typing import Any

from bench import parallel_direct
from bench.common import Row, abba_block, abba_quads, fmt_num, log, median
from bench.context import Context
from bench.plan import Workload
from bench.servers import generate, scheduler_env
from bench.suites.throughput import closed_loop

ACTORS = (1, 2, 4)
CLIENTS = 16
BASE_SEED = 9000
ONE_CLIENT_IMAGES = 10
# The servers' Ray runtimes take their auth token from here: with none at hand, Ray writes
# one to ~/.ray/auth_token, which then turns token auth on for every later `ray start` on
# the machine (docs/deploy.md). A benchmark leaves the home dir alone.
RAY_TOKEN = os.environ.get("RAY_AUTH_TOKEN") or secrets.token_hex(32)
DIRECT_BATCH = 8


def _server(actors: int) -> str:
    return f"cluster-{actors}"


def _cores() -> int:
    return os.cpu_count() or 1


def _env(ctx: Context, actors: int) -> dict[str, str]:
    # Ray CPUs per actor: 1, or a share of the cores where the actors outnumber them
    # (else Ray could not place them all); the actor's torch threads: 1 either way.
    return scheduler_env(True, ctx.plan.max_batch, ctx.plan.batch_window_ms) | {
        "PIXELPOOL_CLUSTER__BACKEND": "ray",
        "PIXELPOOL_CLUSTER__RAY_ADDRESS": "",
        "PIXELPOOL_CLUSTER__CPU_ACTORS_PER_NODE": str(actors),
        "PIXELPOOL_CLUSTER__CPUS_PER_ACTOR": f"{min(1.0, _cores() / actors):.3f}",
        "RAY_DISABLE_USAGE_STATS": "1",
        "RAY_AUTH_TOKEN": RAY_TOKEN,
    }


def _holding(ctx: Context, server: str) -> tuple[int, int]:
    """(devices whose cache holds a model, devices) from /api/status."""
    with ctx.client(server) as client:
        devices = client.get("/api/status").json()["devices"]
    return sum(bool(d.get("cache", {}).get("models")) for d in devices), len(devices)


def _warm_every_actor(ctx: Context, server: str, workload: Any, actors: int) -> None:
    """Bursts of 2N concurrent requests until every actor holds the model: one warm-up
    request reaches one actor only, and the others would load the model (seconds) inside
    the measured burst."""
    ctx.warm_server(server, workload)
    for round_ in range(6):
        held, total = _holding(ctx, server)
        if held >= total:
            return
        seeds = [BASE_SEED + 5000 + 100 * round_ + i for i in range(2 * actors)]
        closed_loop(ctx, server, workload, seeds, 2 * actors)
    log(f"cluster: warm-up reached {held} of {total} actors")


def _ray_against_local(
    ctx: Context, workload: Workload, ray: str, local: str, seeds: list[int]
) -> tuple[dict[str, float], list[float]]:
    """One client, image by image as A B B A quads (local, Ray, Ray, local; the same seed
    pairs on both), both servers up: (seconds per image of each, each quad's Ray seconds /
    local seconds). Measured side by side, as the machine's speed drifts by more than
    the backend's own cost between two runs."""
    with ctx.client(local) as on_local, ctx.client(ray) as on_ray:
        local_s, ray_s, quads = abba_quads(
            lambda seed: generate(on_local, workload, seed),
            lambda seed: generate(on_ray, workload, seed),
            seeds,
        )
    per_image = {"local": median(local_s), "ray": median(ray_s)}
    return per_image, quads


def _burst(ctx: Context, server: str, workload: Workload, seeds: list[int]) -> dict[str, Any]:
    result = closed_loop(ctx, server, workload, seeds, CLIENTS)
    log(f"cluster: {server}: {result['images_per_s']:.3f} images/s")
    return result


def _against_one(
    ctx: Context, workload: Workload, one: str, many: str, actors: int, seeds: list[int]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], float]:
    """One actor and N actors, both servers up, bursts A B B A (one, N, N, one): (the
    one-actor runs, the N-actor runs, N actors' images/s / N x one actor's). Side by
    side: the machine's speed moved by 30 % between two phases of a run minutes apart,
    which made N actors look better than N x one (1.06 at N = 2)."""
    ones, manys, gain = abba_block(
        lambda: _burst(ctx, one, workload, seeds),
        lambda: _burst(ctx, many, workload, seeds),
        ctx.settle,
    )
    return ones, manys, gain / actors


def run(ctx: Context) -> dict[str, Any]:
    workload = ctx.plan.throughput[0]
    images = 16 if ctx.plan.quick else 48
    seeds = [BASE_SEED + i for i in range(images)]
    single = [BASE_SEED + 1000 + i for i in range(ONE_CLIENT_IMAGES)]
    local = "cluster-local"
    one_thread = {"PIXELPOOL_DEVICES__CPU__THREADS": "1"}  # as each actor
    ctx.servers.define(
        local, scheduler_env(True, ctx.plan.max_batch, ctx.plan.batch_window_ms) | one_thread
    )
    model = ctx.model_paths[workload.model]
    direct = {n: parallel_direct.run(model, workload, n, images, DIRECT_BATCH) for n in ACTORS}
    for n in ACTORS:
        log(f"cluster: direct, {n} process(es): {direct[n]:.3f} images/s")
    runs: dict[int, list[dict[str, Any]]] = {n: [] for n in ACTORS}
    side_by_side: dict[int, float] = {ACTORS[0]: 1.0}
    one = _server(ACTORS[0])
    ctx.servers.define(one, _env(ctx, ACTORS[0]))
    ctx.servers.start(one)
    try:  # the one-actor server stays up: every N is measured beside it
        _warm_every_actor(ctx, one, workload, ACTORS[0])
        ctx.servers.start(local)
        ctx.warm_server(local, workload)
        per_image, quads = _ray_against_local(ctx, workload, one, local, single)
        ctx.servers.stop(local)
        for actors in ACTORS[1:]:
            many = _server(actors)
            ctx.servers.define(many, _env(ctx, actors))
            ctx.servers.start(many)
            try:
                _warm_every_actor(ctx, many, workload, actors)
                ones, manys, side_by_side[actors] = _against_one(
                    ctx, workload, one, many, actors, seeds
                )
            finally:
                ctx.servers.stop(many)
            runs[ACTORS[0]] += ones
            runs[actors] += manys
    finally:
        ctx.servers.stop(one, local)
    rates = {n: median([r["images_per_s"] for r in out]) for n, out in runs.items()}
    batches = {n: median([r["mean_batch"] for r in out]) for n, out in runs.items()}
    return {
        "workload": f"{workload.model} {workload.width}x{workload.height} {workload.steps} steps",
        "images": images,
        "clients": CLIENTS,
        "images_per_s": rates,
        "runs": {n: len(out) for n, out in runs.items()},
        "mean_batch": batches,
        "cores": _cores(),
        "ratio_to_n_x_one": side_by_side,
        "ratio_to_n_x_one_of_medians": {n: rates[n] / (n * rates[ACTORS[0]]) for n in ACTORS},
        "bound_on_this_machine": {n: min(1.0, _cores() / n) for n in ACTORS},
        "direct_images_per_s": direct,
        "direct_ratio_to_n_x_one": {n: direct[n] / (n * direct[ACTORS[0]]) for n in ACTORS},
        "ratio_to_direct": {n: rates[n] / direct[n] for n in ACTORS},
        "one_client_s_per_image": per_image,
        "one_client_ray_over_local": median(quads),
        "one_client_quad_ratios": quads,
    }


def rows(result: dict[str, Any]) -> list[Row]:
    out: list[Row] = []
    for n in ACTORS:
        rate = result["direct_images_per_s"][n]
        ratio = result["direct_ratio_to_n_x_one"][n]
        out.append(("cluster", f"direct diffusers, {n} one-thread process(es)",
                    f"{fmt_num(rate)} img/s",
                    f"x{ratio:.2f} of {n} x one process; batches of {DIRECT_BATCH}"))  # fmt: skip
    for n in ACTORS:
        rate = result["images_per_s"][n]
        ratio = result["ratio_to_n_x_one"][n]
        out.append(("cluster", f"{n} CPU actor(s), {CLIENTS} clients", f"{fmt_num(rate)} img/s",
                    f"{result['runs'][n]} runs; x{ratio:.2f} of {n} x one actor"
                    f"{' side by side' if n != ACTORS[0] else ''} (<= "
                    f"{result['bound_on_this_machine'][n]:.2f} on {result['cores']} cores); "
                    f"{result['ratio_to_direct'][n]:.2f} of direct; "
                    f"mean batch {result['mean_batch'][n]:.1f}"))  # fmt: skip
    per_image = result["one_client_s_per_image"]
    out.append(("cluster", "1 client: one Ray actor / a local worker",
                f"{result['one_client_ray_over_local']:.3f}",
                f"median of {len(result['one_client_quad_ratios'])} A B B A quads, "
                f"{ONE_CLIENT_IMAGES} images a side; {per_image['ray']:.3f} vs "
                f"{per_image['local']:.3f} s/image"))  # fmt: skip
    return out
