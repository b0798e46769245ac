"""The state one Ray cluster test module shares: the cluster, its loop, the scheduler."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pixelpool.engine.ray_actor import NODE_MODELS_ENV
from pixelpool.engine.scheduler import Scheduler

from .engine_helpers import Recorder

if TYPE_CHECKING:
    from ray.cluster_utils import Cluster


class Where(Recorder):
    """Also records the device each job started on."""

    def __init__(self) -> None:
        super().__init__()
        self.device: dict[str, str] = {}
        self.on_start: dict[str, Callable[[], None]] = {}

    def job_started(self, job_id: str, device_id: str, batch_size: int) -> None:
        super().job_started(job_id, device_id, batch_size)
        self.device[job_id] = device_id
        if job_id in self.on_start:  # right after the batch was sent to its worker
            self.on_start.pop(job_id)()


class Harness:
    def __init__(self, cluster: Cluster, loop: asyncio.AbstractEventLoop) -> None:
        self.cluster = cluster
        self.loop = loop
        self.recorder = Where()
        self.engine: Scheduler | None = None
        self.data_dir = Path()
        self.models = Path()  # the scheduler's models dir: no such directory
        self.full = Path()  # a node's models dir with every demo model
        self.sd_only = Path()  # n2's: only the SD 1.x model

    def env(self, models: Path) -> dict[str, Any]:
        return {"env_vars": {NODE_MODELS_ENV: str(models)}}

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)


def node_models(root: Path, models_dir: Path, names: list[str]) -> Path:
    """A node's own models dir holding `names` (links to the demo models)."""
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).symlink_to(models_dir / name, target_is_directory=True)
    return root


async def drain() -> None:
    """Let the tasks that stop() cancelled (the scheduler's loop) finish cancelling."""
    pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
