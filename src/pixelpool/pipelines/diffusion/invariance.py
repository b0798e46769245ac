"""Batch invariance: an image made in a batch equals, bit for bit, the image made alone.

Two kernels round differently depending on how many images share a call:

- matrix products with very few rows: below `MIN_ROWS` rows the BLAS works in
  groups of four rows with a separate path for the last, partial group (measured
  with MKL: from 12 rows on, every row's result is the same at any row count), and
  the time, pooled-text and conditioning embeddings have one row per image. So
  while a batch runs, `nn.Linear` pads such inputs with zero rows up to `MIN_ROWS`
  and drops them again — a negligible cost on inputs this small;
- the VAE's first layers at batch size 1 against larger batches, so the VAE always
  decodes and encodes one image at a time (diffusers' slicing), which also keeps
  its peak memory at one image.

Elementwise kernels also round the unaligned tail of a tensor differently, which
real models' widths (multiples of 64) never produce. Measured on the CPU
(MKL/oneDNN); on GPUs the BLAS chooses kernels by problem size, which this does not
cover beyond the small-row case.

The setting `scheduler.batch_invariant` (default true) turns both off for throughput:
the VAE then decodes and encodes the whole batch at once, and small matmuls run as
they are, so an image made in a batch differs from the solo image by rounding (the
tests bound it at 1/255 on the tiny models).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pixelpool.pipelines import option

MIN_ROWS = 12
_original_forward = nn.Linear.forward


def _padded_linear(self: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    rows = x.numel() // x.shape[-1] if x.ndim and x.shape[-1] else 0
    if rows == 0 or rows >= MIN_ROWS:
        return _original_forward(self, x)
    flat = F.pad(x.reshape(rows, x.shape[-1]), (0, 0, 0, MIN_ROWS - rows))
    out = F.linear(flat, self.weight, self.bias)[:rows]
    return out.reshape(*x.shape[:-1], out.shape[-1])


@contextlib.contextmanager
def padded_small_matmuls() -> Iterator[None]:
    """Within this block every `nn.Linear` gives each row the same result at any batch size.

    Workers run one batch at a time, so swapping the class's forward is safe there.
    """
    nn.Linear.forward = _padded_linear  # type: ignore[method-assign]
    try:
        yield
    finally:
        nn.Linear.forward = _original_forward  # type: ignore[method-assign]


def enabled() -> bool:
    """The worker's `scheduler.batch_invariant` setting."""
    return bool(option("batch_invariant", True))


def one_image_vae(pipe: Any, on: bool = True) -> None:
    """Make the pipeline's VAE work on one image at a time (batch-invariant, less memory),
    or, with `on` false, on the whole batch at once."""
    vae = getattr(pipe, "vae", None)
    if vae is not None and hasattr(vae, "use_slicing"):
        vae.use_slicing = on


@contextlib.contextmanager
def for_batch(pipe: Any) -> Iterator[None]:
    """One batch's call, batch-invariant or not as the worker is configured."""
    on = enabled()
    one_image_vae(pipe, on)
    with padded_small_matmuls() if on else contextlib.nullcontext():
        yield
