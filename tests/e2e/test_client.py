"""`pixelpool.client` (sync and async) and the `pixelpool generate/upscale/tag`
commands against one real server (auth on, every progress step sent)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import Result
from PIL import Image
from typer.testing import CliRunner

from pixelpool.cli import app
from pixelpool.client import (
    AsyncClient,
    BadRequest,
    Client,
    Conflict,
    JobCancelled,
    NotFound,
    Progress,
    Unauthorized,
)
from pixelpool.testing.server import ServerProcess
from pixelpool.testing.tiny_upscale import smooth_picture

from .auth_helpers import CLIENT_KEY

KEY = CLIENT_KEY
JOB = {"prompt": "a red fox", "width": 64, "height": 64, "steps": 2, "seed": 11,
       "model": "demo-sd"}  # fmt: skip


@pytest.fixture(scope="module")
def server(keyed_server: ServerProcess) -> ServerProcess:
    return keyed_server


@pytest.fixture(scope="module")
def raw(server: ServerProcess) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def expected(raw: httpx.Client) -> bytes:
    """`/api/generate`'s PNG for JOB, as any client gets it."""
    resp = raw.post("/api/generate", json=JOB)
    assert resp.status_code == 200, resp.text
    return resp.content


@pytest.fixture(scope="module")
def picture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("in") / "in.png"
    Image.fromarray(smooth_picture(24, 20)).save(path)
    return path


@pytest.fixture()
def client(server: ServerProcess) -> Iterator[Client]:
    with Client(server.url, key=KEY) as c:
        yield c


def test_sync_generate_enqueue_wait_events(client: Client, expected: bytes) -> None:
    image = client.generate(**JOB)
    assert image.data == expected and image.seed == 11 and image.media_type == "image/png"
    seen: list[Progress] = []
    job_id = client.enqueue("generate", **JOB)
    job = client.wait(job_id, on_progress=seen.append)
    assert job.status == "completed" and job.id == job_id and job.seeds == [11]
    assert [(p.step, p.total) for p in seen] == [(1, 2), (2, 2)]
    assert client.result(job_id).data == expected
    events = list(client.events(job_id))  # replayed: the job has finished
    assert events[-1].type == "completed" and events[-1].terminal
    assert [e.step for e in events if e.type == "progress"] == [1, 2]
    after = list(client.events(job_id, last_event_id=events[-2].id))  # Last-Event-ID
    assert [e.id for e in after] == [events[-1].id]


def test_async_client_runs_a_job_with_an_async_callback(
    server: ServerProcess, expected: bytes
) -> None:
    async def main() -> None:
        async with AsyncClient(server.url, key=KEY) as c:
            assert (await c.generate(**JOB)).data == expected
            steps: list[int] = []

            async def on_progress(p: Progress) -> None:
                await asyncio.sleep(0)
                steps.append(p.step)

            job_id = await c.enqueue("generate", idempotency_key="async-1", **JOB)
            assert await c.enqueue("generate", idempotency_key="async-1", **JOB) == job_id
            assert (await c.wait(job_id, on_progress=on_progress)).status == "completed"
            assert steps == [1, 2]
            assert [e.type async for e in c.events(job_id)][-1] == "completed"
            assert (await c.result(job_id)).data == expected
            assert "demo-sd" in [m.name for m in await c.models()]

    asyncio.run(main())


def test_cancel_from_the_progress_callback(client: Client) -> None:
    job_id = client.enqueue("generate", **{**JOB, "steps": 150})

    def cancel_early(p: Progress) -> None:
        if p.step == 1:
            assert client.cancel(job_id) in ("cancelling", "cancelled")

    with pytest.raises(JobCancelled) as caught:
        client.wait(job_id, on_progress=cancel_early)
    assert caught.value.job.status == "cancelled" and caught.value.job.step < 150
    with pytest.raises(Conflict):
        client.result(job_id)


def test_typed_errors_carry_the_servers_field(server: ServerProcess, client: Client) -> None:
    with pytest.raises(BadRequest) as bad:
        client.generate(**{**JOB, "width": 65})
    assert bad.value.status == 422 and bad.value.field == "width" and "width" in bad.value.message
    with pytest.raises(NotFound) as missing:
        client.generate(**{**JOB, "model": "no-such-model"})
    assert missing.value.field == "model"
    with pytest.raises(NotFound):
        client.job("0123456789abcdef")
    with Client(server.url, key="wrong-key") as wrong, pytest.raises(Unauthorized) as denied:
        wrong.models()
    assert denied.value.status == 401 and "wrong-key" not in str(denied.value)


def pixelpool(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The command as a user runs it: a new process."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PIXELPOOL_")}
    return subprocess.run(
        [sys.executable, "-m", "pixelpool.cli", *args],
        capture_output=True, text=True, timeout=120, env={**clean, **(env or {})},
    )  # fmt: skip


def invoke(*args: str) -> Result:
    """The command in this process (cheaper than a new one; the same code and exit codes)."""
    return CliRunner().invoke(app, list(args), env={"PIXELPOOL_SERVER": None,
                                                    "PIXELPOOL_KEY": None})  # fmt: skip


def test_cli_generate_writes_the_same_png(server: ServerProcess, expected: bytes,
                                          tmp_path: Path) -> None:  # fmt: skip
    out = tmp_path / "out.png"
    args = ["generate", JOB["prompt"], "-o", str(out), "--model", "demo-sd", "--width", "64",
            "--height", "64", "--steps", "2", "--seed", "11"]  # fmt: skip
    result = pixelpool(*args, env={"PIXELPOOL_SERVER": server.url, "PIXELPOOL_KEY": KEY})
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == expected
    assert "seed 11" in result.stdout and KEY not in result.stdout + result.stderr
    dead = pixelpool(*args, "--server", "http://127.0.0.1:9", "--key", KEY)
    assert dead.returncode == 5 and "127.0.0.1:9" in dead.stderr


def test_cli_exit_codes(server: ServerProcess, tmp_path: Path) -> None:
    args = ["generate", "a fox", "-o", str(tmp_path / "x.png"), "--steps", "2", "--height", "64",
            "--server", server.url]  # fmt: skip
    refused = invoke(*args, "--width", "65", "--key", KEY)
    assert refused.exit_code == 3 and "width" in refused.stderr
    denied = invoke(*args, "--width", "64", "--key", "wrong-key")
    assert denied.exit_code == 4 and "wrong-key" not in denied.output + denied.stderr
    assert invoke("generate", "no output").exit_code == 2
    missing = invoke("tag", str(tmp_path / "absent.png"), "--server", server.url, "--key", KEY)
    assert missing.exit_code == 2 and "absent.png" in missing.stderr
    assert not (tmp_path / "x.png").exists()


def test_cli_upscale_and_tag(server: ServerProcess, raw: httpx.Client, picture: Path,
                             tmp_path: Path) -> None:  # fmt: skip
    auth = ("--server", server.url, "--key", KEY)
    out = tmp_path / "big.png"
    result = pixelpool("upscale", str(picture), "-o", str(out), "--scale", "2", *auth)
    assert result.returncode == 0, result.stderr
    direct = raw.post("/api/upscale", params={"scale": 2}, content=picture.read_bytes())
    assert direct.status_code == 200, direct.text
    assert out.read_bytes() == direct.content
    tags = invoke("tag", str(picture), *auth)
    assert tags.exit_code == 0, tags.stderr
    assert json.loads(tags.stdout) == raw.post("/api/tag", content=picture.read_bytes()).json()
