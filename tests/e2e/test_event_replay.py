"""Durability across restarts (clean, or kill -9): a client resuming with Last-Event-ID
gets every later event of the job, in order, each once; a finished job's result reads
the same afterwards; jobs still queued at a crash run after it with their own seeds."""

import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from websockets.sync.client import connect

from pixelpool.testing.client import wait_for_job
from pixelpool.testing.server import ServerProcess

JOB = {"prompt": "a harbour", "width": 64, "height": 64, "steps": 6, "seed": 3}
SLOW = {**JOB, "width": 256, "height": 256, "steps": 24}
TERMINAL = ("completed", "failed", "cancelled")
EVERY_STEP = {"PIXELPOOL_SCHEDULER__PROGRESS_INTERVAL_MS": "0"}  # these tests count steps

SseEvent = tuple[int, str, dict[str, Any]]


def enqueue(url: str, body: dict[str, Any]) -> str:
    resp = httpx.post(f"{url}/api/enqueue/generate", json=body)
    assert resp.status_code == 200, resp.text
    return resp.json()["job_id"]


def sse(
    url: str,
    job_id: str,
    last: int | None = None,
    until: Callable[[list[SseEvent]], bool] = lambda _: False,
) -> list[SseEvent]:
    """The job's events as (id, type, data), until the stream ends or `until` holds."""
    headers = {} if last is None else {"Last-Event-ID": str(last)}
    events: list[SseEvent] = []
    with httpx.stream("GET", f"{url}/api/job/{job_id}/events", headers=headers, timeout=120) as r:
        assert r.status_code == 200
        block: dict[str, str] = {}
        for line in r.iter_lines():
            if line.startswith(":"):
                continue
            if line:
                key, _, value = line.partition(": ")
                block[key] = value
                continue
            if block:
                events.append((int(block["id"]), block["event"], json.loads(block["data"])))
                if until(events):
                    break
            block = {}
    return events


def reached(step: int) -> Callable[[list[SseEvent]], bool]:
    return lambda events: events[-1][1] == "progress" and events[-1][2]["step"] >= step


def written(data_dir: Path) -> set[int]:
    """The ids of the events the server has written to its store so far."""
    with sqlite3.connect(data_dir / "jobs.db") as conn:
        return {row[0] for row in conn.execute("SELECT id FROM events")}


def wait_written(data_dir: Path, event_id: int, timeout: float = 60.0) -> None:
    """Until the server has written `event_id` (and so every earlier event) to its store."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if event_id in written(data_dir):
            return
        time.sleep(0.05)
    raise TimeoutError(f"event {event_id} was not written in {timeout}s")


def check_resumed(resumed: list[SseEvent], after: int, step: int) -> None:
    """After the client's last event (progress `step`): the rest of the first run, then,
    if the job was still running at the restart, the whole re-run; ids only grow."""
    ids = [i for i, _, _ in resumed]
    assert ids == sorted(set(ids)) and ids[0] > after
    kinds = [kind for _, kind, _ in resumed]
    assert kinds[-1] == "completed" and sum(k in TERMINAL for k in kinds) == 1
    rerun = [n for n, (_, kind, d) in enumerate(resumed) if d.get("reason") == "restart"]
    first = resumed[: rerun[0]] if rerun else resumed
    steps = [d["step"] for _, kind, d in first if kind == "progress"]
    assert steps == list(range(step + 1, step + 1 + len(steps)))  # none missed
    if rerun:
        again = resumed[rerun[0] :]
        assert [kind for _, kind, _ in again[:2]] == ["queued", "started"]
        assert [d["step"] for _, kind, d in again[2:-1]] == list(range(1, SLOW["steps"] + 1))


def test_events_replay_after_a_clean_restart(models_dir: Path, tmp_path: Path) -> None:
    # Events are written only at shutdown here: a stop must write every one of them.
    lazy = {"PIXELPOOL_STORAGE__EVENTS_FLUSH_S": "3600", **EVERY_STEP}
    with ServerProcess(models_dir, tmp_path, env=lazy) as first:
        done = enqueue(first.url, JOB)
        before = sse(first.url, done)
        png = httpx.get(f"{first.url}/api/job/{done}/result").content
        slow = enqueue(first.url, SLOW)
        seen = sse(first.url, slow, until=reached(2))
        assert written(tmp_path) == set()
    assert [kind for _, kind, _ in before][-1] == "completed"
    middle = next(i for i, kind, d in before if kind == "progress" and d["step"] == 3)

    with ServerProcess(models_dir, tmp_path, env=EVERY_STEP) as second:
        # A finished job reads the same: its record, and its result byte for byte.
        body = httpx.get(f"{second.url}/api/job/{done}").json()
        assert body["status"] == "completed" and body["seeds"] == [JOB["seed"]]
        result = httpx.get(f"{second.url}/api/job/{done}/result")
        assert result.status_code == 200 and result.content == png
        # Its events: exactly those after the id, as they were sent live.
        assert sse(second.url, done, last=middle) == [e for e in before if e[0] > middle]
        with connect(second.url.replace("http://", "ws://") + "/api/ws") as ws:
            ws.send(json.dumps({"type": "subscribe", "job_ids": [done], "last_event_id": middle}))
            got: list[dict[str, Any]] = []
            while not got or got[-1]["type"] != "complete":
                message = json.loads(ws.recv(timeout=60))
                if message.get("job_id") == done:
                    got.append(message)
        assert got[:-1] == [d for i, _, d in before if i > middle]
        # A job that was running at the stop: the rest of its first run, then its re-run.
        resumed = sse(second.url, slow, last=seen[-1][0])
    check_resumed(resumed, seen[-1][0], seen[-1][2]["step"])


def test_events_replay_after_a_crash(models_dir: Path, tmp_path: Path) -> None:
    first = ServerProcess(models_dir, tmp_path, env=EVERY_STEP).start()
    try:
        slow = enqueue(first.url, SLOW)
        seen = sse(first.url, slow, until=reached(3))
        queued = [enqueue(first.url, {**JOB, "seed": s}) for s in range(1, 4)]  # behind it
        wait_written(tmp_path, seen[-1][0])
        first.kill()  # SIGKILL: what was not yet written is lost, the job runs again
    finally:
        first.stop()

    with ServerProcess(models_dir, tmp_path, env=EVERY_STEP) as again:
        resumed = sse(again.url, slow, last=seen[-1][0])
        everything = sse(again.url, slow)
        ended = [wait_for_job(again.url, job_id) for job_id in queued]
    check_resumed(resumed, seen[-1][0], seen[-1][2]["step"])
    assert everything == seen + resumed
    assert [(r["status"], r["seeds"]) for r in ended] == [("completed", [s]) for s in range(1, 4)]
