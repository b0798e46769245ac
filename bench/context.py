"""What every suite gets: the plan, the servers, the direct pipelines and the CPU monitor."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.common import CpuMonitor, log
from bench.models import direct_generate, load_direct
from bench.plan import Plan, Workload
from bench.servers import TIMEOUT, Servers, generate, wait_idle

# The server every single-client and load suite uses (batching on), and its twin.
BATCHED = "batched"
UNBATCHED = "unbatched"
SWITCH_DISK = "switch-disk"  # device tier fits 2 of 3 models, no RAM tier
SWITCH_RAM = "switch-ram"  # the same, with a RAM tier that holds all 3


@dataclass
class Context:
    plan: Plan
    servers: Servers
    monitor: CpuMonitor
    model_paths: dict[str, Path]
    _pipes: dict[str, Any] = field(default_factory=dict)
    _warm: set[tuple[str, Workload]] = field(default_factory=set)

    def client(self, server: str) -> httpx.Client:
        return httpx.Client(base_url=self.servers.url(server), timeout=TIMEOUT)

    def direct(self, model: str) -> Any:
        """The model loaded in this process, as a user would; loaded once."""
        if model not in self._pipes:
            started = time.perf_counter()
            self._pipes[model] = load_direct(self.model_paths[model], self.plan.device)
            log(f"direct pipeline {model} loaded in {time.perf_counter() - started:.1f}s")
        return self._pipes[model]

    def drop_direct(self) -> None:
        """Free the direct pipelines (GPU memory, RAM) once no suite needs them."""
        self._pipes.clear()
        if self.plan.device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()

    def warm_direct(self, workload: Workload) -> None:
        """First calls at a size pay one-off costs (kernel selection, allocator growth)."""
        if ("direct", workload) in self._warm:
            return
        pipe = self.direct(workload.model)
        for i in range(self.plan.warmup):
            direct_generate(pipe, workload, 7 + i, self.plan.device)
        self._warm.add(("direct", workload))

    def warm_server(self, server: str, workload: Workload) -> None:
        """First requests load the model in the worker and pay the same one-off costs."""
        if (server, workload) in self._warm:
            return
        with self.client(server) as client:
            for i in range(self.plan.warmup):
                generate(client, workload, 7 + i)
            wait_idle(client)
        self._warm.add((server, workload))

    def settle(self) -> None:
        """A short pause between phases, so idle-spinning threads of one do not tax the next."""
        time.sleep(0.1)
