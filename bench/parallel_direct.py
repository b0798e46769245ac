"""N processes calling diffusers directly at once, one torch thread each: what this
machine itself gives N independent workers, the ceiling of the cluster suite's rows.

    python bench/parallel_direct.py MODEL_DIR --processes 2 --images 24 [--batch 8]

Each process loads the model, warms up with one batch, says "ready" and waits; all
start together on "go", run their share in batches and report when done. Prints one
JSON line: images/s over the whole run (first start to last end).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.plan import Workload


def _one(model: Path, workload: Workload, images: int, batch: int) -> None:
    """A child: load, warm up, wait for "go", run `images` in batches, print its end."""
    import warnings

    import torch
    from diffusers.utils import logging as diffusers_logging

    from bench.models import direct_batch, load_direct

    diffusers_logging.disable_progress_bar()  # N children writing bars to one terminal
    diffusers_logging.set_verbosity_error()
    warnings.filterwarnings("ignore", category=FutureWarning)
    torch.set_num_threads(1)
    pipe = load_direct(model, "cpu")
    direct_batch(pipe, workload, list(range(batch)), "cpu")
    print("ready", flush=True)
    sys.stdin.readline()
    done = 0
    while done < images:
        n = min(batch, images - done)
        direct_batch(pipe, workload, list(range(done, done + n)), "cpu")
        done += n
    print(json.dumps({"end": time.time()}), flush=True)


def run(model: Path, workload: Workload, processes: int, images: int, batch: int) -> float:
    """Images/s of `processes` one-thread direct callers sharing `images` between them."""
    share = [images // processes + (i < images % processes) for i in range(processes)]
    args = [workload.model, str(workload.width), str(workload.height), str(workload.steps)]
    command = [sys.executable, __file__, str(model), "--batch", str(batch), "--workload", *args]
    children = [
        subprocess.Popen(
            [*command, "--child", str(n)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        for n in share
    ]
    try:
        for child in children:
            assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        start = time.time()
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        ends = [json.loads(child.stdout.readline())["end"] for child in children if child.stdout]
    finally:
        for child in children:
            child.kill()
            child.wait()
    return images / (max(ends) - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("model", type=Path)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--workload", nargs=4, default=["demo-sd", "256", "256", "10"])
    args = ap.parse_args()
    name, width, height, steps = args.workload
    workload = Workload(name, int(width), int(height), int(steps))
    if args.child is not None:
        _one(args.model, workload, args.child, args.batch)
        return
    rate = run(args.model, workload, args.processes, args.images, args.batch)
    print(json.dumps({"processes": args.processes, "images_per_s": rate}))


if __name__ == "__main__":
    main()
