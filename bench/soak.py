"""A mixed soak: every dialect at once against one server, then what went wrong.

    python bench/soak.py [--seconds 120] [--clients 6] [--seed 0]

Starts one server on the tiny demo models plus an upscaler, a background remover and
a tagger (temp dir), and lets `--clients` threads send random requests for
`--seconds`: native sync and queued generation (half of the queued ones cancelled a
moment later), img2img, the OpenAI generations and edits, A1111 txt2img, the desktop
client's /generate, upscale, bgremove, tag, A1111 interrupt, unload-all and model
rescans while jobs run. Then every queued job is followed to its end. It prints the
status codes per operation, the queued jobs' ends, any 5xx or transport error, the
event loop's lag (from /metrics) and the server log's warnings and errors. A healthy
server shows no 5xx, no job left unfinished, and no error lines.
"""

from __future__ import annotations

import argparse
import collections
import io
import json
import random
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pixelpool.testing import write_demo_models
from pixelpool.testing.server import ServerProcess
from pixelpool.testing.tiny_families import write_family_models

ENDED = ("completed", "failed", "cancelled")
MODELS = ("demo-sd", "demo-sdxl")


def png(side: int, seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


class Soak:
    def __init__(self) -> None:
        self.codes: collections.Counter[tuple[str, int]] = collections.Counter()
        self.errors: list[str] = []
        self.queued: list[str] = []
        self.lock = threading.Lock()

    def note(self, name: str, response: httpx.Response) -> httpx.Response:
        with self.lock:
            self.codes[(name, response.status_code)] += 1
            if response.status_code >= 500:
                self.errors.append(f"{name} {response.status_code}: {response.text[:200]}")
        return response

    def one(self, c: httpx.Client, rng: random.Random) -> None:
        """One random request (and, for a queued job, maybe its cancel)."""
        model, steps, seed = rng.choice(MODELS), rng.randint(1, 4), rng.randint(1, 999)
        gen = {"prompt": "a fox", "model": model, "width": 64, "height": 64, "steps": steps}
        image = {"image": ("i.png", png(64, seed), "image/png")}
        raw = {"content": png(32, seed), "headers": {"Content-Type": "image/png"}}
        match rng.randrange(13):
            case 0:
                self.note("native generate", c.post("/api/generate", json={**gen, "seed": seed}))
            case 1:
                r = self.note("native enqueue", c.post("/api/enqueue/generate", json=gen))
                if r.status_code == 200:
                    self.queued.append(job := r.json()["job_id"])
                    if rng.random() < 0.5:
                        time.sleep(rng.random() * 0.5)
                        self.note("native cancel", c.post(f"/api/job/{job}/cancel"))
            case 2:
                params = json.dumps({**gen, "strength": 0.75, "steps": steps + 1})
                r = c.post("/api/enqueue/img2img", files=image, data={"params": params})
                if self.note("native img2img", r).status_code == 200:
                    self.queued.append(r.json()["job_id"])
            case 3:
                body = {"prompt": "a fox", "model": model, "size": "64x64", "n": rng.randint(1, 2)}
                self.note("openai generations", c.post("/v1/images/generations", json=body))
            case 4:
                data = {"prompt": "a fox", "model": model, "size": "64x64"}
                self.note("openai edits", c.post("/v1/images/edits", files=image, data=data))
            case 5:
                body = {"prompt": "a fox", "steps": steps, "width": 64, "height": 64,
                        "override_settings": {"sd_model_checkpoint": model}}  # fmt: skip
                self.note("a1111 txt2img", c.post("/sdapi/v1/txt2img", json=body))
            case 6:
                self.note("desktop /generate", c.post("/generate", json=gen))
            case 7:
                self.note("upscale", c.post("/api/upscale", **raw))
            case 8:
                self.note("bgremove", c.post("/api/bgremove", **raw))
            case 9:
                self.note("tag", c.post("/api/tag", **raw))
            case 10:
                self.note("a1111 interrupt", c.post("/sdapi/v1/interrupt"))
            case 11:
                self.note("unload-all", c.post("/models/unload-all"))
            case _:
                self.note("rescan", c.post("/api/rescan-models"))

    def client(self, url: str, seed: int, until: float) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=url, timeout=300) as c:
            while time.monotonic() < until:
                try:
                    self.one(c, rng)
                except httpx.HTTPError as exc:
                    with self.lock:
                        self.errors.append(f"transport: {exc!r}")

    def ends(self, url: str, timeout_s: float = 300) -> collections.Counter[str]:
        """Follow every queued job to its end; one still running at the deadline counts
        under its status."""
        deadline, ends = time.monotonic() + timeout_s, collections.Counter[str]()
        with httpx.Client(base_url=url, timeout=30) as c:
            for job in self.queued:
                while (status := c.get(f"/api/job/{job}").json()["status"]) not in ENDED:
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.2)
                ends[status] += 1
        return ends


def lag_quantiles(metrics: str) -> dict[str, Any]:
    """The event loop's lag histogram: samples, and the bucket bounds of p50/p99/max."""
    buckets = [
        (float(sample.labels["le"]), sample.value)
        for family in text_string_to_metric_families(metrics)
        if family.name == "pixelpool_event_loop_lag_seconds"
        for sample in family.samples
        if sample.name.endswith("_bucket")
    ]
    total = buckets[-1][1] if buckets else 0.0
    if not total:
        return {"samples": 0}

    def bound(q: float) -> float:
        return next(b for b, n in buckets if n >= q * total)

    return {"samples": int(total), "p50 <=": bound(0.5), "p99 <=": bound(0.99),
            "max <=": bound(1.0)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="pixelpool-soak-"))
    write_demo_models(root / "models")
    write_family_models(root / "models")
    soak = Soak()
    with ServerProcess(root / "models", root / "data") as server:
        until = time.monotonic() + args.seconds
        threads = [
            threading.Thread(target=soak.client, args=(server.url, args.seed + i, until))
            for i in range(args.clients)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        ends = soak.ends(server.url)
        lag = lag_quantiles(httpx.get(f"{server.url}/metrics").text)
    log = (root / "data" / "server.log").read_text(errors="replace").splitlines()
    noisy = [
        line for line in log if " WARNING " in line or " ERROR " in line or "Traceback" in line
    ]
    print(f"{'operation':<20} {'status':>6} {'count':>6}")
    for (name, code), count in sorted(soak.codes.items()):
        print(f"{name:<20} {code:>6} {count:>6}")
    print(f"queued jobs' ends: {dict(ends)} of {len(soak.queued)}")
    print(f"event loop lag (s): {lag}")
    print(f"5xx and transport errors: {len(soak.errors)}")
    print("\n".join(soak.errors[:10]))
    print(f"log warnings and errors: {len(noisy)} (server log: {root / 'data' / 'server.log'})")
    print("\n".join(noisy[:20]))


if __name__ == "__main__":
    main()
