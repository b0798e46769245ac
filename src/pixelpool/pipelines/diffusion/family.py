"""The diffusion family: loads SD 1.x / SDXL pipelines and dispatches by operation."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from pixelpool.pipelines.base import CancelFn, Loaded, Pending, ProgressFn, Result, WorkItem, done
from pixelpool.pipelines.diffusion import (
    accel,
    caches,
    enhance,
    hires,
    img2img,
    invariance,
    latents,
    text_cache,
    txt2img,
)
from pixelpool.pipelines.diffusion.loader import load_pipeline, module_bytes, torch_dtype

log = logging.getLogger("pixelpool.worker")

RunFn = Callable[[Loaded, list[WorkItem], ProgressFn, CancelFn], list[Result]]
# Operations that can stop before their decode (None when a batch cannot: nothing run).
StartFn = Callable[[Loaded, list[WorkItem], ProgressFn, CancelFn], Pending | None]

OPERATIONS: dict[str, RunFn] = {
    "txt2img": txt2img.run,
    "img2img": img2img.run,
    "inpaint": img2img.run,
    "hires": hires.run,
    "decode_latents": latents.run_decode,
    "encode_latents": latents.run_encode,
    "enhance": enhance.run,
}
SPLITS: dict[str, StartFn] = {"txt2img": txt2img.start, "hires": hires.start}


class DiffusionFamily:
    def load(self, entry: dict[str, Any], device: str, dtype: str) -> Loaded:
        pipe = load_pipeline(entry, torch_dtype(device, dtype, entry["architecture"]))
        pipe.to(device)
        warmup = accel.prepare(pipe, device)  # channels-last, torch.compile
        loaded = Loaded(pipe, module_bytes(pipe), entry["architecture"], device, "diffusion")
        for batch in warmup:  # compiles each warm-up shape before the first request
            try:
                self.run(loaded, batch, lambda *_: None, lambda: False)
            except Exception as exc:  # a shape too big for the device must not fail the load
                p = batch[0].params
                log.warning("compile warm-up %sx%s batch %d failed: %s",
                            p["width"], p["height"], len(batch), exc)  # fmt: skip
        return loaded

    def move(self, loaded: Loaded, device: str) -> Loaded:
        """Between the device and RAM tiers of the model cache (CUDA: via pinned memory)."""
        if device != loaded.device:
            text_cache.clear(loaded.obj)
            accel.move(loaded.obj, loaded.device, device)
        return Loaded(loaded.obj, loaded.size_bytes, loaded.architecture, device, "diffusion")

    def run(
        self, loaded: Loaded, batch: list[WorkItem], progress: ProgressFn, cancel: CancelFn
    ) -> list[Result]:
        return list(self.start(loaded, batch, progress, cancel).finish())

    def start(
        self, loaded: Loaded, batch: list[WorkItem], progress: ProgressFn, cancel: CancelFn
    ) -> Pending:
        """The batch up to its VAE decode, which the Pending does (txt2img and latent
        hires on SD 1.x / SDXL); any other batch runs whole, holding the VAE lock (it may
        use the VAE while another batch decodes beside it)."""
        op = batch[0].op
        if op not in OPERATIONS:
            raise ValueError(f"diffusion cannot run operation {op!r}")
        split = SPLITS.get(op)
        with caches.collecting() as got, invariance.thread_invariant_kernels():
            pending = split(loaded, batch, progress, cancel) if split else None
            if pending is None:
                with latents.VAE_LOCK:
                    results = OPERATIONS[op](loaded, batch, progress, cancel)
        if pending is None:
            caches.attach(loaded.obj, batch, results, got)
            return done(results)
        decode = pending.finish

        def finish() -> Iterator[Result]:
            with invariance.thread_invariant_kernels():
                for item, result in zip(batch, decode(), strict=True):
                    caches.attach(loaded.obj, [item], [result], got)
                    yield result

        recorded = [t for _p, t in got.latents.values()]  # read by `attach`
        return Pending(finish, [*pending.tensors, *recorded])

    def stats(self) -> dict[str, Any]:
        """For the worker's cache snapshot (`/api/status`)."""
        return {"text_embeddings": text_cache.stats()}


FAMILY = DiffusionFamily()
