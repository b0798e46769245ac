"""What each suite runs: workloads, repetitions and sizes for CPU / GPU, quick / full.

CPU sizes are chosen so one direct call takes a few hundred ms on the tiny random
models (about 0.35 s for SD 1.x at 256x256, 10 steps, 2 threads): big enough that
the server's fixed per-request costs are weighed against representative compute,
small enough that --quick stays under 3 minutes on 2 cores. A 64x64, 2-step image
(about 20 ms) would make fixed HTTP costs look ten times larger than they are next
to a real model. GPU sizes are the real ones (512x512 SD 1.5, 1024x1024 SDXL).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Workload:
    """One txt2img request, sent identically to the server and to the direct pipeline."""

    model: str  # registry name, e.g. "demo-sd"
    width: int
    height: int
    steps: int
    cfg_scale: float = 7.0
    prompt: str = "a photo of a red fox in a green forest, masterpiece, best quality"
    negative_prompt: str = "blurry, low quality, watermark"

    def request(self, seed: int) -> dict[str, Any]:
        """The /api/generate body for this workload."""
        return {
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt,
            "model": self.model,
            "width": self.width,
            "height": self.height,
            "steps": self.steps,
            "cfg_scale": self.cfg_scale,
            "seed": seed,
        }

    def label(self) -> str:
        return f"{self.model} {self.width}x{self.height} {self.steps} steps"


@dataclass
class Plan:
    device: str  # "cpu" or "cuda"
    quick: bool
    threads: int
    overhead: list[Workload]
    overhead_reps: int
    throughput: list[Workload]
    throughput_clients: list[int]  # concurrent clients of the batching server, one run each
    throughput_images: int  # images per server run (spread over the clients)
    throughput_direct_images: int  # images per direct run: sequential, then as one batch
    throughput_reps: int
    stream_reps: int  # A B / B A pairs of streamed and unstreamed bursts (the stream suite)
    max_batch: int | str  # the batching server's settings ("auto": the server default)
    batch_window_ms: int | str
    switch: Workload
    switch_models: list[str]  # three models, the cache has room for two
    switch_rounds: int
    encode_reps: int
    liveness: Workload
    liveness_busy_s: float
    liveness_interval_s: float
    liveness_idle_samples: int
    # The modes outside the two side-by-side targets (4 and 16 clients, no batching): in
    # the first this many repetitions only, with this many images (None: all of them, as
    # many as the others), which keeps --quick under 3 minutes on 2 cores.
    throughput_other_reps: int | None = None
    throughput_one_client_images: int | None = None  # per quad run (None: direct_images)
    throughput_other_images: int | None = None
    batch_sizes: list[int] = field(default_factory=list)  # GPU only: direct images/s per size
    batch_workloads: list[Workload] = field(default_factory=list)
    batch_reps: int = 0
    batch_max: dict[str, int] = field(default_factory=dict)  # per model: sizes above are skipped
    # GPU only: s/image at 1 client, server and direct, with torch.compile off and on.
    compile_workloads: list[Workload] = field(default_factory=list)
    compile_mode: str = "default"
    compile_reps: int = 0
    warmup: int = 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


SWITCH_EXTRA = ("bench-switch-b", "bench-switch-c")  # written next to the demo model


def cpu_plan(quick: bool, threads: int) -> Plan:
    main = Workload("demo-sd", 256, 256, 10)
    return Plan(
        device="cpu",
        quick=quick,
        threads=threads,
        overhead=[main],
        overhead_reps=7 if quick else 15,
        throughput=[main],
        throughput_clients=[1, 4, 8, 16],
        throughput_images=32 if quick else 64,
        throughput_direct_images=8,
        throughput_reps=2 if quick else 3,
        throughput_other_reps=1 if quick else None,
        throughput_other_images=16 if quick else None,
        throughput_one_client_images=12,
        stream_reps=4 if quick else 8,
        max_batch="auto",
        batch_window_ms="auto",
        # Small images: a switch's cost is the load, which the small compute leaves visible.
        switch=Workload("demo-sd", 64, 64, 2),
        switch_models=["demo-sd", *SWITCH_EXTRA],
        switch_rounds=3 if quick else 6,
        encode_reps=3 if quick else 9,
        liveness=main,
        liveness_busy_s=6.0 if quick else 20.0,
        liveness_interval_s=0.01,
        liveness_idle_samples=100 if quick else 300,
    )


def gpu_plan(quick: bool, threads: int) -> Plan:
    steps = 20 if quick else 30
    sd15 = Workload("bench-sd15", 512, 512, steps)
    sdxl = Workload("bench-sdxl", 1024, 1024, steps)
    return Plan(
        device="cuda",
        quick=quick,
        threads=threads,
        overhead=[sd15, sdxl],
        overhead_reps=3 if quick else 7,
        throughput=[sd15] if quick else [sd15, sdxl],
        throughput_clients=[1, 4, 8, 16],
        throughput_images=32 if quick else 64,
        throughput_direct_images=8,
        throughput_reps=2 if quick else 3,
        stream_reps=4 if quick else 6,
        max_batch="auto",
        batch_window_ms="auto",
        switch=Workload("bench-sd15", 512, 512, 4),
        switch_models=["bench-sd15", "bench-sd15-b", "bench-sd15-c"],
        switch_rounds=2 if quick else 4,
        encode_reps=3 if quick else 9,
        liveness=sd15,
        liveness_busy_s=8.0 if quick else 20.0,
        liveness_interval_s=0.01,
        liveness_idle_samples=100 if quick else 300,
        batch_sizes=[1, 2, 4, 8, 12, 16],
        batch_workloads=[sd15, sdxl],
        batch_reps=2 if quick else 3,
        batch_max={"bench-sdxl": 4 if quick else 8},
        compile_workloads=[sdxl],
        compile_reps=3 if quick else 5,
    )
