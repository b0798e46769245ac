"""A batch's decode beside the next batch's denoising (the `overlap_decode` setting).

The worker's main loop runs a batch up to its decode (`Pending`), hands the rest to
this finisher and takes the next batch at once. One thread, one batch at a time:
`submit` first waits for the batch before, so at most one batch decodes while the
next denoises (memory: one batch's decode on top of the next's denoising).

On CUDA the decode runs on a second stream, so its kernels interleave with the next
batch's instead of queueing behind them. What crosses the streams: the side stream
waits for everything the main stream queued up to the hand-off (the denoised latents),
and the latents are recorded on the side stream, so the caching allocator does not
give their memory to the next batch before the decode has read them. On the CPU the
thread shares torch's intra-op threads with the main loop (see docs/benchmarks.md).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from pixelpool.pipelines.base import Pending

log = logging.getLogger("pixelpool.worker")


def enabled(setting: Any, device_kind: str) -> bool:
    """`overlap_decode` and `stream_results`: true, false, or "auto"/unset (on for CUDA,
    off elsewhere: on the CPU the work they overlap competes for the same cores)."""
    if setting in (None, "auto"):
        return device_kind == "cuda"
    return bool(setting)


class Finisher:
    def __init__(self, torch: Any, device: str) -> None:
        self._torch = torch
        self._device = device
        self._pool: ThreadPoolExecutor | None = None  # its thread starts with the first batch
        self._future: Future[None] | None = None
        cuda = device.startswith("cuda")
        self._stream = torch.cuda.Stream(device) if cuda else None

    def submit(self, pending: Pending, work: Callable[[], None]) -> None:
        """Run `work` (which calls `pending.finish()` and reports its outcome, errors
        included) in the finisher's thread, after the batch before it has finished."""
        self.wait()
        if self._stream is not None:
            self._hand_off(pending.tensors)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="decode")
        self._future = self._pool.submit(self._in_stream, work)

    def _hand_off(self, tensors: list[Any]) -> None:
        """On the main thread, right after the denoising was queued: the side stream starts
        after it, and the tensors it reads stay allocated until it has read them."""
        torch, stream = self._torch, self._stream
        stream.wait_stream(torch.cuda.current_stream(self._device))
        for tensor in tensors:
            if isinstance(tensor, torch.Tensor) and tensor.is_cuda:
                tensor.record_stream(stream)

    def _in_stream(self, work: Callable[[], None]) -> None:
        if self._stream is None:
            work()
            return
        with self._torch.cuda.stream(self._stream):
            work()

    def busy(self) -> bool:
        return self._future is not None and not self._future.done()

    def wait(self) -> None:
        """Until the batch handed over last (if any) has finished and reported."""
        future, self._future = self._future, None
        if future is None:
            return
        try:
            future.result()
        except Exception:  # `work` reports its own errors: this is a bug, not a batch's
            log.exception("a batch's decode failed outside its own error handling")

    def close(self) -> None:
        """Wait for the last batch, then end the thread (a later `submit` starts another)."""
        self.wait()
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
