"""Log formats: JSON lines with structured fields, and no secret in either format."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from pixelpool import logs
from pixelpool.redact import RedactSecrets

SECRET = "pp_live_0123456789abcdef"


def _record(msg: str, *args: object, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("pixelpool.test", logging.INFO, __file__, 1, msg, args, None)
    record.__dict__.update(extra)
    return record


def _formatted(fmt: logs.LogFormat, record: logging.LogRecord) -> str:
    RedactSecrets().filter(record)  # as every handler does
    return logs.formatter(fmt).format(record)


def test_json_line_has_the_fields_and_redacts_every_string() -> None:
    record = _record(
        "GET %s", f"/api/status?apikey={SECRET}", job_id="j1", key="alice",
        note=f"Authorization: Bearer {SECRET}", nested={"url": f"/x?token={SECRET}"},
    )  # fmt: skip
    line = _formatted("json", record)
    assert SECRET not in line
    body = json.loads(line)
    assert body["logger"] == "pixelpool.test" and body["level"] == "INFO"
    assert body["time"].endswith("Z") and "T" in body["time"]
    assert body["message"] == "GET /api/status?apikey=[redacted]"
    assert body["job_id"] == "j1" and body["key"] == "alice"
    assert body["note"] == "Authorization: Bearer [redacted]"
    assert body["nested"] == {"url": "/x?token=[redacted]"}


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_a_traceback_is_redacted_too(fmt: logs.LogFormat) -> None:
    try:
        raise ValueError(f"bad header: Bearer {SECRET}")
    except ValueError:
        record = _record("request failed")
        record.exc_info = sys.exc_info()
    out = _formatted(fmt, record)
    assert SECRET not in out and "Bearer [redacted]" in out
    if fmt == "json":
        assert "ValueError" in json.loads(out)["exc_info"]


def test_access_records_carry_the_request_fields() -> None:
    info = logs.RequestInfo(key="alice", route="/api/job/{job_id}", duration_ms=1.5)
    reset = logs.request_info.set(info)
    try:
        logs.note_job("job-1")
        logs.note_job("job-1")  # once
        record = _record('%s - "%s %s HTTP/%s" %d', "127.0.0.1:1", "GET", "/api/job/job-1",
                         "1.1", 200)  # fmt: skip
        assert logs.AccessFields().filter(record)
    finally:
        logs.request_info.reset(reset)
    body = json.loads(logs.formatter("json").format(record))
    assert body["job_id"] == "job-1" and body["job_ids"] == ["job-1"]
    assert (body["key"], body["route"], body["status"]) == ("alice", "/api/job/{job_id}", 200)
    logs.note_job("job-2")  # outside a request: nothing to note, no error


def test_text_access_lines_end_with_the_job_ids() -> None:
    from uvicorn.logging import AccessFormatter

    formatter = AccessFormatter(logs.uvicorn_log_config("text")["formatters"]["access"]["fmt"])
    record = _record('%s - "%s %s HTTP/%s" %d', "127.0.0.1:1", "POST", "/api/enqueue/x",
                     "1.1", 200)  # fmt: skip
    reset = logs.request_info.set(logs.RequestInfo(job_ids=["a1", "b2"]))
    try:
        logs.AccessFields().filter(record)
    finally:
        logs.request_info.reset(reset)
    assert formatter.format(record).endswith(" 200 OK job a1,b2")
    bare = _record('%s - "%s %s HTTP/%s" %d', "127.0.0.1:1", "GET", "/health", "1.1", 200)
    logs.AccessFields().filter(bare)
    assert formatter.format(bare).endswith(" 200 OK")


def test_diffusers_empty_float32_list_warning_is_dropped() -> None:
    """diffusers warns at every dtype cast of a model, with an empty list (the SDXL VAE's
    upcast: twice per image in a GPU worker's log); a non-empty list still shows."""
    seen: list[str] = []
    collect = logging.Handler()
    collect.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
    noisy = logging.getLogger("diffusers.models.modeling_utils")
    noisy.addHandler(collect)
    try:
        logs.quiet_libraries()  # what logs.configure does in every process
        logs.quiet_libraries()  # twice: still one filter
        noisy.warning("There are modules in AutoencoderKL that should be kept in float32: [].")
        noisy.warning("There are modules in X that should be kept in float32: ['norm'].")
    finally:
        noisy.removeHandler(collect)
    assert seen == ["There are modules in X that should be kept in float32: ['norm']."]
    assert sum(isinstance(f, logs.EmptyFloat32List) for f in noisy.filters) == 1
