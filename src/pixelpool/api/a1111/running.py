"""Which /sdapi jobs each caller has in flight, for `/progress` and `/interrupt`.

A1111 has one job at a time per server; here each key sees (and can interrupt) only
its own. The table lives in the app's state, so that each server has its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from starlette.requests import Request


def table(request: Request) -> dict[str | None, list[list[str]]]:
    app_state = request.app.state
    if not hasattr(app_state, "a1111_running"):
        app_state.a1111_running = {}
    return app_state.a1111_running


@contextmanager
def tracked(request: Request, owner: str | None, job_ids: list[str]) -> Iterator[None]:
    """Mark one request's jobs as running for `owner` until it returns."""
    runs = table(request).setdefault(owner, [])
    runs.append(job_ids)
    try:
        yield
    finally:
        runs.remove(job_ids)
        if not runs:
            table(request).pop(owner, None)


def running(request: Request, owner: str | None) -> list[list[str]]:
    return list(table(request).get(owner, []))
