"""What a caller may see of the server: admins everything; other keys their own jobs,
model paths relative to the models dir, and no process ids.

Job ids of other keys would confirm that those jobs exist (and let a caller
probe them); absolute paths and pids describe the host, not the service.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pixelpool.api.auth import Principal
from pixelpool.api.state import AppState

# What a device's snapshot says about the machine under it (`WorkerHandle.describe`).
HOST_KEYS = frozenset({"pid", "node_address", "actor_id"})


def sees_all(caller: Principal) -> bool:
    return "admin" in caller.scopes


def shown_path(state: AppState, path: Path | str, caller: Principal) -> str:
    """Absolute for admins; relative to the models dir (or the file name) for others."""
    path = Path(path)
    if sees_all(caller):
        return str(path)
    try:
        return str(path.relative_to(state.registry.models_dir))
    except ValueError:
        return path.name


def devices(state: AppState, caller: Principal) -> list[dict[str, Any]]:
    """The scheduler's device snapshot as this caller may see it."""
    snapshot = state.scheduler.snapshot()
    if sees_all(caller):
        return snapshot
    owners = {t.job_id: t.owner for slot in state.scheduler.slots for t in slot.tasks()}
    shown = []
    for device in snapshot:
        view = {k: v for k, v in device.items() if k not in HOST_KEYS}
        view["active_jobs"] = [
            j for j in device.get("active_jobs", []) if caller.may_see(owners.get(j))
        ]
        if "cache" in device:
            models = [
                {**m, "key": shown_path(state, m["key"], caller)}
                for m in device["cache"].get("models", [])
            ]
            view["cache"] = {**device["cache"], "models": models}
        shown.append(view)
    return shown


def nodes(described: list[dict[str, Any]], caller: Principal) -> list[dict[str, Any]]:
    """The machines under the workers (the Ray backend; none locally): their names,
    devices and liveness; their addresses for admins only."""
    if sees_all(caller):
        return described
    return [{k: v for k, v in node.items() if k != "address"} for node in described]
