"""How many CPU workers a Ray node gets: what the config asks, at most what its CPUs hold.

A worker that does not fit is never placed (Ray calls its actor unschedulable) and would
only fail and restart; a head started with `--num-cpus=0` (docs/deploy.md) gets none."""

from __future__ import annotations

import pytest

pytest.importorskip("ray")

from pixelpool.engine.ray_backend import Node, cpu_workers


def node(cpus: float, gpus: int = 0) -> Node:
    return Node("id", "n1", "127.0.0.1", cpus, gpus)


@pytest.mark.parametrize(
    ("cpus", "gpus", "per_node", "per_actor", "expected"),
    [
        (8, 0, None, 1.0, 1),  # default: one on a node without GPUs
        (8, 2, None, 1.0, 0),  # none beside GPUs
        (0, 0, None, 1.0, 0),  # a head with --num-cpus=0
        (0, 0, 1, 1.0, 0),  # asked for, but nothing to hold it
        (8, 0, 3, 2.0, 3),
        (8, 0, 6, 2.0, 4),  # 8 CPUs hold four workers of 2
        (3, 0, 2, 1.5, 2),  # exactly full
        (2, 0, 1, 4.0, 0),  # one worker wants more than the node has
        (0.3, 0, 3, 0.1, 3),  # fractional CPUs: 0.3 / 0.1 is 2.999... in floats
    ],
)
def test_cpu_workers_fit_the_node(
    cpus: float, gpus: int, per_node: int | None, per_actor: float, expected: int
) -> None:
    assert cpu_workers(node(cpus, gpus), per_node, per_actor) == expected
