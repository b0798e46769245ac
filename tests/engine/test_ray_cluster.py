"""The Ray backend on a real three-node Ray cluster on this machine (loopback only).

One cluster and one scheduler for the whole file: nodes "head", "n1" (1 CPU) and "n2"
(2 CPUs); one CPU worker actor on each of n1 and n2 (head/cpu0 is disabled), tiny demo
models, 64x64, 2 steps. Each node has its own models dir (n1 both demo models, n2 only
the SD 1.x one); the scheduler's models dir is a path no node has, so every job that
runs proves its paths were moved to its node's dir. A node "n3" joins midway. The
node-loss test removes a node; the restart test, last, stops the scheduler for good.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
import pytest
from PIL import Image

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

from pixelpool.api.app import create_app, lifespan  # noqa: E402
from pixelpool.config import Settings  # noqa: E402
from pixelpool.engine.pool import build_scheduler  # noqa: E402
from pixelpool.engine.ray_actor import NODE_MODELS_ENV  # noqa: E402
from pixelpool.engine.scheduler import NoDeviceServes, Scheduler  # noqa: E402
from pixelpool.engine.task import Task  # noqa: E402

from .engine_helpers import Recorder, make_task  # noqa: E402

pytestmark = pytest.mark.ray

LOOPBACK = "127.0.0.2"  # Ray swaps 127.0.0.1 for the machine's outward address
MB = 1 << 20
NODE = {"node_ip_address": LOOPBACK, "object_store_memory": 80 * MB, "include_dashboard": False}
FAST_FAILURE = {  # notice a lost node in about a second, not the default 30 s
    "health_check_period_ms": 300,
    "health_check_timeout_ms": 300,
    "health_check_failure_threshold": 3,
    "health_check_initial_delay_ms": 0,
}
MODELS = ["sd15/demo-sd", "sdxl/demo-sdxl"]


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

    def env(self, models: Path) -> dict[str, Any]:
        return {"env_vars": {NODE_MODELS_ENV: str(models)}}

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)


def _node_models(root: Path, models_dir: Path, names: list[str]) -> Path:
    """A node's own models dir holding `names` (links to the demo models)."""
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).symlink_to(models_dir / name, target_is_directory=True)
    return root


@pytest.fixture(scope="module")
def harness(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    os.environ["RAY_DISABLE_USAGE_STATS"] = "1"
    root = tmp_path_factory.mktemp("nodes").resolve()
    cluster = Cluster(
        initialize_head=True,
        head_node_args={**NODE, "num_cpus": 0, "node_name": "head", "_system_config": FAST_FAILURE},
    )
    loop = asyncio.new_event_loop()
    h = Harness(cluster, loop)
    h.full = _node_models(root / "n1", models_dir, MODELS)
    cluster.add_node(**NODE, num_cpus=1, node_name="n1", **h.env(h.full))
    sd_only = _node_models(root / "n2", models_dir, MODELS[:1])
    cluster.add_node(**NODE, num_cpus=2, node_name="n2", **h.env(sd_only))
    ray.init(address=cluster.address)
    h.data_dir = tmp_path_factory.mktemp("data")
    h.models = root / "server-models"
    settings = Settings(
        server={"data_dir": h.data_dir, "models_dir": h.models},
        cluster={"backend": "ray", "cpu_actors_per_node": 1, "discover_interval_s": 2},
        devices={"head/cpu0": {"enabled": False}},
        scheduler={"max_batch": 2, "progress_interval_ms": 0, "heartbeat_timeout_s": 20},
    )
    h.engine = build_scheduler(settings, h.recorder, lambda: [str(h.models / m) for m in MODELS])

    async def start() -> None:
        assert h.engine is not None
        await h.engine.start()
        while not all(s.ready for s in h.engine.slots):
            await asyncio.sleep(0.05)

    h.run(start())
    try:
        yield h
    finally:
        h.run(h.engine.stop())
        h.run(_drain())
        loop.close()
        ray.shutdown()
        cluster.shutdown()


async def _drain() -> None:
    """Let the tasks that stop() cancelled (the scheduler's loop) finish cancelling."""
    pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)


def _result(h: Harness, job_id: str) -> tuple[str, Any]:
    async def wait() -> tuple[str, Any]:
        return await asyncio.wait_for(h.recorder._future(job_id), 120)

    return h.run(wait())


def test_devices_are_named_by_node(harness: Harness) -> None:
    assert harness.engine is not None
    assert [s.device_id for s in harness.engine.slots] == ["n1/cpu0", "n2/cpu0"]
    nodes = {n["name"]: n for n in harness.engine.nodes()}
    assert nodes["n1"]["devices"] == ["n1/cpu0"] and nodes["n2"]["cpus"] == 2
    snapshot = harness.engine.snapshot()
    assert [d["node"] for d in snapshot] == ["n1", "n2"] and "pid" not in snapshot[0]


def test_jobs_spread_over_nodes_in_remote_batches(harness: Harness) -> None:
    assert harness.engine is not None
    ids = [f"spread{i}" for i in range(4)]
    for i, job_id in enumerate(ids):  # one dispatch: two batches of two, one per node
        harness.engine.submit(make_task(harness.models, job_id, seed=10 + i, steps=2))
    results = [_result(harness, j) for j in ids]
    assert all(kind == "ok" for kind, _ in results)
    assert {harness.recorder.device[j] for j in ids} == {"n1/cpu0", "n2/cpu0"}
    sizes = [v[1] for k, v in harness.recorder.events if k == "started" and v[0] in ids]
    assert sizes == [2, 2, 2, 2]
    images = [r.images[0] for _, r in results]
    assert images[0].shape == (64, 64, 3) and not np.array_equal(images[0], images[1])


def test_images_equal_the_local_backends(harness: Harness, models_dir: Path) -> None:
    assert harness.engine is not None
    harness.engine.submit(make_task(harness.models, "remote", seed=42, steps=2))
    remote = _result(harness, "remote")[1].images[0]

    async def local() -> Any:
        rec = Recorder()
        # One thread, as the actor has (one Ray CPU): sums in the same order.
        engine = build_scheduler(Settings(devices={"cpu": {"threads": 1}}), rec)
        await engine.start()
        try:
            engine.submit(make_task(models_dir, "local", seed=42, steps=2))
            return (await asyncio.wait_for(rec._future("local"), 120))[1].images[0]
        finally:
            await engine.stop()

    np.testing.assert_array_equal(remote, harness.run(local()))


def test_cancel_reaches_a_remote_running_job(harness: Harness) -> None:
    engine = harness.engine
    assert engine is not None
    engine.submit(make_task(harness.models, "long", steps=200, seed=5))

    async def cancel_once_running() -> tuple[str, Any]:
        while not any(k == "progress" and v[0] == "long" for k, v in harness.recorder.events):
            await asyncio.sleep(0.02)
        assert engine.cancel("long") == "cancelling"
        return await asyncio.wait_for(harness.recorder._future("long"), 60)

    kind, _ = harness.run(cancel_once_running())
    assert kind == "cancelled"


def test_an_upload_in_the_data_dir_travels_to_the_remote_worker(harness: Harness) -> None:
    assert harness.engine is not None
    upload = harness.data_dir / "uploads" / "in.png"
    upload.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 64), (200, 40, 40)).save(upload)
    task = make_task(harness.models, "img2img", steps=2, images=[str(upload)], strength=0.5)
    task.op = "img2img"
    # Gone once the batch is on its way: the worker can only read the copy that travelled.
    harness.recorder.on_start["img2img"] = upload.unlink
    harness.engine.submit(task)
    kind, result = _result(harness, "img2img")
    assert kind == "ok", result
    assert not upload.exists() and result.images[0].shape == (64, 64, 3)


def test_the_cluster_speaks_on_loopback_only(harness: Harness) -> None:
    """Every node advertises, and every Ray listener binds, a loopback address or the
    wildcard: none binds this machine's outward address. (Ray's gRPC servers bind the
    wildcard in this Ray version; docs/deploy.md says to firewall the Ray ports.)"""
    assert {n["NodeManagerAddress"] for n in ray.nodes()} == {LOOPBACK}
    ray_pids = {
        p.pid
        for p in psutil.process_iter(["cmdline"])
        if any("ray" in Path(part).name for part in p.info["cmdline"] or [])
    }
    listening = [
        c.laddr
        for c in psutil.net_connections("inet")
        if c.status == psutil.CONN_LISTEN and c.pid in ray_pids
    ]
    assert listening, "found no Ray listener: the check would prove nothing"
    loopback_or_any = ("127.", "::1", "0.0.0.0", "::")
    assert not [a for a in listening if not a.ip.startswith(loopback_or_any)]


def _sdxl(models: Path, job_id: str, steps: int) -> Task:
    task = make_task(models, job_id, steps=steps)
    task.model = {"name": "demo-sdxl", "path": str(models / MODELS[1]), "architecture": "sdxl",
                  "format": "diffusers"}  # fmt: skip
    return task


def test_a_job_goes_only_to_a_node_that_has_its_model(harness: Harness) -> None:
    engine = harness.engine
    assert engine is not None
    sd, sdxl = (str(harness.models / m) for m in MODELS)
    assert engine.model_nodes(sd) == ["n1", "n2"] and engine.model_nodes(sdxl) == ["n1"]
    ids = ["xl2", "xl3"]
    for job_id, steps in zip(ids, (2, 3), strict=True):  # two batches: one per node, if
        engine.submit(_sdxl(harness.models, job_id, steps))  # n2 could run them
    assert [_result(harness, j)[0] for j in ids] == ["ok", "ok"]
    assert {harness.recorder.device[j] for j in ids} == {"n1/cpu0"}
    nowhere = make_task(harness.models, "nowhere")
    nowhere.model = {**nowhere.model, "name": "gone", "path": str(harness.models / "sd15/gone")}
    with pytest.raises(NoDeviceServes, match="'gone' is on no node"):
        engine.check(nowhere)


def test_a_node_that_joins_gets_a_worker_that_runs_jobs(harness: Harness) -> None:
    engine = harness.engine
    assert engine is not None
    harness.cluster.add_node(**NODE, num_cpus=1, node_name="n3", **harness.env(harness.full))

    async def joined() -> None:  # the next discovery round (every 2 s here) finds it
        while not any(s.device_id == "n3/cpu0" and s.ready for s in engine.slots):
            await asyncio.sleep(0.1)

    harness.run(asyncio.wait_for(joined(), 120))
    device = next(d for d in engine.snapshot() if d["id"] == "n3/cpu0")
    assert device["node"] == "n3" and device["models"] == 2
    assert "n3" in engine.model_nodes(str(harness.models / MODELS[1]))
    task = make_task(harness.models, "newcomer", steps=2)
    task.excluded = {"n1/cpu0", "n2/cpu0"}  # only the new node may run it
    engine.submit(task)
    assert _result(harness, "newcomer")[0] == "ok"
    assert harness.recorder.device["newcomer"] == "n3/cpu0"


def test_a_lost_node_requeues_its_job_on_another(harness: Harness) -> None:
    engine = harness.engine
    assert engine is not None
    survivor = make_task(harness.models, "survivor", steps=200, seed=9)
    survivor.excluded = {"n2/cpu0"}  # n2 stays up for the restart test
    engine.submit(survivor)

    async def lose_its_node() -> tuple[str, str, Any]:
        while not any(k == "progress" and v[0] == "survivor" for k, v in harness.recorder.events):
            await asyncio.sleep(0.02)
        first = harness.recorder.device["survivor"]
        slot = next(s for s in engine.slots if s.device_id == first)
        node_id = slot.handle.node.node_id  # type: ignore[attr-defined]
        node = next(n for n in harness.cluster.worker_nodes if n.node_id == node_id)
        harness.cluster.remove_node(node)
        return first, *(await asyncio.wait_for(harness.recorder._future("survivor"), 120))

    first, kind, _ = harness.run(lose_its_node())
    assert kind == "ok"
    assert ("requeued", "survivor") in harness.recorder.events
    assert harness.recorder.device["survivor"] != first


def test_a_restart_against_the_running_cluster_loses_no_job(
    harness: Harness, models_dir: Path, tmp_path: Path
) -> None:
    """The whole pixelpool side (app, job store, scheduler) stops with jobs queued and
    running, and starts again on the same data dir against the same cluster: every
    accepted job completes. In this process (it already is a Ray driver): a server
    subprocess would spend most of this test importing."""
    assert harness.engine is not None
    harness.run(harness.engine.stop())  # its workers' CPUs go to the server's
    settings = Settings(
        server={"data_dir": tmp_path, "models_dir": models_dir, "default_model": "demo-sd"},
        cluster={"backend": "ray", "cpu_actors_per_node": 1, "discover_interval_s": 0},
        devices={d: {"enabled": False} for d in ("head/cpu0", "n1/cpu0", "n3/cpu0")},
    )  # one worker (on n2, which has only the SD 1.x model): one actor start per life
    job = {"prompt": "a lighthouse", "width": 64, "height": 64, "seed": 4}

    async def first_life() -> tuple[list[str], list[str]]:
        app = create_app(settings)
        async with lifespan(app), _client(app) as client:
            ids = []
            for steps in range(4, 8):  # four groups: four batches, one at a time
                r = await client.post("/api/enqueue/generate", json={**job, "steps": steps})
                assert r.status_code == 200, r.text
                ids.append(r.json()["job_id"])
            while (await client.get(f"/api/job/{ids[0]}")).json()["status"] == "queued":
                await asyncio.sleep(0.02)
            states = [(await client.get(f"/api/job/{i}")).json()["status"] for i in ids]
        return ids, states  # leaving the lifespan stops the app, as a restart does

    async def second_life(ids: list[str]) -> tuple[list[str], list[dict[str, Any]]]:
        app = create_app(settings)
        async with lifespan(app), _client(app) as client:
            ends = []
            for job_id in ids:
                while (body := (await client.get(f"/api/job/{job_id}")).json())["status"] in (
                    "queued",
                    "running",
                ):
                    await asyncio.sleep(0.05)
                ends.append(body["status"])
            xl = await client.post("/api/enqueue/generate", json={**job, "model": "demo-sdxl"})
            assert xl.status_code == 503 and "on no node" in xl.text, xl.text
            return ends, (await client.get("/api/model-list")).json()

    ids, states = harness.run(asyncio.wait_for(first_life(), 120))
    assert "queued" in states, states  # some were still waiting when it stopped
    ends, listed = harness.run(asyncio.wait_for(second_life(ids), 180))
    assert ends == ["completed"] * len(ids)
    where = {m["name"]: m["nodes"] for m in listed}
    assert where["demo-sd"] == ["n2"] and where["demo-sdxl"] == []


def _client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://pixelpool")
