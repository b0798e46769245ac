"""The Ray backend on a real three-node Ray cluster on this machine (loopback only).

One cluster and one scheduler for the whole file: nodes "head", "n1" (1 CPU) and "n2"
(2 CPUs); one CPU worker actor on each of n1 and n2 (the head has no CPUs: no worker), tiny demo
models, 64x64, 2 steps. Each node has its own models dir (n1 both demo models, n2 only
the SD 1.x one); the scheduler's models dir is a path no node has, so every job that
runs proves its paths were moved to its node's dir. A node "n3" joins midway. The
node-loss test removes a node; the restart test, last, stops the scheduler for good.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

from pixelpool.api.app import create_app, lifespan  # noqa: E402
from pixelpool.config import Settings  # noqa: E402
from pixelpool.engine.pool import build_scheduler  # noqa: E402
from pixelpool.engine.ray_backend import LOOPBACK, loopback_only  # noqa: E402
from pixelpool.engine.refusals import InputsTooLarge, NoDeviceServes  # noqa: E402
from pixelpool.engine.task import Task  # noqa: E402
from pixelpool.testing.client import wait_for_job  # noqa: E402
from pixelpool.testing.server import ServerProcess  # noqa: E402

from .engine_helpers import make_task  # noqa: E402
from .ray_harness import Harness, drain, node_models  # noqa: E402
from .ray_sockets import ray_pids, sockets  # noqa: E402

pytestmark = pytest.mark.ray

MB = 1 << 20
NODE = {"node_ip_address": LOOPBACK, "object_store_memory": 80 * MB, "include_dashboard": False}
FAST_FAILURE = {  # notice a lost node in about a second, not the default 30 s
    "health_check_period_ms": 300,
    "health_check_timeout_ms": 300,
    "health_check_failure_threshold": 3,
    "health_check_initial_delay_ms": 0,
}
MODELS = ["sd15/demo-sd", "sdxl/demo-sdxl"]


@pytest.fixture(scope="module")
def harness(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    os.environ["RAY_DISABLE_USAGE_STATS"] = "1"
    loopback_only()  # every node on 127.0.0.1, as a Ray runtime the server starts itself
    root = tmp_path_factory.mktemp("nodes").resolve()
    cluster = Cluster(
        initialize_head=True,
        head_node_args={**NODE, "num_cpus": 0, "node_name": "head", "_system_config": FAST_FAILURE},
    )
    loop = asyncio.new_event_loop()
    h = Harness(cluster, loop)
    h.full = node_models(root / "n1", models_dir, MODELS)
    cluster.add_node(**NODE, num_cpus=1, node_name="n1", **h.env(h.full))
    h.sd_only = node_models(root / "n2", models_dir, MODELS[:1])
    cluster.add_node(**NODE, num_cpus=2, node_name="n2", **h.env(h.sd_only))
    ray.init(address=cluster.address)
    h.data_dir = tmp_path_factory.mktemp("data")
    h.models = root / "server-models"
    settings = Settings(
        server={"data_dir": h.data_dir, "models_dir": h.models},
        cluster={
            "backend": "ray",
            "cpu_actors_per_node": 1,
            "discover_interval_s": 2,
            "node_gone_after_s": 2,
            "wait_for_node_s": 1,
            "max_inputs_mib": 1,
        },
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
        h.run(drain())
        loop.close()
        ray.shutdown()
        cluster.shutdown()


def _result(h: Harness, job_id: str) -> tuple[str, Any]:
    async def wait() -> tuple[str, Any]:
        return await asyncio.wait_for(h.recorder._future(job_id), 120)

    return h.run(wait())


def test_devices_are_named_by_node(harness: Harness) -> None:
    assert harness.engine is not None
    assert [s.device_id for s in harness.engine.slots] == ["n1/cpu0", "n2/cpu0"]
    nodes = {n["name"]: n for n in harness.engine.nodes()}
    assert nodes["n1"]["devices"] == ["n1/cpu0"] and nodes["n2"]["cpus"] == 2
    assert nodes["head"]["devices"] == []  # started with no CPUs: no worker that cannot fit
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
    """Every node advertises 127.0.0.1, every Ray process (and this driver) listens on
    it alone, and none has a connection to anything but loopback."""
    assert {n["NodeManagerAddress"] for n in ray.nodes()} == {LOOPBACK}
    listening, elsewhere = sockets(ray_pids() | {os.getpid()})
    assert listening, "found no Ray listener: the check would prove nothing"
    assert set(listening) == {LOOPBACK} and not elsewhere, (listening, elsewhere)


def test_an_empty_address_joins_the_cluster_ray_address_names(harness: Harness) -> None:
    """`cluster.address` empty and Ray's own RAY_ADDRESS set: that cluster, not a new one."""
    script = "import ray\nfrom pixelpool.engine.ray_backend import connect\nconnect('')\n"
    script += "print(sorted(n['NodeID'] for n in ray.nodes()))"
    env = {**os.environ, "RAY_ADDRESS": harness.cluster.address}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, timeout=120, check=True)  # fmt: skip
    assert out.stdout.strip().splitlines()[-1] == str(sorted(n["NodeID"] for n in ray.nodes()))


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


def test_each_node_is_asked_again_for_its_models_every_round(harness: Harness) -> None:
    """No rescan asked for: the discovery round (every 2 s here) sees n2 gain the SDXL
    model and lose it again."""
    engine = harness.engine
    assert engine is not None
    sdxl = str(harness.models / MODELS[1])
    link = harness.sd_only / MODELS[1]
    link.parent.mkdir(parents=True, exist_ok=True)

    async def until(nodes: list[str]) -> None:
        while engine.model_nodes(sdxl) != nodes:
            await asyncio.sleep(0.1)

    link.symlink_to(harness.full / MODELS[1], target_is_directory=True)
    harness.run(asyncio.wait_for(until(["n1", "n2"]), 60))
    link.unlink()
    harness.run(asyncio.wait_for(until(["n1"]), 60))


def test_inputs_over_the_cap_are_refused_naming_the_field(harness: Harness) -> None:
    assert harness.engine is not None
    big = harness.data_dir / "uploads" / "big.png"
    big.parent.mkdir(parents=True, exist_ok=True)
    big.write_bytes(os.urandom(MB + 1))  # cluster.max_inputs_mib = 1 here
    task = make_task(harness.models, "big", steps=2, images=[str(big)], strength=0.5)
    task.op = "img2img"
    with pytest.raises(InputsTooLarge, match=r"images: .* at most 1 MiB") as refused:
        harness.engine.check(task)
    assert refused.value.field == "images"


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


def test_a_job_waits_for_its_only_node_to_restart_and_runs_there(harness: Harness) -> None:
    """The last node with the SDXL model dies mid-job and starts again under its name
    (a new Ray node id): the job, waiting meanwhile (`wait_for_node_s`, 120 s for this
    test), runs on it."""
    engine = harness.engine
    assert engine is not None and engine.membership is not None
    [holder] = engine.model_nodes(str(harness.models / MODELS[1]))  # n1 or n3 is left
    slot = next(s for s in engine.slots if s.device_id == f"{holder}/cpu0")
    engine.membership.wait_for_node_s = 120
    engine.submit(_sdxl(harness.models, "patient", steps=100))

    async def restart_its_node() -> tuple[str, Any]:
        while not any(k == "progress" and v[0] == "patient" for k, v in harness.recorder.events):
            await asyncio.sleep(0.02)
        node_id = slot.handle.node.node_id  # type: ignore[attr-defined]
        harness.cluster.remove_node(
            next(n for n in harness.cluster.worker_nodes if n.node_id == node_id)
        )
        while not slot.gone:  # noticed: its worker cannot start, or discovery missed it
            await asyncio.sleep(0.05)
        assert not harness.recorder._future("patient").done()  # waiting, not failed
        harness.cluster.add_node(**NODE, num_cpus=1, node_name=holder, **harness.env(harness.full))
        return await asyncio.wait_for(harness.recorder._future("patient"), 120)

    try:
        kind, result = harness.run(restart_its_node())
    finally:
        engine.membership.wait_for_node_s = 1
    assert kind == "ok", result
    assert ("requeued", "patient") in harness.recorder.events
    assert harness.recorder.device["patient"] == f"{holder}/cpu0"
    # Gone longer than `node_gone_after_s` (2 s here), its slot left; the node's return
    # made a new one.
    assert [s.gone for s in engine.slots if s.device_id == f"{holder}/cpu0"] == [False]


def test_a_model_whose_last_node_leaves_fails_its_jobs_and_the_node_goes(
    harness: Harness,
) -> None:
    """The last node with the SDXL model dies while it runs an SDXL job: the job waits
    `wait_for_node_s` (1 s here) for the node to come back, then fails saying why; a new
    one is refused like a model on no node, and once `node_gone_after_s` (2 s here) has
    passed the node's device leaves."""
    engine = harness.engine
    assert engine is not None
    holders = engine.model_nodes(str(harness.models / MODELS[1]))
    assert len(holders) == 1, holders  # the lost-node test left one of n1 and n3
    engine.submit(_sdxl(harness.models, "orphan", steps=200))

    async def lose_it() -> tuple[str, Any]:
        while not any(k == "progress" and v[0] == "orphan" for k, v in harness.recorder.events):
            await asyncio.sleep(0.02)
        slot = next(s for s in engine.slots if s.device_id == f"{holders[0]}/cpu0")
        node_id = slot.handle.node.node_id  # type: ignore[attr-defined]
        harness.cluster.remove_node(
            next(n for n in harness.cluster.worker_nodes if n.node_id == node_id)
        )
        return await asyncio.wait_for(harness.recorder._future("orphan"), 60)

    kind, reason = harness.run(lose_it())
    assert kind == "error" and "'demo-sdxl' is on no node" in reason, reason
    assert "(waited 1 s for a node)" in reason, reason
    with pytest.raises(NoDeviceServes, match="'demo-sdxl' is on no node") as refused:
        engine.check(_sdxl(harness.models, "after", steps=2))
    assert refused.value.field == "model"

    async def only_n2_left() -> None:
        while [s.device_id for s in engine.slots] != ["n2/cpu0"]:
            await asyncio.sleep(0.1)

    harness.run(asyncio.wait_for(only_n2_left(), 60))
    listed = [(n["name"], n["devices"]) for n in engine.nodes()]
    assert listed == [("head", []), ("n2", ["n2/cpu0"])]  # the head: alive, no devices


def test_a_killed_server_restarted_on_the_running_cluster_loses_no_job(
    harness: Harness, models_dir: Path, tmp_path: Path
) -> None:
    """A real `pixelpool serve --cluster ray` against the running cluster is killed
    (SIGKILL) while a job runs, with others queued, and started again on the same data
    dir: every accepted job completes, with the images the local backend gives for the
    same requests (one torch thread on the actor, three locally).
    Its worker actors die with it (they are not detached): the cluster's CPUs are all
    free again before the second start."""
    assert harness.engine is not None
    harness.run(harness.engine.stop())  # its workers' CPUs go to the server's
    _leave_only_n2(harness)
    config = tmp_path / "pixelpool.toml"
    config.write_text(
        '[server]\ndefault_model = "demo-sd"\n'
        "[cluster]\ncpu_actors_per_node = 1\ndiscover_interval_s = 0\nmax_inputs_mib = 0.01\n"
    )  # n2, which has only the SD 1.x model, is the one node left: one actor per life
    data = tmp_path / "data"
    server = ServerProcess(
        models_dir, data, config=config, env={"RAY_DISABLE_USAGE_STATS": "1"},
        args=["--cluster", "ray", "--ray-address", harness.cluster.address],
    )  # fmt: skip
    jobs = [{**RESTART_JOB, "steps": 8, "seed": 1}] + [{**RESTART_JOB, "seed": s} for s in (2, 3)]
    server.start(timeout=180)
    try:
        ids = [_enqueue(server.url, job) for job in jobs]
        while (first := httpx.get(f"{server.url}/api/job/{ids[0]}").json())["status"] == "queued":
            time.sleep(0.02)  # until its batch is on the node (loading the model, or running)
        server.kill()
        assert first["status"] == "running", first
    finally:
        server.stop()
    _wait_all_cpus_free()

    server.start(timeout=180)
    try:
        ends = [wait_for_job(server.url, job_id, timeout=180) for job_id in ids]
        images = [_image(server.url, job_id) for job_id in ids]
        big = httpx.post(
            f"{server.url}/api/enqueue/img2img",
            files={"image": ("in.png", _noise_png(128), "image/png")},
            data={"params": json.dumps({**RESTART_JOB, "strength": 0.5})},
        )
        xl_job = {**RESTART_JOB, "model": "demo-sdxl"}
        xl = httpx.post(f"{server.url}/api/enqueue/generate", json=xl_job)
        listed = httpx.get(f"{server.url}/api/model-list").json()
    finally:
        server.stop()
    assert [e["status"] for e in ends] == ["completed"] * len(ids), ends
    assert big.status_code == 413 and "images" in big.text, big.text
    assert xl.status_code == 503 and "on no node" in xl.text, xl.text
    where = {m["name"]: m["nodes"] for m in listed}
    assert where["demo-sd"] == ["n2"] and where["demo-sdxl"] == []
    _wait_all_cpus_free()  # a server that stops gracefully ends its actors too

    local = harness.run(asyncio.wait_for(_local_images(models_dir, tmp_path / "local", jobs), 180))
    for remote, expected in zip(images, local, strict=True):
        np.testing.assert_array_equal(remote, expected)


RESTART_JOB = {"prompt": "a lighthouse", "width": 64, "height": 64, "steps": 2}


def _enqueue(url: str, job: dict[str, Any]) -> str:
    r = httpx.post(f"{url}/api/enqueue/generate", json=job)
    assert r.status_code == 200, r.text
    return str(r.json()["job_id"])


def _image(url: str, job_id: str) -> np.ndarray:
    body = httpx.get(f"{url}/api/job/{job_id}/result").content
    return np.asarray(Image.open(io.BytesIO(body)).convert("RGB"))


def _noise_png(side: int) -> bytes:
    out = io.BytesIO()
    pixels = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def _leave_only_n2(harness: Harness, timeout: float = 30) -> None:
    """The scenarios before the restart test leave n2 the only worker node; run alone
    (`-k restarted`), this removes the others, so the test holds either way."""
    alive = {n["NodeID"]: n["NodeName"] for n in ray.nodes() if n["Alive"]}
    for node in list(harness.cluster.worker_nodes):
        name = alive.get(node.node_id)  # None: removed already
        if name is not None and name != "n2":
            harness.cluster.remove_node(node)
    deadline = time.monotonic() + timeout
    while sorted(n["NodeName"] for n in ray.nodes() if n["Alive"]) != ["head", "n2"]:
        assert time.monotonic() < deadline, "a removed node is still alive"
        time.sleep(0.2)


def _wait_all_cpus_free(timeout: float = 60.0) -> None:
    """Every CPU of the cluster is free again: no worker actor is left holding one."""
    deadline = time.monotonic() + timeout
    while ray.available_resources().get("CPU", 0) < ray.cluster_resources().get("CPU", 0):
        assert time.monotonic() < deadline, "a worker actor outlived its server"
        time.sleep(0.2)


async def _local_images(
    models_dir: Path, data_dir: Path, jobs: list[dict[str, Any]]
) -> list[np.ndarray]:
    """The same requests on the local backend, with three threads where the actor has
    one (an odd count splits elementwise kernels unaligned; the same images all the
    same: see tests/pipelines/test_thread_invariance.py)."""
    settings = Settings(
        server={"data_dir": data_dir, "models_dir": models_dir, "default_model": "demo-sd"},
        devices={"cpu": {"threads": 3}},
    )
    app = create_app(settings)
    async with lifespan(app), _client(app) as client:
        ids = []
        for job in jobs:
            r = await client.post("/api/enqueue/generate", json=job)
            assert r.status_code == 200, r.text
            ids.append(r.json()["job_id"])
        images = []
        for job_id in ids:
            while (await client.get(f"/api/job/{job_id}")).json()["status"] in (
                "queued",
                "running",
            ):
                await asyncio.sleep(0.05)
            body = (await client.get(f"/api/job/{job_id}/result")).content
            images.append(np.asarray(Image.open(io.BytesIO(body)).convert("RGB")))
        return images


def _client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://pixelpool")
