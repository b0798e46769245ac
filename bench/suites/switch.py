"""switch: requests cycling over 3 models on a worker whose cache has room for 2.

With LRU and room for 2, cycling A, B, C makes every first request of a model a miss;
the request right after it, for the same model, is a hit. Where the missing model comes
from is read from /api/status just before the request: the device tier (a hit), a
RAM tier (an evicted model kept in host memory), or nowhere (load from disk). Load
cost = median miss latency - median hit latency, so the generation itself cancels out.

Before a disk load, the model's files are dropped from the OS page cache with
posix_fadvise(DONTNEED) (best effort, no root needed), so "disk" means disk.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.common import Row, fmt_ms, median, summary
from bench.context import SWITCH_DISK, SWITCH_RAM, Context
from bench.models import model_bytes_on_disk
from bench.servers import device_env, generate, scheduler_env, status

GIB = 2**30


def define_servers(ctx: Context) -> dict[str, Any]:
    """Two servers whose device tier fits exactly two of the three models: one with no
    RAM tier (a miss reads the disk), one whose RAM tier holds all three."""
    paths = [ctx.model_paths[m] for m in ctx.plan.switch_models]
    sizes = [model_bytes_on_disk(p) for p in paths]
    budget = 2.5 * max(sizes)
    if not sum(sorted(sizes)[-2:]) <= budget < sum(sizes):
        raise RuntimeError(f"switch models too unequal for a two-model budget: {sizes}")
    ram = 4 * max(sizes)
    common = scheduler_env(True, ctx.plan.max_batch, ctx.plan.batch_window_ms)
    for name, ram_gb in ((SWITCH_DISK, 0.0), (SWITCH_RAM, ram / GIB)):
        env = device_env(
            ctx.plan, vram_budget_gb=f"{budget / GIB:.9f}", ram_budget_gb=f"{ram_gb:.9f}"
        )
        ctx.servers.define(name, env | common)
    return {"model_bytes": sizes, "device_budget_bytes": int(budget), "ram_budget_bytes": int(ram)}


def drop_page_cache(path: Path) -> None:
    for file in path.rglob("*"):
        if file.is_file():
            fd = os.open(file, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def _where(snapshot: dict[str, Any], key: str) -> str:
    """'hit' (on the device), the tier name it sits in (e.g. 'ram'), or 'disk'."""
    for device in snapshot["devices"]:
        for model in device.get("cache", {}).get("models", []):
            if model["key"] == key:
                return "hit" if model.get("tier", "device") == "device" else str(model["tier"])
    return "disk"


def _resident(snapshot: dict[str, Any]) -> int:
    return max(
        sum(1 for m in d.get("cache", {}).get("models", []) if m.get("tier", "device") == "device")
        for d in snapshot["devices"]
    )


class _Cycler:
    """One server's side of the suite: warm-up, then rounds over the models."""

    def __init__(self, ctx: Context, server: str) -> None:
        self.ctx, self.server = ctx, server
        self.client = ctx.client(server)
        self.keys = {m: str(ctx.model_paths[m].resolve()) for m in ctx.plan.switch_models}
        self.latencies: dict[str, list[float]] = {}
        self.max_resident = 0
        cache = status(self.client)["devices"][0].get("cache", {})
        self.has_ram_tier = "ram_budget_bytes" in cache
        for i, model in enumerate(ctx.plan.switch_models):  # worker imports, first-call costs
            generate(self.client, replace(ctx.plan.switch, model=model), 11 + i)

    def round(self, rnd: int) -> None:
        """Each model twice in a row: the first request is a switch, the second a hit."""
        for model in self.ctx.plan.switch_models:
            workload = replace(self.ctx.plan.switch, model=model)
            for _ in range(2):
                source = _where(status(self.client), self.keys[model])
                if source == "disk":
                    drop_page_cache(self.ctx.model_paths[model])
                seconds, _png, _job = generate(self.client, workload, 100 + rnd)
                self.latencies.setdefault(source, []).append(seconds)
                self.max_resident = max(self.max_resident, _resident(status(self.client)))

    def finish(self) -> dict[str, Any]:
        cache = status(self.client)["devices"][0]["cache"]
        self.client.close()
        stats = ("hits", "ram_hits", "misses", "offloads", "evictions")
        return {
            "latencies": self.latencies,
            "max_models_resident": self.max_resident,
            "has_ram_tier": self.has_ram_tier,
            "cache_stats": {k: cache[k] for k in stats if k in cache},
        }


def run(ctx: Context) -> dict[str, Any]:
    budgets = define_servers(ctx)
    ctx.servers.start(SWITCH_DISK, SWITCH_RAM)
    cyclers = [_Cycler(ctx, server) for server in (SWITCH_DISK, SWITCH_RAM)]
    for rnd in range(ctx.plan.switch_rounds):  # rounds alternate between the two servers
        for cycler in cyclers:
            cycler.round(rnd)
    runs = {c.server: c.finish() for c in cyclers}
    ctx.servers.stop(SWITCH_DISK, SWITCH_RAM)
    # Each load is measured against the hits of its own server: same process, same noise.
    loads: dict[str, dict[str, Any]] = {}
    hits: list[float] = []
    for r in runs.values():
        lat = r["latencies"]
        hits += lat.get("hit", [])
        for src, values in lat.items():
            if src != "hit":
                loads[src] = {
                    "latency_s": summary(values),
                    "load_s": median(values) - median(lat.get("hit", [])),
                }
    hit = median(hits)
    ram_tier = runs[SWITCH_RAM]["has_ram_tier"] and "ram" in loads
    for r in runs.values():
        r.pop("latencies")
    return {
        "ram_tier_implemented": ram_tier,
        "hit_latency_s": summary(hits),
        "loads": loads,
        "ram_over_disk": (loads["ram"]["load_s"] / loads["disk"]["load_s"])
        if ram_tier and "disk" in loads
        else None,
        "servers": runs,
        "budgets": budgets,
        "workload": ctx.plan.switch.label(),
        "models": ctx.plan.switch_models,
        "medians": {
            "hit latency s": hit,
            **{f"{src} load s": v["load_s"] for src, v in loads.items()},
        },
        "note": (
            "loads from the RAM tier and from disk measured side by side"
            if ram_tier
            else "no RAM tier in this build (/api/status shows only the device tier): "
            "measured cold load from disk vs warm hit"
        ),
    }


def rows(result: dict[str, Any]) -> list[Row]:
    hit = result["hit_latency_s"]
    resident = max(r["max_models_resident"] for r in result["servers"].values())
    out: list[Row] = [
        ("switch", f"warm hit, request latency ({result['workload']})", fmt_ms(hit["median"]),
         f"n={hit['n']}; at most {resident} models on the device"),
    ]  # fmt: skip
    names = {"disk": "from disk (page cache dropped)", "ram": "from the RAM tier"}
    for src, load in sorted(result["loads"].items(), key=lambda kv: kv[0] != "ram"):
        below = " (below the noise of a request: ~0)" if load["load_s"] <= 0 else ""
        out.append(
            ("switch", f"bring back a model {names.get(src, src)}", fmt_ms(load["load_s"]),
             f"latency {fmt_ms(load['latency_s']['median'])} - hit, "
             f"n={load['latency_s']['n']}{below}")
        )  # fmt: skip
    if result["ram_over_disk"] is not None:
        out.append(("switch", "ratio RAM tier / disk", f"{max(0.0, result['ram_over_disk']):.3f}",
                    "time to bring a model back"))  # fmt: skip
    else:
        out.append(("switch", "bring back a model from the RAM tier", "n/a", result["note"]))
    return out
