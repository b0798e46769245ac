"""Coalesced progress: fewer messages, never a lost preview, a stage change or 100 %."""

from typing import Any

from pixelpool.engine.progress import CoalescedProgress
from pixelpool.testing.fakes import FakeClock


def _run(steps: list[tuple[float, int, int, str, Any]], interval: float) -> list[tuple]:
    clock = FakeClock(0.0)
    sent: list[tuple] = []
    progress = CoalescedProgress(lambda *a: sent.append(a), interval, clock)
    for at, step, total, stage, previews in steps:
        clock.now = at
        progress(step, total, stage, previews)
    return sent


def test_fast_steps_are_coalesced_to_one_message_per_interval() -> None:
    steps = [(i * 0.03, i, 10, "denoise", None) for i in range(1, 11)]  # 30 ms steps
    sent = _run(steps, 0.1)
    # the first step, then one at least 100 ms after the last sent, and always the last
    assert [s[0] for s in sent] == [1, 5, 9, 10]


def test_previews_stage_changes_and_the_last_step_are_never_dropped() -> None:
    steps = [
        (0.00, 1, 4, "denoise", None),
        (0.01, 2, 4, "denoise", ["png"]),  # a preview: sent even within the interval
        (0.02, 3, 4, "denoise", None),  # dropped
        (0.03, 4, 4, "denoise", None),  # 100 %
        (0.04, 1, 2, "hires", None),  # a new stage
        (0.05, 2, 2, "hires", None),
    ]
    sent = _run(steps, 0.1)
    assert [(s[0], s[2], s[3]) for s in sent] == [
        (1, "denoise", None), (2, "denoise", ["png"]), (4, "denoise", None),
        (1, "hires", None), (2, "hires", None),
    ]  # fmt: skip


def test_zero_interval_sends_every_step() -> None:
    steps = [(0.0, i, 5, "denoise", None) for i in range(1, 6)]
    assert [s[0] for s in _run(steps, 0.0)] == [1, 2, 3, 4, 5]
