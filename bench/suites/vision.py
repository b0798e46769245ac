"""vision: the native vision routes (`/api/embed`, `/api/depth`) against the same
`transformers` model called directly, on their own two servers (batching on / off).

- one client: median seconds per single-image request, server vs direct call
  (ratio = server / direct; the server adds HTTP, base64, the queue and the encoding),
  the two alternating request by request;
- 8 clients: images/s of single-image requests, batching on vs off (ratio = on / off),
  with the mean batch size the scheduler formed (median of 2 bursts per server, in
  alternating order); direct sequential images/s for scale. Both servers load both
  models before anything is measured.

Each server answer is also compared with the direct call (max abs difference).
"""

from __future__ import annotations

import base64
import io
import queue
import threading
import time
from typing import Any

import numpy as np
from PIL import Image

from bench.common import Row, fmt_ms, fmt_num, log, median, ratio, summary
from bench.context import Context
from bench.servers import Servers, device_env, job_view, scheduler_env, wait_idle
from bench.suites.vision_models import Direct, write_models

ON, OFF = "vision-batched", "vision-unbatched"
TASKS = {"embed": "bench-embed", "depth": "bench-depth"}
CLIENTS = 8
SIZE = (320, 240)
REPS = 10


def _image() -> tuple[Image.Image, str]:
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (SIZE[1] // 8, SIZE[0] // 8, 3), np.uint8)
    img = Image.fromarray(small).resize(SIZE, Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return img, base64.b64encode(buf.getvalue()).decode()


def _array(encoded: dict[str, Any]) -> np.ndarray:
    return np.load(io.BytesIO(base64.b64decode(encoded["npy"])), allow_pickle=False)


def _request(client: Any, task: str, image: str) -> dict[str, Any]:
    body = {"model": TASKS[task], "images": [image], "array_format": "npy"}
    resp = client.post(f"/api/{task}", json=body)
    resp.raise_for_status()
    return resp.json()


def _result_array(task: str, body: dict[str, Any]) -> np.ndarray:
    (result,) = body["results"]
    return _array(result["embedding" if task == "embed" else "depth"])


def _one_client(ctx: Context, task: str, direct: Direct) -> dict[str, Any]:
    """Direct call and server request alternate, so both see the same machine load."""
    img, encoded = _image()
    direct_s, server_s = [], []
    with ctx.client(ON) as client:
        for _ in range(2):
            direct([img])
            _request(client, task, encoded)
        for _ in range(REPS):
            start = time.perf_counter()
            expected = direct([img])[0]
            direct_s.append(time.perf_counter() - start)
            start = time.perf_counter()
            body = _request(client, task, encoded)
            server_s.append(time.perf_counter() - start)
        wait_idle(client)
    diff = float(np.abs(_result_array(task, body) - expected).max())
    return {"direct_s": summary(direct_s), "server_s": summary(server_s),
            "ratio": ratio(median(server_s), median(direct_s)), "max_diff": diff}  # fmt: skip


def _clients(ctx: Context, server: str, task: str, total: int) -> dict[str, Any]:
    """`total` single-image requests from CLIENTS closed-loop threads; images/s."""
    _, encoded = _image()
    todo: queue.Queue[int] = queue.Queue()
    for i in range(total):
        todo.put(i)
    job_ids: list[str] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(CLIENTS + 1)

    def loop() -> None:
        with ctx.client(server) as client:
            barrier.wait()
            while True:
                try:
                    todo.get_nowait()
                except queue.Empty:
                    return
                try:
                    job_ids.append(_request(client, task, encoded)["job_id"])
                except Exception as exc:
                    errors.append(exc)
                    return

    threads = [threading.Thread(target=loop) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise errors[0]
    with ctx.client(server) as client:
        sizes = [job_view(client, j)["batch_size"] or 1 for j in job_ids]
        wait_idle(client)
    return {"images_per_s": total / elapsed, "mean_batch": float(np.mean(sizes))}


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {"images_per_s": median([r["images_per_s"] for r in runs]),
            "mean_batch": median([r["mean_batch"] for r in runs]), "n": len(runs)}  # fmt: skip


def run(ctx: Context) -> dict[str, Any]:
    plan = ctx.plan
    kind = "cpu" if plan.device == "cpu" else "gpu"
    tmp = ctx.servers.data_root.parent
    started = time.perf_counter()
    paths = write_models(tmp / "vision-models", kind)
    log(f"vision models written in {time.perf_counter() - started:.1f}s")
    servers = Servers(tmp / "vision-models", tmp / "vision-data", plan)
    servers.define(ON, device_env(plan) | scheduler_env(True, CLIENTS, plan.batch_window_ms))
    servers.define(OFF, device_env(plan) | scheduler_env(False, 1, 0))
    total = 24 if kind == "cpu" else 128
    out: dict[str, Any] = {"tasks": {}, "clients": CLIENTS, "requests": total}
    try:
        servers.start(ON, OFF)
        own = Context(plan, servers, ctx.monitor, ctx.model_paths)
        for server in (ON, OFF):  # load every model in both workers before measuring
            with own.client(server) as client:
                for task in TASKS:
                    for _ in range(2):
                        _request(client, task, _image()[1])
                wait_idle(client)
        for task, name in TASKS.items():
            direct = Direct(paths[name], task, "cuda" if kind == "gpu" else "cpu")
            single = _one_client(own, task, direct)
            runs: dict[str, list[dict[str, Any]]] = {ON: [], OFF: []}
            for order in ((ON, OFF), (OFF, ON)):  # alternate, so drift hits both
                for server in order:
                    runs[server].append(_clients(own, server, task, total))
            load = {s: _median_run(r) for s, r in runs.items()}
            out["tasks"][task] = {
                "single": single,
                "on": load[ON],
                "off": load[OFF],
                "direct_images_per_s": 1 / single["direct_s"]["median"],
                "ratio": ratio(load[ON]["images_per_s"], load[OFF]["images_per_s"]),
            }
            del direct
            ctx.settle()
    finally:
        servers.stop_all()
    out["medians"] = {f"{t}: {k}": v for t, r in out["tasks"].items()
                      for k, v in (("server/direct 1 client", r["single"]["ratio"]),
                                   ("batching on/off 8 clients", r["ratio"]))}  # fmt: skip
    return out


def rows(result: dict[str, Any]) -> list[Row]:
    out: list[Row] = []
    for task, r in result["tasks"].items():
        s = r["single"]
        out.append(("vision", f"{task}: 1 client, server vs direct",
                    f"{fmt_ms(s['server_s']['median'])} vs {fmt_ms(s['direct_s']['median'])}",
                    f"x{s['ratio']:.2f}; max diff {s['max_diff']:.1e}"))  # fmt: skip
        out.append(("vision", f"{task}: {result['clients']} clients, batching on vs off",
                    f"{fmt_num(r['on']['images_per_s'], 3)} vs "
                    f"{fmt_num(r['off']['images_per_s'], 3)} img/s",
                    f"x{r['ratio']:.2f}; mean batch {r['on']['mean_batch']:.1f} vs "
                    f"{r['off']['mean_batch']:.1f}; direct sequential "
                    f"{fmt_num(r['direct_images_per_s'], 3)} img/s"))  # fmt: skip
    return out
