"""A batch's decode beside the next batch's denoising (`overlap_decode`), and each job's
result sent as soon as its image is decoded, in-process on the tiny SD 1.x model: a real
WorkerCore, real batches, the VAE's decoder held, watched or broken through a forward
hook so each case happens when the test says (no sleeps)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from pixelpool import pipelines
from pixelpool.engine.finisher import enabled
from pixelpool.engine.messages import (
    BatchDenoised,
    BatchDone,
    BatchStarted,
    CancelJob,
    ItemFailed,
    ItemResult,
    RunBatch,
    Stop,
)
from pixelpool.engine.worker import WorkerCore
from pixelpool.pipelines.base import WorkItem

GIB = 1 << 30
PARAMS = {"prompt": "a red fox", "negative_prompt": "blurry", "width": 64, "height": 64,
          "steps": 2, "cfg_scale": 5.0}  # fmt: skip
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


class Recorder:
    """The worker's `send`: keeps every message; `wait_for` blocks until one arrives."""

    def __init__(self) -> None:
        self.messages: list[object] = []
        self._cond = threading.Condition()
        self.on_message: Callable[[object], None] = lambda _m: None

    def __call__(self, message: object) -> None:
        with self._cond:
            self.messages.append(message)
            self._cond.notify_all()
        self.on_message(message)

    def wait_for(self, test: Callable[[object], bool]) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: any(test(m) for m in self.messages), 120)

    def results(self) -> dict[str, np.ndarray]:
        return {m.job_id: m.result.images[0] for m in self.messages if isinstance(m, ItemResult)}

    def failed(self) -> dict[str, ItemFailed]:
        return {m.job_id: m for m in self.messages if isinstance(m, ItemFailed)}


def _device(kind: str) -> dict[str, Any]:
    torch_device = "cuda:0" if kind == "cuda" else "cpu"
    return {"id": f"{kind}0", "kind": kind, "index": 0, "torch_device": torch_device,
            "total_memory_bytes": 8 * GIB}  # fmt: skip


@pytest.fixture
def restore_options() -> Iterator[None]:
    old = pipelines.configure({})
    yield
    pipelines.configure(old)


def _core(kind: str, overlap: bool, **extra: Any) -> tuple[WorkerCore, Recorder]:
    rec = Recorder()
    options = {"dtype": "auto", "overlap_decode": overlap, "budget_bytes": 4 * GIB,
               "ram_budget_bytes": 0, "progress_interval_s": 0, **extra}  # fmt: skip
    core = WorkerCore(_device(kind), options, rec)
    core.open()
    return core, rec


def _model(models_dir: Path) -> dict[str, Any]:
    return {"path": str(models_dir / "sd15/demo-sd"), "architecture": "sd15",
            "format": "diffusers", "name": "demo"}  # fmt: skip


def _batch(models_dir: Path, name: str, seeds: list[int]) -> RunBatch:
    items = [WorkItem(f"{name}-{seed}", "txt2img", {**PARAMS, "seed": seed}) for seed in seeds]
    return RunBatch(name, "diffusion", _model(models_dir), items)


def _decoder(core: WorkerCore, models_dir: Path) -> torch.nn.Module:
    return core._loaded("diffusion", _model(models_dir)).obj.vae.decoder


def _serve(core: WorkerCore, *messages: object) -> threading.Thread:
    for message in messages:
        core.deliver(message)
    thread = threading.Thread(target=core.serve, name="serve")
    thread.start()
    return thread


def _run_all(core: WorkerCore, *batches: RunBatch) -> None:
    thread = _serve(core, *batches, Stop())
    thread.join(120)
    assert not thread.is_alive()


def _done_after_items(rec: Recorder, batch: RunBatch) -> None:
    """BatchDone comes after every item of its batch (results go out in order)."""
    ids = {item.job_id for item in batch.items}
    kinds = [m for m in rec.messages if getattr(m, "job_id", None) in ids
             or (isinstance(m, BatchDone) and m.batch_id == batch.batch_id)]  # fmt: skip
    assert isinstance(kinds[-1], BatchDone) and len(kinds) == len(ids) + 1


@pytest.mark.parametrize("kind", ["cpu", pytest.param("cuda", marks=CUDA)])
def test_overlapped_images_equal_the_sequential_ones(
    models_dir: Path, restore_options: None, kind: str
) -> None:
    """The same batches through one worker, its decode inline then overlapped."""
    from pixelpool.pipelines.diffusion import text_cache

    core, _rec = _core(kind, True)
    finisher, images = core.finisher, {}
    for overlap in (False, True):
        text_cache.clear(core._loaded("diffusion", _model(models_dir)).obj)  # same path twice
        core.send = rec = Recorder()
        core.finisher = finisher if overlap else None
        pair = (_batch(models_dir, "a", [1, 2]), _batch(models_dir, "b", [3, 1]))
        _run_all(core, *pair)
        images[overlap] = rec.results()
        assert len(images[overlap]) == 4 and not rec.failed()
        assert any(isinstance(m, BatchDenoised) for m in rec.messages) == overlap
        for batch in pair:
            _done_after_items(rec, batch)
    for job_id, image in images[False].items():
        assert np.array_equal(images[True][job_id], image), job_id
    if kind == "cpu":  # batch-invariant on the CPU: a seed's image in any batch
        assert np.array_equal(images[True]["a-1"], images[True]["b-1"])


def test_the_next_batch_starts_while_one_decodes(models_dir: Path, restore_options: None) -> None:
    """Batch a's decode is held until the worker has started batch b, and a decode error
    fails only its own batch's jobs, with the reason."""
    core, rec = _core("cpu", True)
    b_started = threading.Event()
    rec.on_message = lambda m: (
        b_started.set() if isinstance(m, BatchStarted) and m.batch_id == "b" else None
    )
    calls = []

    def hook(_module: Any, _args: Any) -> None:
        calls.append(1)
        if len(calls) == 1:
            assert b_started.wait(120)
            raise RuntimeError("decoder broke")

    handle = _decoder(core, models_dir).register_forward_pre_hook(hook)
    try:
        _run_all(core, _batch(models_dir, "a", [1, 2]), _batch(models_dir, "b", [3, 4]))
    finally:
        handle.remove()
    failed = rec.failed()
    assert set(failed) == {"a-1", "a-2"}
    assert all(f.kind == "error" and "decoder broke" in f.error for f in failed.values())
    assert set(rec.results()) == {"b-3", "b-4"}
    for batch in ("a", "b"):
        assert any(isinstance(m, BatchDone) and m.batch_id == batch for m in rec.messages)


def test_cancel_and_stop_during_an_overlapped_decode(
    models_dir: Path, restore_options: None
) -> None:
    """A job cancelled while its batch decodes ends cancelled, its batch mate completes,
    and a Stop meanwhile lets the decode (and the queued batch) finish first."""
    core, rec = _core("cpu", True)
    decoding, go = threading.Event(), threading.Event()

    def hook(_module: Any, _args: Any) -> None:
        if not decoding.is_set():
            decoding.set()
            assert go.wait(120)

    handle = _decoder(core, models_dir).register_forward_pre_hook(hook)
    try:
        thread = _serve(core, _batch(models_dir, "a", [1, 2]), _batch(models_dir, "b", [3]))
        assert decoding.wait(120)
        core.deliver(CancelJob("a-1"))
        core.deliver(Stop())
        go.set()
        thread.join(120)
        assert not thread.is_alive()
    finally:
        handle.remove()
    assert {k: f.kind for k, f in rec.failed().items()} == {"a-1": "cancelled"}
    assert set(rec.results()) == {"a-2", "b-3"}


@CUDA
def test_the_cuda_decode_runs_on_a_second_stream(models_dir: Path, restore_options: None) -> None:
    core, rec = _core("cuda", True)
    streams: list[torch.cuda.Stream] = []

    def hook(_module: Any, _args: Any) -> None:
        streams.append(torch.cuda.current_stream())

    handle = _decoder(core, models_dir).register_forward_pre_hook(hook)
    try:
        _run_all(core, _batch(models_dir, "a", [1, 2]))
    finally:
        handle.remove()
    assert set(rec.results()) == {"a-1", "a-2"}
    assert streams and all(s != torch.cuda.default_stream() for s in streams)


@pytest.mark.parametrize("overlap", [False, True])
def test_each_result_goes_out_before_the_next_image_decodes(
    models_dir: Path, restore_options: None, overlap: bool
) -> None:
    """With `stream_results`, batch-invariant (the VAE decodes one image at a time), each
    decoder call finds the results of the images before it already sent; the images
    equal those of the same seeds decoded in one call (`batch_invariant` off)."""
    images = {}
    for invariant in (True, False):
        core, rec = _core("cpu", overlap, batch_invariant=invariant, stream_results=True)
        seen: list[tuple[int, int]] = []  # (images in the call, results sent before it)

        def hook(_module: Any, args: Any, rec: Recorder = rec, seen: list = seen) -> None:
            seen.append((args[0].shape[0], len(rec.results())))

        handle = _decoder(core, models_dir).register_forward_pre_hook(hook)
        try:
            _run_all(core, _batch(models_dir, "a", [1, 2, 3]))
        finally:
            handle.remove()
        assert seen == ([(1, 0), (1, 1), (1, 2)] if invariant else [(3, 0)])
        _done_after_items(rec, _batch(models_dir, "a", [1, 2, 3]))
        images[invariant] = rec.results()
    for job_id, image in images[True].items():  # the same up to rounding
        assert np.abs(image.astype(int) - images[False][job_id]).max() <= 1, job_id


def test_results_wait_for_the_whole_batch_without_streaming(
    models_dir: Path, restore_options: None
) -> None:
    """`stream_results` off (the CPU's default): every image is decoded before the first
    result goes out, and the images are those the streamed batch gives, bit for bit."""
    images = {}
    for stream in (False, True):
        core, rec = _core("cpu", False, stream_results=stream)
        sent_before: list[int] = []

        def hook(_module: Any, _args: Any, rec: Recorder = rec, sent: list = sent_before) -> None:
            sent.append(len(rec.results()))

        handle = _decoder(core, models_dir).register_forward_pre_hook(hook)
        try:
            _run_all(core, _batch(models_dir, "a", [1, 2, 3]))
        finally:
            handle.remove()
        assert sent_before == ([0, 1, 2] if stream else [0, 0, 0])
        images[stream] = rec.results()
    assert images[False].keys() == images[True].keys()
    for job_id, image in images[False].items():
        assert np.array_equal(image, images[True][job_id]), job_id


def test_a_decode_error_mid_batch_fails_only_the_jobs_not_yet_sent(
    models_dir: Path, restore_options: None
) -> None:
    """The first image's result went out before the second image's decode broke: that job
    keeps its result, the other two fail with the reason, each job reported once."""
    core, rec = _core("cpu", False, stream_results=True)
    calls = []

    def hook(_module: Any, _args: Any) -> None:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("decoder broke")

    handle = _decoder(core, models_dir).register_forward_pre_hook(hook)
    try:
        _run_all(core, _batch(models_dir, "a", [1, 2, 3]))
    finally:
        handle.remove()
    assert set(rec.results()) == {"a-1"}
    assert {k: f.kind for k, f in rec.failed().items()} == {"a-2": "error", "a-3": "error"}
    assert all("decoder broke" in f.error for f in rec.failed().values())
    _done_after_items(rec, _batch(models_dir, "a", [1, 2, 3]))
    from pixelpool.pipelines.diffusion.latents import VAE_LOCK

    assert VAE_LOCK.acquire(timeout=5)  # the broken decode let go of the VAE
    VAE_LOCK.release()


def test_overlap_defaults_to_cuda_only() -> None:
    assert enabled("auto", "cuda") and enabled(None, "cuda")
    assert not enabled("auto", "cpu") and not enabled("auto", "mps")
    assert enabled(True, "cpu") and not enabled(False, "cuda")


def test_a_worker_process_with_overlap_runs_batches_to_the_end(models_dir: Path) -> None:
    """The real pipe path: BatchDenoised crosses it, the scheduler hands the worker its
    next batch, and every job ends with its own image."""
    import asyncio

    from pixelpool.config import DeviceSettings, SchedulerSettings, Settings
    from pixelpool.engine.pool import build_scheduler

    from .engine_helpers import Recorder as Listener
    from .engine_helpers import make_task

    async def go() -> None:
        settings = Settings(scheduler=SchedulerSettings(max_batch=2),
                            devices={"cpu": DeviceSettings(overlap_decode=True)})  # fmt: skip
        listener = Listener()
        engine = build_scheduler(settings, listener)
        seen: list[str] = []
        engine.watchers.append(lambda _slot, message: seen.append(type(message).__name__))
        await engine.start()
        try:
            jobs = {f"j{i}": make_task(models_dir, f"j{i}", seed=10 + i, steps=2, width=64)
                    for i in range(4)}  # fmt: skip
            for task in jobs.values():
                engine.submit(task)
            results = {job: await listener._future(job) for job in jobs}
            assert all(kind == "ok" for kind, _ in results.values())
            images = [r.images[0] for _, r in results.values()]
            assert len({img.tobytes() for img in images}) == 4
            assert seen.count("BatchDenoised") >= 2  # each batch decoded in the background
            while engine.snapshot()[0]["busy"] or engine.snapshot()[0]["active_jobs"]:
                await asyncio.sleep(0.02)
        finally:
            await engine.stop()

    asyncio.run(go())
