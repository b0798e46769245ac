"""The suites, in the order they run. Each module has run(ctx) -> dict and rows(dict)."""

from __future__ import annotations

from types import ModuleType

from bench.suites import (
    batch,
    cluster,
    compiled,
    encode,
    liveness,
    overhead,
    stream,
    switch,
    throughput,
    upscale,
    vision,
)

SUITES: dict[str, ModuleType] = {
    "overhead": overhead,
    "throughput": throughput,
    "stream": stream,  # stream_results on and off at 8 clients
    "liveness": liveness,
    "batch": batch,  # --gpu only
    "compile": compiled,  # --gpu only: torch.compile off and on
    "switch": switch,
    "encode": encode,
    "upscale": upscale,  # starts its own two servers, with an upscaler in models/
    "vision": vision,  # its own models and servers
    "cluster": cluster,  # the Ray backend: its own servers (needs the ray extra)
}
GPU_ONLY = {"batch", "compile"}
OPT_IN = {"upscale", "vision", "cluster"}  # not in the default run (keeps --quick under 3 min)
GPU_DEFAULT = {"stream"}  # in the default run with --gpu only (opt-in on the CPU)
