"""Hostile requests against the real app in this process (a real worker behind it):
every one is a 4xx naming its field in the dialect's envelope, the app stays healthy,
and nothing is written outside the data folder."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from pixelpool.api.app import create_app
from pixelpool.config import Settings

from .hostile_cases import GOOD, cases, check


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.fixture(scope="module")
def app_dirs(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple]:
    root = tmp_path_factory.mktemp("hostile")
    data = root / "data"
    settings = Settings.model_validate(
        {"server": {"models_dir": str(models_dir), "data_dir": str(data)}}
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client, root, models_dir


@pytest.fixture(scope="module")
def client(app_dirs: tuple) -> TestClient:
    return app_dirs[0]


def test_every_hostile_request_is_a_named_4xx(app_dirs: tuple) -> None:
    client, root, models = app_dirs
    before_models, before_root = _files(models), _files(root)
    problems = []
    for case in cases():
        resp = client.request(case.method, case.path, **case.kwargs)
        problem = check(case, resp)
        if problem:
            problems.append(problem)
    assert not problems, "\n".join(problems)
    assert client.get("/health").status_code == 200
    assert _files(models) == before_models
    outside = {f for f in _files(root) - before_root if not f.startswith("data")}
    assert not outside
    assert not Path("/etc/passwd").exists() or os.access("/etc/passwd", os.R_OK)


def test_refused_requests_make_no_jobs(client: TestClient) -> None:
    resp = client.post("/api/enqueue/generate", json={**GOOD, "steps": True})
    assert resp.status_code == 422
    status = client.get("/api/status").json()
    assert status["active_jobs"] == 0 and status["queue_depth"] == 0


def test_error_texts_are_clean(client: TestClient) -> None:
    resp = client.post("/api/enqueue/encode-latents?model=demo-sd", content=b"not an image")
    assert resp.status_code == 422
    assert resp.json()["error"] == "image: is not an image in a known format (PNG, JPEG, WebP)"
    resp = client.post("/api/enqueue/generate", json={**GOOD, "model": "x\x00y"})
    assert resp.json()["detail"][0] == {
        "field": "model", "message": "must not contain control characters or NUL"
    }  # fmt: skip


def test_limits_are_configurable(models_dir: Path, tmp_path: Path) -> None:
    settings = Settings.model_validate({
        "server": {"models_dir": str(models_dir), "data_dir": str(tmp_path)},
        "limits": {"max_prompt_chars": 5, "max_negative_prompt_chars": 3},
    })  # fmt: skip
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        long_neg = client.post("/generate", json={"prompt": "fox", "negative_prompt": "abcd"})
        assert long_neg.status_code == 422
        assert long_neg.json()["detail"] == "negative_prompt: is longer than 3 characters"
        long_prompt = client.post("/v1/images/generations", json={"prompt": "a red fox"})
        assert long_prompt.status_code == 400
        assert long_prompt.json()["error"]["param"] == "prompt"
