"""The throughput suite's steady rate: a burst's ramp and tail left out."""

from __future__ import annotations

import pytest

from .bench_module import load_bench_module

steady_rate = load_bench_module("common").steady_rate


def _batches(ends_and_sizes: list[tuple[float, int]]) -> list[float]:
    """Response times of a batching server: every image of a batch at its end."""
    return [end for end, size in ends_and_sizes for _ in range(size)]


def test_a_short_first_batch_and_a_short_last_are_left_out() -> None:
    # 8 clients after a quiet phase: a batch of 1, three of 8 (2 s each), a tail of 7.
    finished = _batches([(0.4, 1), (2.4, 8), (4.4, 8), (6.4, 8), (8.2, 7)])
    assert steady_rate(finished, 8) == pytest.approx(16 / 4.0)  # the batches of 8
    assert len(finished) / finished[-1] < 16 / 4.0  # the whole burst is slower


def test_evenly_spaced_responses_give_their_rate() -> None:
    finished = [0.5 * (i + 1) for i in range(32)]  # one every 0.5 s, in any order
    assert steady_rate(list(reversed(finished)), 8) == pytest.approx(2.0)


def test_a_run_without_a_middle_has_no_steady_rate() -> None:
    assert steady_rate(_batches([(2.0, 16), (4.0, 16)]), 16) is None  # two rounds only
    assert steady_rate([1.0] * 32, 8) is None  # no time between the rounds
