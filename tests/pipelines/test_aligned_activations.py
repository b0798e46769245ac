"""SiLU, sigmoid and GELU give the one-thread values at every thread count and batch size.

ATen's chunks end wherever the thread count puts them, and a chunk's scalar tail
rounds SiLU, sigmoid and tanh-GELU differently from its vector body; the exact GELU
agrees on a flat tensor but not on a strided one (walked row by row).
`aligned_activations` runs them in pieces whose chunks are whole vectors.
"""

from collections.abc import Callable

import pytest
import torch
from torch import Tensor

from pixelpool.pipelines.diffusion import aligned_activations as aligned
from pixelpool.pipelines.diffusion import invariance

pytestmark = pytest.mark.usefixtures("restore_threads")

THREADS = range(1, 9)  # more threads than cores still splits the work that many ways
# Lengths around both grains, the demo UNet's SiLU at batch 5 (81920), odd ones.
SIZES = (16385, 20000, 32767, 32768, 40000, 65537, 81920, 100000, 245777, 1_000_003)

OPS: dict[str, tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]]] = {
    "silu": (aligned.silu, aligned._plain_silu),
    "sigmoid": (aligned.sigmoid, aligned._plain_sigmoid),
    "gelu": (aligned.gelu, aligned._plain_gelu),
    "gelu-tanh": (
        lambda x: aligned.gelu(x, approximate="tanh"),
        lambda x: aligned._plain_gelu(x, approximate="tanh"),
    ),
}


def _at(threads: int, op: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    torch.set_num_threads(threads)
    return op(x)


def test_the_plain_kernels_round_by_thread_count() -> None:
    """Why the module exists (torch 2.13 on this CPU): SiLU at 3 threads on 81920
    elements, chunks of 27307."""
    x = torch.randn(81920, generator=torch.Generator().manual_seed(0)) * 4
    assert not torch.equal(_at(3, aligned._plain_silu, x), _at(1, aligned._plain_silu, x))
    assert not torch.equal(_at(3, aligned._plain_sigmoid, x), _at(1, aligned._plain_sigmoid, x))


@pytest.mark.parametrize("name", OPS)
def test_every_thread_count_gives_the_one_thread_values(name: str) -> None:
    op, plain = OPS[name]
    gen = torch.Generator().manual_seed(1)
    for n in SIZES:
        x = torch.randn(n, generator=gen) * 4
        expected = _at(1, plain, x)
        for threads in THREADS:
            assert torch.equal(_at(threads, op, x), expected), f"{name}, {n}, {threads} threads"


@pytest.mark.parametrize("name", OPS)
def test_strided_and_channels_last_inputs_agree_across_thread_counts(name: str) -> None:
    op, plain = OPS[name]
    x = torch.randn(3, 40, 33, 50, generator=torch.Generator().manual_seed(2)) * 4
    views = {
        "gate": x[..., :25],  # half of the last dimension, as GEGLU's chunk
        "channels-last": x.to(memory_format=torch.channels_last),
        "transposed": x.transpose(1, 2),
    }
    for label, view in views.items():
        expected = _at(1, op, view)
        torch.testing.assert_close(expected, plain(view), rtol=1e-5, atol=1e-5)  # an ulp
        for threads in THREADS:
            assert torch.equal(_at(threads, op, view), expected), f"{name}, {label}, {threads}"


def test_an_image_in_a_batch_gets_its_solo_values() -> None:
    """At 3 threads a batch of 5 (81920) splits unaligned; image 2 alone is 16384."""
    batch = torch.randn(5, 32, 16, 32, generator=torch.Generator().manual_seed(3)) * 4
    for threads in THREADS:
        torch.set_num_threads(threads)
        for op, _plain in OPS.values():
            assert torch.equal(op(batch)[2], op(batch[2:3])[0]), threads


def test_in_place_silu_writes_its_input() -> None:
    torch.set_num_threads(3)
    x = torch.randn(81920, generator=torch.Generator().manual_seed(4))
    expected = _at(1, aligned._plain_silu, x.clone())
    torch.set_num_threads(3)
    gate = torch.randn(4, 81920, generator=torch.Generator().manual_seed(5))[:, :40000]
    gate_expected = _at(1, aligned.silu, gate.clone())
    torch.set_num_threads(3)
    assert aligned.silu(x, inplace=True) is x and torch.equal(x, expected)
    assert aligned.silu(gate, inplace=True) is gate and torch.equal(gate, gate_expected)


def test_head_lengths_cut_whole_vectors_for_every_chunk() -> None:
    for n in (*SIZES, 7 * 32768 + 5, 10**7 + 3):
        for threads in THREADS:
            for per_thread in (False, True):
                head = aligned.head_length(n, threads, per_thread)
                tasks = aligned._tasks(head, threads, per_thread)
                assert 0 < head <= n
                assert head == n or (head % aligned.ALIGN == 0 and head % tasks == 0)
                assert tasks == 1 or (head // tasks) % aligned.ALIGN == 0


def test_other_devices_dtypes_and_small_inputs_go_straight_to_torch() -> None:
    torch.set_num_threads(3)
    small = torch.randn(100)
    ints = torch.arange(100_000)
    assert aligned._as_is(small) and aligned._as_is(ints.float()[:32768])
    assert aligned.sigmoid(ints.float(), out=torch.empty(100_000)).shape == (100_000,)
    with pytest.raises(RuntimeError):  # torch's own error for an integer input
        aligned.silu(ints)


def test_the_counted_context_installs_and_restores_them() -> None:
    plain = torch.nn.functional.silu, torch.sigmoid, torch.nn.functional.gelu
    with invariance.thread_invariant_kernels():
        with invariance.thread_invariant_kernels():  # a decode beside the next batch
            pass
        assert torch.nn.functional.silu is aligned.silu
        assert torch.sigmoid is aligned.sigmoid
        assert torch.nn.functional.gelu is aligned.gelu
        assert torch.nn.SiLU()(torch.zeros(2)).tolist() == [0.0, 0.0]
    assert (torch.nn.functional.silu, torch.sigmoid, torch.nn.functional.gelu) == plain
