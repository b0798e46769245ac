"""Shared by the engine tests: a listener that records what the engine reports, and tasks."""

import asyncio
from pathlib import Path
from typing import Any

from pixelpool.engine.task import Task
from pixelpool.pipelines.base import Result

PARAMS = {"prompt": "a cat", "negative_prompt": "", "width": 64, "height": 64, "steps": 3,
          "cfg_scale": 7.0, "seed": 7}  # fmt: skip


class Recorder:
    """An EngineListener that records what the engine reports."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self.done: dict[str, asyncio.Future[tuple[str, Any]]] = {}

    def _future(self, job_id: str) -> asyncio.Future[tuple[str, Any]]:
        return self.done.setdefault(job_id, asyncio.get_running_loop().create_future())

    def job_started(self, job_id: str, device_id: str, batch_size: int) -> None:
        self.events.append(("started", (job_id, batch_size)))

    def job_progress(
        self, job_id: str, step: int, total: int, stage: str, preview: Any = None
    ) -> None:
        self.events.append(("progress", (job_id, step, total)))

    def job_finished(self, job_id: str, result: Result, device_id: str, run_s: float) -> None:
        self.events.append(("finished", (job_id, device_id)))
        self._future(job_id).set_result(("ok", result))

    def job_failed(self, job_id: str, error: str, kind: str, attempts: int | None = None) -> None:
        self._future(job_id).set_result((kind, error))

    def job_requeued(self, job_id: str, reason: str, attempts: int) -> None:
        self.events.append(("requeued", job_id))


def make_task(models_dir: Path, job_id: str, **params: Any) -> Task:
    p = {**PARAMS, **params}
    model = {"name": "demo-sd", "path": str(models_dir / "sd15/demo-sd"), "architecture": "sd15",
             "format": "diffusers"}  # fmt: skip
    key = (p["width"], p["height"], p["steps"], p["cfg_scale"], None, None)
    return Task(job_id, "diffusion", "txt2img", model, p, batch_key=key)
