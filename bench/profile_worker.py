"""One batch in-process, with and without each worker-side throughput setting.

    python bench/profile_worker.py [--arch sd15] [--batch 4] [--size 256] [--steps 10]
                                   [--repeats 5] [--device cpu] [--models DIR]

No server: loads a model into this process (the tiny demo model by default, written to
a temp dir; `--models DIR` for a diffusers model folder), runs one txt2img batch of N
distinct seeds sharing one prompt, and prints the median time per variant:

- invariant, cold: `scheduler.batch_invariant` on (the default), text cache empty;
- invariant, warm: the same prompts again (the text encoders skipped);
- fast, warm: `batch_invariant` off (whole-batch VAE, no padded matmuls);
- invariant, no cache: the text cache off (diffusers encodes the batch's prompts).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--arch", default="sd15", choices=["sd15", "sdxl"])
    ap.add_argument("--models", type=Path, help="a diffusers model folder (default: demo)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    from bench.models import demo_entry
    from pixelpool import pipelines
    from pixelpool.pipelines import get_family
    from pixelpool.pipelines.base import WorkItem
    from pixelpool.pipelines.diffusion import text_cache

    family = get_family("diffusion")
    entry = demo_entry(args.arch, args.models, "profile-worker-")
    loaded = family.load(entry, args.device, "auto")
    params = [
        {"prompt": "a photo of a red fox in the snow", "negative_prompt": "blurry",
         "width": args.size, "height": args.size, "steps": args.steps, "cfg_scale": 7.0,
         "seed": seed}
        for seed in range(1, args.batch + 1)
    ]  # fmt: skip
    items = [WorkItem(f"job{i}", "txt2img", p) for i, p in enumerate(params)]

    def once() -> None:
        family.run(loaded, items, lambda *_: None, lambda: False)

    def cold() -> None:
        text_cache.clear(loaded.obj)
        once()

    def fast() -> None:
        old = pipelines.configure({"batch_invariant": False})
        try:
            once()
        finally:
            pipelines.configure(old)

    def uncached() -> None:
        with text_cache.disabled():
            once()

    variants: list[tuple[str, Callable[[], None]]] = [
        ("invariant, cold cache", cold),
        ("invariant, warm cache", once),
        ("fast (not invariant), warm", fast),
        ("invariant, cache off", uncached),
    ]
    once()  # warm-up: first-call allocations and kernels
    times: dict[str, list[float]] = {name: [] for name, _ in variants}
    for _ in range(args.repeats):  # interleaved, so drift in machine load hits all alike
        for name, fn in variants:
            started = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - started)
    base = statistics.median(times[variants[0][0]])
    print(f"{args.arch} {args.size}px, batch {args.batch}, {args.steps} steps, "
          f"{args.device}, median of {args.repeats}")  # fmt: skip
    print(f"{'variant':30s} {'s/batch':>9s} {'img/s':>7s} {'vs cold':>8s}")
    for name, _ in variants:
        t = statistics.median(times[name])
        print(f"{name:30s} {t:9.3f} {args.batch / t:7.2f} {base / t:7.2f}x")


if __name__ == "__main__":
    main()
