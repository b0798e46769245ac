"""The A B B A quads that compare a server with the direct call (and a Ray actor with a
local worker) side by side: which seed runs where, and what each quad's ratio is."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from .bench_module import load_bench_module

common = load_bench_module("common")


class _Clock:
    """Time that moves only when a side runs, so each quad's ratio is exact."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += 100.0  # a pause before a call is not counted in it


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> _Clock:
    fake = _Clock()
    monkeypatch.setattr(common.time, "perf_counter", fake.perf_counter)
    monkeypatch.setattr(common.time, "sleep", fake.sleep)
    return fake


def test_each_pair_of_seeds_runs_a_b_b_a_and_gives_b_over_a(clock: _Clock) -> None:
    calls: list[tuple[str, int]] = []

    def side(name: str, cost: float) -> Callable[[int], None]:
        def call(seed: int) -> None:
            calls.append((name, seed))
            clock.now += cost * (1 + seed % 2)  # odd seeds cost twice as much on both sides

        return call

    a_s, b_s, quads = common.abba_quads(side("a", 1.0), side("b", 1.5), [10, 11, 12, 13])
    assert calls == [("a", 10), ("b", 10), ("b", 11), ("a", 11),
                     ("a", 12), ("b", 12), ("b", 13), ("a", 13)]  # fmt: skip
    assert a_s == [1.0, 2.0, 1.0, 2.0] and b_s == [1.5, 3.0, 1.5, 3.0]
    assert quads == [pytest.approx(1.5), pytest.approx(1.5)]


def test_an_odd_last_seed_pairs_with_itself(clock: _Clock) -> None:
    calls: list[tuple[str, int]] = []

    def call(name: str) -> Callable[[int], None]:
        def run(seed: int) -> None:
            calls.append((name, seed))
            clock.now += 1.0

        return run

    a_s, b_s, quads = common.abba_quads(call("a"), call("b"), [1, 2, 3])
    assert calls[4:] == [("a", 3), ("b", 3), ("b", 3), ("a", 3)]
    assert len(a_s) == len(b_s) == 4 and len(quads) == 2
