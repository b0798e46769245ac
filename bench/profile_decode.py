"""Where one txt2img batch's time goes on the worker: denoising, VAE decode, post-processing,
and pickling the results for the pipe (PNG encoding happens in the HTTP process).

    python bench/profile_decode.py [--batch 8] [--size 256] [--steps 10] [--repeats 3]
                                   [--device cpu] [--models DIR]

No server: loads a model into this process (the tiny demo model by default), runs the
batch's denoising alone (`output_type="latent"`), then decodes those latents exactly as
the worker does, and prints the median seconds of each stage per batch. Then
(`--worker-batches N`, 0 to skip) N such batches through an in-process worker with
`overlap_decode` off and on (interleaved), and the seconds per batch of each: what
decoding beside the next batch's denoising saves on this device.
"""

from __future__ import annotations

import argparse
import pickle
import statistics
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--arch", default="sd15", choices=["sd15", "sdxl"])
    ap.add_argument("--models", type=Path, help="a diffusers model folder (default: demo)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--worker-batches", type=int, default=3)
    args = ap.parse_args()

    import torch

    from bench.models import demo_entry
    from pixelpool.families.diffusion.params import Txt2ImgParams
    from pixelpool.pipelines import get_family
    from pixelpool.pipelines.base import Result
    from pixelpool.pipelines.diffusion import latents as latent_ops
    from pixelpool.pipelines.diffusion import txt2img
    from pixelpool.pipelines.diffusion.common import to_uint8

    entry = demo_entry(args.arch, args.models, "profile-decode-")
    loaded = get_family("diffusion").load(entry, args.device, "auto")
    params = [
        Txt2ImgParams.model_validate(
            {"prompt": "a photo of a red fox in the snow", "negative_prompt": "blurry",
             "width": args.size, "height": args.size, "steps": args.steps, "cfg_scale": 7.0,
             "seed": seed})
        for seed in range(1, args.batch + 1)
    ]  # fmt: skip

    def sync() -> None:
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    def stages() -> dict[str, float]:
        out: dict[str, float] = {}
        t = time.perf_counter()
        lat = txt2img.generate(loaded, params, lambda *_: None, lambda: False,
                               output_type="latent").images  # fmt: skip
        sync()
        out["denoise"] = time.perf_counter() - t
        t = time.perf_counter()
        with torch.inference_mode():
            pipe = loaded.obj
            image = pipe.vae.decode(lat / pipe.vae.config.scaling_factor, return_dict=False)[0]
        sync()
        out["vae decode"] = time.perf_counter() - t
        t = time.perf_counter()
        floats = pipe.image_processor.postprocess(
            image, output_type="np", do_denormalize=[True] * image.shape[0]
        )
        arrays = to_uint8(floats)
        out["postprocess"] = time.perf_counter() - t
        t = time.perf_counter()
        for img, p in zip(arrays, params, strict=True):
            pickle.dumps(Result(images=[img], seeds=[p.seed]))
        out["result pickling"] = time.perf_counter() - t
        t = time.perf_counter()
        latent_ops.decode(pipe, lat)
        out["decode total (worker path)"] = time.perf_counter() - t
        return out

    stages()  # warm-up
    runs = [stages() for _ in range(args.repeats)]
    print(f"{args.arch} {args.size}px, batch {args.batch}, {args.steps} steps, {args.device}, "
          f"torch threads {torch.get_num_threads()}, median of {args.repeats}")  # fmt: skip
    denoise = statistics.median(r["denoise"] for r in runs)
    for name in runs[0]:
        t = statistics.median(r[name] for r in runs)
        print(f"{name:28s} {t:8.3f} s/batch  {100 * t / denoise:6.1f} % of denoise")
    if args.worker_batches > 0:
        worker_overlap(entry, params, args)


def worker_overlap(entry: dict[str, str], params: list[Any], args: argparse.Namespace) -> None:
    """Seconds per batch through a WorkerCore, decode inline against overlapped."""
    import threading

    from pixelpool.engine.messages import BatchDone, RunBatch, Stop
    from pixelpool.engine.worker import WorkerCore
    from pixelpool.pipelines.base import WorkItem

    kind = "cuda" if args.device.startswith("cuda") else "cpu"
    device = {"id": "d0", "kind": kind, "index": 0, "torch_device": args.device,
              "total_memory_bytes": 16 << 30}  # fmt: skip
    done = threading.Semaphore(0)

    def send(message: object) -> None:
        if isinstance(message, BatchDone):
            done.release()

    options = {"dtype": "auto", "overlap_decode": True, "budget_bytes": 16 << 30,
               "ram_budget_bytes": 0}  # fmt: skip
    core = WorkerCore(device, options, send)
    core.open()
    finisher = core.finisher
    model = {**entry, "path": entry["path"]}
    items = [WorkItem(f"j{i}", "txt2img", p.model_dump()) for i, p in enumerate(params)]

    def burst(overlap: bool) -> float:
        core.finisher = finisher if overlap else None
        for n in range(args.worker_batches):
            core.deliver(RunBatch(f"b{n}", "diffusion", model, items))
        core.deliver(Stop())
        t = time.perf_counter()
        core.serve()
        for _ in range(args.worker_batches):
            done.acquire()
        return (time.perf_counter() - t) / args.worker_batches

    core.finisher = None
    burst(False)  # warm-up (model load)
    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(args.repeats):
        for overlap in (False, True):
            times[overlap].append(burst(overlap))
    off, on = statistics.median(times[False]), statistics.median(times[True])
    print(f"worker, {args.worker_batches} batches back to back, median of {args.repeats}:")
    print(f"overlap_decode off {off:8.3f} s/batch")
    print(f"overlap_decode on  {on:8.3f} s/batch  ({off / on:.3f}x)")


if __name__ == "__main__":
    main()
