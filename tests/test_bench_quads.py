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


def _side(
    clock: _Clock, calls: list[tuple[str, int]], name: str, cost: float
) -> Callable[[int], None]:
    """A side of the comparison: records its calls; odd seeds cost it twice as much."""

    def call(seed: int) -> None:
        calls.append((name, seed))
        clock.now += cost * (1 + seed % 2)

    return call


def test_each_pair_of_seeds_runs_a_b_b_a_and_gives_b_over_a(clock: _Clock) -> None:
    calls: list[tuple[str, int]] = []
    a, b = _side(clock, calls, "a", 1.0), _side(clock, calls, "b", 1.5)
    a_s, b_s, quads = common.abba_quads(a, b, [10, 11, 12, 13])
    assert calls == [("a", 10), ("b", 10), ("b", 11), ("a", 11),
                     ("a", 12), ("b", 12), ("b", 13), ("a", 13)]  # fmt: skip
    assert a_s == [1.0, 2.0, 1.0, 2.0] and b_s == [1.5, 3.0, 1.5, 3.0]
    assert quads == [pytest.approx(1.5), pytest.approx(1.5)]


def test_an_odd_last_seed_pairs_with_itself(clock: _Clock) -> None:
    calls: list[tuple[str, int]] = []
    a, b = _side(clock, calls, "a", 1.0), _side(clock, calls, "b", 1.0)
    a_s, b_s, quads = common.abba_quads(a, b, [1, 2, 3])
    assert calls[4:] == [("a", 3), ("b", 3), ("b", 3), ("a", 3)]
    assert len(a_s) == len(b_s) == 4 and len(quads) == 2


def test_a_block_runs_a_b_b_a_and_compares_seconds_per_image() -> None:
    order: list[str] = []
    rates = iter([2.0, 4.0, 1.0, 2.0])  # a, b, b, a: b runs twice a's rate

    def run(name: str) -> Callable[[], dict[str, float]]:
        def once() -> dict[str, float]:
            order.append(name)
            return {"images_per_s": next(rates)}

        return once

    a_runs, b_runs, ratio = common.abba_block(run("a"), run("b"), lambda: order.append("|"))
    assert order == ["a", "|", "b", "|", "b", "|", "a", "|"]
    assert [r["images_per_s"] for r in a_runs] == [2.0, 2.0]
    assert [r["images_per_s"] for r in b_runs] == [4.0, 1.0]
    # a: 0.5 + 0.5 s an image, b: 0.25 + 1 s: the slow run weighs as much as it took
    assert ratio == pytest.approx(1.0 / 1.25)
