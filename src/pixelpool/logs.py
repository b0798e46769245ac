"""Log lines for a terminal (text) or for a log pipeline (one JSON object a line).

`server.log_format = "json"` writes every record of the server, its workers and
uvicorn's access log as one JSON object a line, with the record's structured
fields (job id, key name, operation, model, device, durations) as keys. Every
string value goes through `redact` first, and no code passes a key, a token or a
secret as a field: callers name a key by its name (`Principal.name`), never by
its value.

The access log line of a request carries the ids of the jobs it touched: the
request's `RequestInfo` (a context variable set by the HTTP middleware) collects
the ids the job service accepts while serving it, and the access log's filter
reads it (uvicorn writes the line from inside the request's task).
"""

from __future__ import annotations

import copy
import logging
import sys
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from pythonjsonlogger.json import JsonFormatter

from pixelpool.redact import RedactSecrets, redact

LogFormat = Literal["text", "json"]
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(message)s"
JSON_RENAME = {"asctime": "time", "levelname": "level", "name": "logger"}


@dataclass
class RequestInfo:
    """What the access log says about a request beyond its line: the ids of the jobs it
    submitted or named, the caller's key name, its route template, its duration."""

    job_ids: list[str] = field(default_factory=list)
    key: str | None = None
    route: str | None = None
    duration_ms: float | None = None


request_info: ContextVar[RequestInfo | None] = ContextVar("pixelpool_request", default=None)


def note_job(job_id: str) -> None:
    """Record that the request being served touched this job (no-op outside a request)."""
    info = request_info.get()
    if info is not None and job_id not in info.job_ids:
        info.job_ids.append(job_id)


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    return value


class JsonLines(JsonFormatter):
    """python-json-logger's formatter with every string value redacted (tracebacks too)."""

    def __init__(self) -> None:
        super().__init__(JSON_FIELDS, rename_fields=JSON_RENAME)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """ISO 8601 in UTC with milliseconds: what log pipelines parse without a hint."""
        moment = datetime.fromtimestamp(record.created, tz=UTC)
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        # uvicorn's formatters add these for colour; they say nothing in JSON.
        for noise in ("color_message", "levelprefix"):
            log_data.pop(noise, None)
        return {k: _clean(v) for k, v in log_data.items()}


class RedactedText(logging.Formatter):
    """The plain formatter, with a traceback's text redacted as well as the message."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class AccessFields(logging.Filter):
    """Adds the request's structured fields to uvicorn's access records (after redaction:
    the request line's query string has already been cleaned)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5:
            record.client, record.method, record.path, _, record.status = args
        record.job_note = ""  # the text format's suffix
        info = request_info.get()
        if info is not None:
            record.route = info.route
            record.key = info.key
            record.duration_ms = info.duration_ms
            if info.job_ids:
                record.job_ids = list(info.job_ids)
                if len(info.job_ids) == 1:
                    record.job_id = info.job_ids[0]
                record.job_note = " job " + ",".join(info.job_ids)
        return True


def formatter(fmt: LogFormat) -> logging.Formatter:
    return JsonLines() if fmt == "json" else RedactedText(TEXT_FORMAT)


class EmptyFloat32List(logging.Filter):
    """Drop diffusers' "modules ... should be kept in float32: []" warning: it comes at
    every dtype cast of a model (a single-file load, the SDXL VAE's upcast around each
    decode: twice per image on a GPU) even when the list is empty, and says nothing."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "should be kept in float32: []" not in record.getMessage()


def quiet_libraries() -> None:
    """Filters on the libraries' own loggers (they do not propagate to the root)."""
    noisy = logging.getLogger("diffusers.models.modeling_utils")
    if not any(isinstance(f, EmptyFloat32List) for f in noisy.filters):
        noisy.addFilter(EmptyFloat32List())


def configure(level: str, fmt: LogFormat) -> None:
    """The root logger: one stderr handler in the chosen format, secrets redacted.
    Python warnings go through logging too, so in JSON mode they are JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(fmt))
    handler.addFilter(RedactSecrets())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.captureWarnings(True)
    quiet_libraries()


def uvicorn_log_config(fmt: LogFormat) -> dict[str, Any]:
    """uvicorn's logging config: its own look for text (secrets redacted), or our JSON
    lines; the access log's records carry the request's fields either way."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["filters"] = {
        **config.get("filters", {}),
        "redact": {"()": RedactSecrets},
        "access_fields": {"()": AccessFields},
    }
    for name, handler in config["handlers"].items():
        extra = ["redact", "access_fields"] if name == "access" else ["redact"]
        handler["filters"] = [*handler.get("filters", []), *extra]
    if fmt == "json":
        config["formatters"] = {name: {"()": JsonLines} for name in config["formatters"]}
    else:  # uvicorn's line, then the jobs the request touched
        access = config["formatters"]["access"]
        access["fmt"] = access["fmt"] + "%(job_note)s"
    return config
