"""SiLU, sigmoid and tanh-GELU that give the same values at any CPU thread count.

ATen runs an elementwise kernel in chunks, one per thread: for most kernels
min(threads, ceil(n / 32768)) chunks of ceil(n / chunks) elements (none below 32768),
for tanh-GELU one chunk per thread above 16384 elements. Inside a chunk the
vectorized kernel covers whole vectors and a scalar loop the chunk's last few
elements, and for SiLU, sigmoid and tanh-GELU the two round differently (by an ulp;
exp, erf, tanh and the exact GELU agree: measured, see the tests). So which elements
the scalar loop computes depends on where the chunks end: on the thread count and,
through n, on the batch size. At 3 threads 81920 elements (a demo UNet's SiLU at
batch 5) split into chunks of 27307; the demo images came out one level off the
one-thread images at 3-8 threads, and at 3, 5 and 6 threads a batched image one
level off the same image alone.

Here a large CPU input runs as pieces whose chunks are whole multiples of 64
elements: a head as long as that allows, then the same for the rest, until what is
left runs in one chunk. The scalar loop then only ever computes the tensor's last
n % 64 elements or fewer — the ones it computes at one thread — so every element
has the one-thread value. A strided input (GEGLU's gate, half of a projection) is
walked row by row, each row with its own tail, so it is made dense first; for it
the exact GELU is split too. Costs an extra kernel call or two per activation, and
a copy of a strided input.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache

import torch
from torch import Tensor

GRAIN = 32768  # ATen's elementwise grain: fewer elements run in one chunk
SERIAL = 16384  # the most elements every kernel here runs in one chunk
ALIGN = 64  # elements: a multiple of every CPU's vector block (AVX-512: 2 x 16 floats)

DENSE_LAYOUTS = (torch.contiguous_format, torch.channels_last, torch.channels_last_3d)

Kernel = Callable[..., Tensor]


def _tasks(n: int, threads: int, per_thread: bool) -> int:
    """How many chunks ATen splits `n` elements into."""
    if per_thread:
        return threads if n > SERIAL else 1
    return 1 if n < GRAIN else min(threads, math.ceil(n / GRAIN))


@lru_cache(maxsize=4096)
def head_length(n: int, threads: int, per_thread: bool = False) -> int:
    """The longest first piece of `n` elements whose chunks are all multiples of ALIGN,
    or `n` when `n` runs in one chunk anyway."""
    if threads == 1 or _tasks(n, threads, per_thread) == 1:
        return n
    head = n - n % ALIGN
    while head > SERIAL and head % (ALIGN * _tasks(head, threads, per_thread)):
        head -= ALIGN
    return head


def _flat(x: Tensor) -> Tensor | None:
    """A 1-D view of a dense tensor's elements in memory order (the order ATen's
    kernels walk them), or None if it has gaps or overlaps."""
    if not any(x.is_contiguous(memory_format=layout) for layout in DENSE_LAYOUTS):
        return None
    return x.as_strided((x.numel(),), (1,), x.storage_offset())


def run_aligned(
    kernel: Kernel, x: Tensor, inplace: bool = False, per_thread: bool = False, **kw: object
) -> Tensor:
    """`kernel(x, out=..., **kw)`, in pieces whose chunks are whole vectors."""
    src = _flat(x)
    if src is None:  # walked row by row, each row with its own tail: made dense first
        dense = run_aligned(kernel, x.contiguous(), True, per_thread, **kw)
        return x.copy_(dense) if inplace else dense
    result = x if inplace else torch.empty_like(x)
    out = _flat(result)
    assert out is not None  # empty_like keeps a dense tensor's layout
    threads, start, n = torch.get_num_threads(), 0, src.numel()
    while start < n:
        stop = start + head_length(n - start, threads, per_thread)
        kernel(src[start:stop], out=out[start:stop], **kw)
        start = stop
    return result


def _as_is(x: Tensor, per_thread: bool = False) -> bool:
    """The plain kernel gives the values `run_aligned` gives: off the CPU, under compile
    (a compiled graph fuses these into its own loops), or contiguous with chunks that
    are whole vectors already (one chunk, or a length they divide). Only the standard
    layout: the exact GELU of a channels-last tensor came out differently from the
    same elements laid flat."""
    if x.device.type != "cpu" or not x.is_floating_point() or torch.compiler.is_compiling():
        return True
    n = x.numel()
    return x.is_contiguous() and head_length(n, torch.get_num_threads(), per_thread) == n


_plain_silu = torch.nn.functional.silu
_plain_sigmoid = torch.sigmoid
_plain_gelu = torch.nn.functional.gelu


def silu(input: Tensor, inplace: bool = False) -> Tensor:
    if _as_is(input):
        return _plain_silu(input, inplace=inplace)
    return run_aligned(torch._C._nn.silu, input, inplace)


def sigmoid(input: Tensor, *, out: Tensor | None = None) -> Tensor:
    if out is not None or _as_is(input):
        return _plain_sigmoid(input, out=out)
    return run_aligned(_plain_sigmoid, input)


def gelu(input: Tensor, approximate: str = "none") -> Tensor:
    """The exact GELU agrees at every thread count on a dense input: only a strided
    one (GEGLU's gate, half of a projection) is made dense first."""
    tanh = approximate == "tanh"
    if _as_is(input, per_thread=tanh) or (not tanh and input.is_contiguous()):
        return _plain_gelu(input, approximate=approximate)
    return run_aligned(torch._C._nn.gelu, input, per_thread=tanh, approximate=approximate)


def install() -> None:
    """Route `F.silu`, `torch.sigmoid` and `F.gelu` (looked up at call time by torch's
    and diffusers' modules and transformers' QuickGELU) through the functions above."""
    torch.nn.functional.silu = silu  # type: ignore[assignment]
    torch.sigmoid = sigmoid  # type: ignore[assignment]
    torch.nn.functional.gelu = gelu  # type: ignore[assignment]


def uninstall() -> None:
    torch.nn.functional.silu = _plain_silu
    torch.sigmoid = _plain_sigmoid
    torch.nn.functional.gelu = _plain_gelu
