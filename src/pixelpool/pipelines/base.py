"""The interface every task family implements: load(entry) and run(batch).

Only worker processes import the modules that implement it (they import torch);
its parameter schemas and the rest of its description live in `families/<name>/`
(torch-free), which the API, the registry and the job service consult.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

ProgressFn = Callable[[int, int, str, "list[Any] | None"], None]
"""progress(step, total, stage, previews) — called between steps; previews (uint8 RGB
arrays, one per batch item) only on the steps where a preview was asked for."""

CancelFn = Callable[[], bool]
"""Returns True once every item of the running batch has been cancelled."""


class Cancelled(Exception):
    """Raised inside a run when its batch was cancelled; the worker reports it."""


@dataclass
class Loaded:
    """A model ready to run on one device, with the bytes it occupies there."""

    obj: Any
    size_bytes: int
    architecture: str
    device: str
    family: str


@dataclass
class WorkItem:
    """One job of a batch, as the pipeline sees it: its id, operation and validated params."""

    job_id: str
    op: str
    params: dict[str, Any]


@dataclass
class Result:
    """What one job produced: raw RGB(A) uint8 arrays (encoded later, off the worker).

    `arrays` (name -> numpy array: masks, depth, features) are stored as `.npy`
    artifacts named in the job's result; `info` says what each name is."""

    images: list[Any] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, Any] = field(default_factory=dict)
    # Sent to the job's owner on its WebSocket connections, never stored (diffusion:
    # `clip_embeddings` entries and `latent_cache`, for clients that asked for them).
    caches: dict[str, Any] = field(default_factory=dict)


@dataclass
class Pending:
    """A batch whose denoising (the device-heavy part) is done: `finish()` makes its
    results (VAE decode, post-processing), one per job in the batch's order, each as
    soon as it is made (with `stream_results` a worker sends each while the next one
    decodes).
    `tensors`: the device tensors `finish` reads, so a worker running it on a second
    CUDA stream can hand them across streams. `overlap`: whether running `finish`
    beside the next batch pays at all (false when the results are already made)."""

    finish: Callable[[], Iterable[Result]]
    tensors: list[Any] = field(default_factory=list)
    overlap: bool = True


def done(results: list[Result]) -> Pending:
    """Results already made, as a Pending (families that do not split their batches)."""
    return Pending(lambda: iter(results), overlap=False)


def start(
    family: Family, loaded: Loaded, batch: list[WorkItem], progress: ProgressFn, cancel: CancelFn
) -> Pending:
    """The family's `start` where it has one (it splits the batch), else its `run`."""
    split = getattr(family, "start", None)
    if split is None:
        return done(family.run(loaded, batch, progress, cancel))
    return split(loaded, batch, progress, cancel)  # type: ignore[no-any-return]


class Family(Protocol):
    def load(self, entry: dict[str, Any], device: str, dtype: str) -> Loaded: ...

    def move(self, loaded: Loaded, device: str) -> Loaded: ...

    def run(
        self, loaded: Loaded, batch: list[WorkItem], progress: ProgressFn, cancel: CancelFn
    ) -> list[Result]: ...

    # Optional: `start(loaded, batch, progress, cancel) -> Pending` runs the batch up to
    # its decode, so a worker can decode it while the next batch denoises.
