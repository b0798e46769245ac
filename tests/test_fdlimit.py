"""The soft open-files limit goes up to the hard one (at most the cap), and a limit that
stays low is said in the log."""

from __future__ import annotations

import resource
from collections.abc import Iterator

import pytest

from pixelpool.fdlimit import raise_open_files_limit


@pytest.fixture
def limits() -> Iterator[tuple[int, int]]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    yield soft, hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_the_soft_limit_is_raised_to_the_hard_one(limits: tuple[int, int]) -> None:
    _, hard = limits
    if hard != resource.RLIM_INFINITY and hard <= 300:
        pytest.skip(f"the hard limit ({hard}) leaves nothing to raise")
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    before, after = raise_open_files_limit(cap=300)
    assert (before, after) == (256, 300)
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (300, hard)
    assert raise_open_files_limit(cap=300) == (300, 300)  # nothing more to do


def test_a_low_limit_is_logged(limits: tuple[int, int], caplog: pytest.LogCaptureFixture) -> None:
    _, hard = limits
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    with caplog.at_level("WARNING", logger="pixelpool.fdlimit"):
        assert raise_open_files_limit(cap=200) == (256, 256)  # the cap is under the soft
    assert "open files limit 256" in caplog.text and "ulimit -n" in caplog.text
