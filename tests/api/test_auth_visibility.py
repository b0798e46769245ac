"""What a caller may see: policy unit tests on a fake scheduler (the e2e tests in
tests/e2e/test_auth_surface.py check the same on a real server)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pixelpool.api import visibility
from pixelpool.api.auth import ALL_SCOPES, ANONYMOUS, Principal
from pixelpool.api.events import Subscription, _problem
from pixelpool.api.guard import admin_only
from pixelpool.api.state import AppState, current_owner

MODELS = Path("/srv/models")
ALICE = Principal("alice", frozenset({"generate"}))
OPS = Principal("ops", ALL_SCOPES)


def fake_state() -> Any:
    batch = [SimpleNamespace(job_id="a1", owner="alice"), SimpleNamespace(job_id="b1", owner="bob")]
    device = {
        "id": "cpu", "pid": 4242, "ready": True, "busy": True, "active_jobs": ["a1", "b1"],
        "cache": {"used_bytes": 1, "models": [{"key": str(MODELS / "sd15/demo-sd"),
                                               "tier": "device", "pinned": False}]},
    }  # fmt: skip
    scheduler = SimpleNamespace(
        slots=[SimpleNamespace(tasks=lambda: batch)], snapshot=lambda: [dict(device)]
    )
    return SimpleNamespace(scheduler=scheduler, registry=SimpleNamespace(models_dir=MODELS))


def test_a_key_sees_its_own_jobs_relative_paths_and_no_pid() -> None:
    (device,) = visibility.devices(fake_state(), ALICE)
    assert device["active_jobs"] == ["a1"] and "pid" not in device
    assert device["cache"]["models"][0]["key"] == "sd15/demo-sd"
    assert device["busy"] and device["cache"]["used_bytes"] == 1


@pytest.mark.parametrize("caller", [OPS, ANONYMOUS])
def test_admins_and_a_keyless_server_see_everything(caller: Principal) -> None:
    (device,) = visibility.devices(fake_state(), caller)
    assert device["active_jobs"] == ["a1", "b1"] and device["pid"] == 4242
    assert device["cache"]["models"][0]["key"] == str(MODELS / "sd15/demo-sd")


def test_paths_outside_the_models_dir_show_only_their_name() -> None:
    assert visibility.shown_path(fake_state(), "/elsewhere/x.safetensors", ALICE) == "x.safetensors"


def test_websocket_subscriptions_filter_by_owner() -> None:
    sub = Subscription(ALICE)
    assert sub.accepts({"job_id": "a1", "owner": "alice"})
    assert not sub.accepts({"job_id": "b1", "owner": "bob"})
    assert not sub.accepts({"job_id": "c1", "owner": None})


@pytest.mark.parametrize(
    ("message", "problem"),
    [
        ([1], "JSON objects"), ("x", "JSON objects"),
        ({"type": "subscribe", "job_ids": 5}, "job_ids"),
        ({"type": "subscribe", "job_ids": [None]}, "job_ids"),
        ({"type": "subscribe", "job_ids": [], "last_event_id": True}, "last_event_id"),
        ({"type": "subscribe", "job_ids": ["a", 3], "last_event_id": 7}, None),
        ({"type": "ping"}, None),
    ],
)  # fmt: skip
def test_websocket_messages_are_checked(message: Any, problem: str | None) -> None:
    found = _problem(message)
    assert found == problem if problem is None else problem in (found or "")


def test_admin_routes_are_matched_on_the_path() -> None:
    for path in ("/api/keys", "/api/keys/web", "/api/models/load", "/api/rescan-models",
                 "/api/rescan-loras"):  # fmt: skip
        assert admin_only(path), path
    for path in ("/api/model-list", "/api/keys/a/b", "/models", "/api/modelsx/load"):
        assert not admin_only(path), path


def test_the_default_model_is_the_callers_own() -> None:
    settings = SimpleNamespace(server=SimpleNamespace(default_model="server-choice"))
    state = AppState.__new__(AppState)
    state.settings, state.preferences = settings, {"alice": "alice-choice"}  # type: ignore[assignment]
    for owner, expected in (("alice", "alice-choice"), ("bob", "server-choice"),
                            (None, "server-choice")):  # fmt: skip
        reset = current_owner.set(owner)
        try:
            assert state.default_model() == expected
        finally:
            current_owner.reset(reset)
