"""One log line per step of a job's life: accepted, requeued, started, and how it ended.

Each line carries the job id, the key *name* that owns it (never the key), the
operation, model and device, and the durations known at that point, as
structured fields (keys of the JSON object in `server.log_format = "json"`) and
in the message (for a terminal). The job service calls `log_job_event` for every
event it publishes; progress and preview events are not logged.
"""

from __future__ import annotations

import logging
from typing import Any

from pixelpool.jobs.spec import JobRecord

log = logging.getLogger("pixelpool.jobs")

LOGGED = frozenset({"queued", "started", "completed", "failed", "cancelled"})


def job_fields(record: JobRecord) -> dict[str, Any]:
    """The fields every line about this job carries."""
    return {
        "job_id": record.id,
        "key": record.owner,
        "operation": record.spec.op,
        "model": record.spec.model.get("name"),
        "device": record.device,
    }


def _seconds(end: float | None, start: float | None) -> float | None:
    return round(end - start, 4) if end is not None and start is not None else None


def log_job_event(record: JobRecord, kind: str, extra: dict[str, Any]) -> None:
    if kind not in LOGGED or not log.isEnabledFor(logging.INFO):
        return
    fields = {**job_fields(record), "event": kind}
    what = f"{record.spec.op} on {fields['model']}"
    if kind == "queued":
        reason = extra.get("reason")
        if reason:
            fields["reason"] = reason
            log.info("job %s requeued (%s): %s", record.id, reason, what, extra=fields)
        else:
            log.info("job %s accepted: %s", record.id, what, extra=fields)
        return
    fields["wait_s"] = _seconds(record.started, record.created)
    if kind == "started":
        fields["batch_size"] = record.batch_size
        log.info(
            "job %s started on %s after %.3fs in a batch of %s: %s",
            record.id, record.device, fields["wait_s"] or 0.0, record.batch_size, what,
            extra=fields,
        )  # fmt: skip
        return
    fields["run_s"] = record.result.get("run_s") if record.result else None
    fields["total_s"] = _seconds(record.finished, record.created)
    if kind == "completed":
        log.info(
            "job %s completed on %s in %.3fs (ran %.3fs): %s",
            record.id, record.device, fields["total_s"] or 0.0, fields["run_s"] or 0.0, what,
            extra=fields,
        )  # fmt: skip
    else:
        fields["reason"] = record.error
        level = logging.WARNING if kind == "failed" else logging.INFO
        log.log(level, "job %s %s (%s): %s", record.id, kind, record.error, what, extra=fields)
