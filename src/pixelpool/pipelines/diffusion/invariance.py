"""Batch invariance: an image made in a batch equals, bit for bit, the image made alone.

Two kernels round differently depending on how many images share a call:

- matrix products with very few rows: below some row count the BLAS takes another
  path (with MKL on an AVX2 CPU, groups of four rows with a separate path for the
  last, partial group: from 12 rows on, every row's result is the same at any row
  count; on an AVX-512 CPU the same holds from 16 rows), and the time, pooled-text
  and conditioning embeddings have one row per image. So while a batch runs,
  `nn.Linear` pads such inputs with zero rows up to that count and drops them
  again — a negligible cost on inputs this small. The count is not assumed: it is
  measured once per device and dtype at first use (`min_rows`), on the widths of
  these products in real models;
- the VAE's first layers at batch size 1 against larger batches, so the VAE always
  decodes and encodes one image at a time (diffusers' slicing), which also keeps
  its peak memory at one image.

Elementwise kernels also round the unaligned tail of a tensor differently, which
real models' widths (multiples of 64) never produce. Measured on the CPU
(MKL/oneDNN); on GPUs the BLAS chooses kernels by problem size, which this does not
cover beyond the small-row case.

The CPU's thread count changes results too, in two kinds of kernel, so while
diffusion runs on the CPU (`thread_invariant_kernels`):

- oneDNN's 1x1 convolutions round differently at every torch thread count (its 3x3
  ones agree), so a plain 1x1 convolution is one matrix product over every position
  of the batch, as a `Linear` of its channels (rows that many give each row the same
  result at any row count, like the padded products above);
- SiLU, sigmoid and tanh-GELU round their chunks' scalar tails differently from
  their vector bodies, and the chunks follow the thread count and the batch size:
  they run in pieces whose chunks are whole vectors (`aligned_activations`).

On the demo models (SD 1.x and SDXL, 10 steps) that makes a job's images equal at
every thread count from 1 to 8 and a batched image equal to the solo one at each
(before: one level off at 3-8 threads, and batched != solo at 3, 5 and 6), so a Ray
CPU worker with one thread gives the images of a local worker using every core.
Not a promise for real-size models: MKL splits the long sums of products of few
rows and wide inputs (1280 -> 1280 over a batch's padded time embeddings, 5120 ->
1280 at the smallest latents) by thread, unless its strict reproducible mode is on
(`MKL_CBWR=AUTO,STRICT` in the workers' environment; not the default: it costs
10-16 % on a real-size SD 1.5 on the CPU, docs/benchmarks.md).

The setting `scheduler.batch_invariant` (default true) turns all of this off for
throughput: the VAE then decodes and encodes the whole batch at once, small matmuls
run as they are, 1x1 convolutions go to oneDNN and activations run whole, so an
image made in a batch differs from the solo image by rounding (the tests bound it
at 1/255 on the tiny models).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pixelpool.pipelines import option
from pixelpool.pipelines.diffusion import aligned_activations

# Row counts tried, smallest first (1: the BLAS is invariant as it is), and the
# (in, out) widths of the one-row-per-image products of real models: SD 1.x / SDXL
# time embeddings (320 -> 1280, 1280 -> 1280), SDXL's added embeddings (2816 -> 1280),
# projections into a narrower block (768 -> 320) and the tiny models' (256 -> 1280).
CANDIDATE_ROWS = (1, 8, 12, 16, 24, 32, 48, 64)
PROBE_WIDTHS = ((320, 1280), (1280, 1280), (2816, 1280), (768, 320), (256, 1280))
PROBE_ROWS = 64  # the reference product: the BLAS's regular path
_min_rows: dict[tuple[str, torch.dtype], int] = {}
_original_forward = nn.Linear.forward
_original_conv = nn.Conv2d._conv_forward
_users = 0  # threads inside `thread_invariant_kernels` (a batch, a decode beside it)
_lock = threading.Lock()


def min_rows(device: torch.device, dtype: torch.dtype) -> int:
    """The fewest rows from which every row of a product comes out the same at any row
    count on this device and dtype (padding to it makes smaller products agree).
    Measured on first use, then remembered: a few dozen small products."""
    key = (str(device), dtype)
    if key not in _min_rows:
        _min_rows[key] = _measure_min_rows(device, dtype)
    return _min_rows[key]


def _measure_min_rows(device: torch.device, dtype: torch.dtype) -> int:
    gen = torch.Generator().manual_seed(0)
    cases = []
    with torch.inference_mode():
        for width_in, width_out in PROBE_WIDTHS:
            weight = torch.randn(width_out, width_in, generator=gen) / width_in**0.5
            bias = torch.randn(width_out, generator=gen)
            x = torch.randn(PROBE_ROWS, width_in, generator=gen)
            w, b, x = (t.to(device, dtype) for t in (weight, bias, x))
            cases.append((x, w, b, F.linear(x, w, b)))

        def agrees(rows: int) -> bool:
            for x, w, b, reference in cases:
                for m in range(1, rows):  # padded up to `rows`
                    out = F.linear(F.pad(x[:m], (0, 0, 0, rows - m)), w, b)[:m]
                    if not torch.equal(out, reference[:m]):
                        return False
                for m in {rows, rows + 1, rows + 5, 2 * rows - 1, 33, 47, PROBE_ROWS - 1}:
                    if rows <= m < PROBE_ROWS and not torch.equal(
                        F.linear(x[:m], w, b), reference[:m]
                    ):
                        return False
            return True

        return next((rows for rows in CANDIDATE_ROWS if agrees(rows)), PROBE_ROWS)


def _padded_linear(self: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """`nn.Linear.forward` while a batch runs (see `padded_product`)."""
    return padded_product(x, self.weight, self.bias)


def padded_product(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """`F.linear`, each row the same at any row count: fewer rows than `min_rows` are
    padded with zero rows. Every Linear of the model comes through here (an SDXL UNet:
    ~700 calls a step), nearly all with at least PROBE_ROWS rows, which `min_rows`
    never exceeds: those go straight to the product, without the lookup (measured:
    ~2 us a call before, ~0.3 us now; tens of ms an SDXL image)."""
    width = x.shape[-1] if x.ndim else 0
    rows = x.numel() // width if width else 0
    least = 0 if rows == 0 or rows >= PROBE_ROWS else min_rows(x.device, x.dtype)
    if rows >= least:
        return F.linear(x, weight, bias)
    flat = F.pad(x.reshape(rows, width), (0, 0, 0, least - rows))
    out = F.linear(flat, weight, bias)[:rows]
    return out.reshape(*x.shape[:-1], out.shape[-1])


@contextlib.contextmanager
def padded_small_matmuls(
    device: torch.device | None = None, dtype: torch.dtype | None = None
) -> Iterator[None]:
    """Within this block every `nn.Linear` gives each row the same result at any batch size.

    Workers run one batch at a time, so swapping the class's forward is safe there.
    `device` and `dtype` (the pipeline's): their `min_rows` is measured now, and float32's
    (an upcast VAE's), so that a compiled model (`torch.compile`) finds them made and
    never traces a measurement.
    """
    if device is not None:
        for kind in {torch.float32, dtype or torch.float32}:
            min_rows(device, kind)
    nn.Linear.forward = _padded_linear  # type: ignore[method-assign]
    try:
        yield
    finally:
        nn.Linear.forward = _original_forward  # type: ignore[method-assign]


def _conv_as_products(
    self: nn.Conv2d, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """`nn.Conv2d._conv_forward` while diffusion runs: a plain 1x1 convolution on the CPU
    as one product of all the batch's positions (rows) by its weights; anything else as
    is. One product per image gave the same results but cost 4-16 % of a batch of 8-16
    on the tiny demo models (thousands of small products a step); one product costs
    what oneDNN's convolution does (docs/benchmarks.md)."""
    plain = (
        x.device.type == "cpu" and x.ndim == 4 and tuple(weight.shape[-2:]) == (1, 1)
        and self.groups == 1 and self.stride == (1, 1) and self.padding == (0, 0)
        and self.dilation == (1, 1)
    )  # fmt: skip
    if not plain:
        return _original_conv(self, x, weight, bias)
    n, channels, height, width = x.shape
    positions = x.permute(0, 2, 3, 1).reshape(n * height * width, channels)
    out = padded_product(positions, weight.reshape(weight.shape[0], channels), bias)
    return out.reshape(n, height, width, -1).permute(0, 3, 1, 2).contiguous()


@contextlib.contextmanager
def thread_invariant_kernels() -> Iterator[None]:
    """Within this block (on any thread) the CPU's 1x1 convolutions and SiLU, sigmoid
    and tanh-GELU give the same result at any torch thread count. Counted: a decode
    beside the next batch (another thread) keeps it on until both have left; off with
    `batch_invariant`."""
    global _users
    if not enabled():
        yield
        return
    with _lock:
        _users += 1
        nn.Conv2d._conv_forward = _conv_as_products  # type: ignore[method-assign]
        aligned_activations.install()
    try:
        yield
    finally:
        with _lock:
            _users -= 1
            if _users == 0:
                nn.Conv2d._conv_forward = _original_conv  # type: ignore[method-assign]
                aligned_activations.uninstall()


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
    device, dtype = getattr(pipe, "device", None), getattr(pipe, "dtype", None)
    with padded_small_matmuls(device, dtype) if on else contextlib.nullcontext():
        yield
