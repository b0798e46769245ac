"""The engine with real worker processes: dispatch, batching, failures, respawn."""

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import numpy as np

from pixelpool.config import DeviceSettings, SchedulerSettings, Settings
from pixelpool.engine.pool import build_scheduler

from .engine_helpers import Recorder, make_task


async def _engine(**scheduler: Any) -> tuple[Any, Recorder]:
    settings = Settings(scheduler=SchedulerSettings(**scheduler))
    recorder = Recorder()
    engine = build_scheduler(settings, recorder)
    await engine.start()
    while not engine.ready:
        await asyncio.sleep(0.05)
    return engine, recorder


def test_jobs_batch_and_report_progress(models_dir: Path) -> None:
    async def go() -> None:
        engine, rec = await _engine(max_batch=4, progress_interval_ms=0)
        try:
            # Occupy the worker so the next three queue up and leave as one batch.
            engine.submit(make_task(models_dir, "first", steps=8, width=128, height=128))
            await asyncio.sleep(0.05)
            for i in range(3):
                engine.submit(make_task(models_dir, f"b{i}", seed=100 + i))
            results = [await rec._future(j) for j in ("first", "b0", "b1", "b2")]
            assert all(kind == "ok" for kind, _ in results)
            started = dict(v for k, v in rec.events if k == "started")
            assert started == {"first": 1, "b0": 3, "b1": 3, "b2": 3}
            steps = [s for k, (j, s, _t) in ((k, v) for k, v in rec.events if k == "progress")
                     if j == "b1"]  # fmt: skip
            assert steps == [1, 2, 3]
            images = [r.images[0] for _, r in results[1:]]
            assert images[0].shape == (64, 64, 3)
            assert not np.array_equal(images[0], images[1])
            while engine.snapshot()[0]["busy"]:  # the cache report follows the last result
                await asyncio.sleep(0.02)
            assert engine.snapshot()[0]["cache"]["hits"] >= 1
            # One prompt for all four jobs: encoded once, then the worker's text cache.
            text = engine.snapshot()[0]["cache"]["text_embeddings"]
            assert text["misses"] == 2 and text["hits"] == 6  # prompt and negative
        finally:
            await engine.stop()

    asyncio.run(go())


def test_bad_job_fails_and_worker_lives_on(models_dir: Path) -> None:
    async def go() -> None:
        engine, rec = await _engine()
        try:
            bad = make_task(models_dir, "bad")
            bad.model = {**bad.model, "path": str(models_dir / "missing")}
            engine.submit(bad)
            kind, error = await rec._future("bad")
            assert kind == "error" and "missing" in error
            engine.submit(make_task(models_dir, "good"))
            assert (await rec._future("good"))[0] == "ok"
        finally:
            await engine.stop()

    asyncio.run(go())


def test_killed_worker_is_respawned_and_job_rerun(models_dir: Path) -> None:
    async def go() -> None:
        engine, rec = await _engine()
        try:
            engine.submit(make_task(models_dir, "victim", steps=30, width=256, height=256))
            while not any(k == "progress" for k, _ in rec.events):
                await asyncio.sleep(0.02)
            os.kill(engine.slots[0].handle.pid, signal.SIGKILL)
            kind, _ = await asyncio.wait_for(rec._future("victim"), timeout=120)
            assert kind == "ok"
            assert ("requeued", "victim") in rec.events
            assert engine.slots[0].restarts == 1
        finally:
            await engine.stop()

    asyncio.run(go())


def test_cancel_queued_job(models_dir: Path) -> None:
    async def go() -> None:
        engine, rec = await _engine()
        try:
            engine.submit(make_task(models_dir, "long", steps=20, width=256, height=256))
            await asyncio.sleep(0.05)
            engine.submit(make_task(models_dir, "queued"))
            assert engine.cancel("queued") == "cancelled"
            assert (await rec._future("queued"))[0] == "cancelled"
            assert engine.cancel("long") == "cancelling"
            assert (await rec._future("long"))[0] == "cancelled"
            assert engine.cancel("nothing") == "unknown"
        finally:
            await engine.stop()

    asyncio.run(go())


def test_ram_tier_brings_models_back_without_disk(models_dir: Path) -> None:
    async def go() -> None:
        settings = Settings(
            devices={"cpu": DeviceSettings(vram_budget_gb=0.0025, ram_budget_gb=0.01)}
        )
        rec = Recorder()
        engine = build_scheduler(settings, rec)
        await engine.start()
        try:
            while not engine.ready:
                await asyncio.sleep(0.05)
            sdxl = {"name": "demo-sdxl", "path": str(models_dir / "sdxl/demo-sdxl"),
                    "architecture": "sdxl", "format": "diffusers",
                    "size_bytes": 1_900_000}  # fmt: skip
            for i, model in enumerate(["sd", "sdxl", "sd", "sdxl"]):
                task = make_task(models_dir, f"j{i}")
                if model == "sdxl":
                    task.model = sdxl
                engine.submit(task)
                assert (await rec._future(f"j{i}"))[0] == "ok"
            while engine.snapshot()[0]["busy"]:
                await asyncio.sleep(0.02)
            cache = engine.snapshot()[0]["cache"]
            assert (cache["misses"], cache["ram_hits"]) == (2, 2)
            assert {m["tier"] for m in cache["models"]} == {"device", "ram"}
        finally:
            await engine.stop()

    asyncio.run(go())
