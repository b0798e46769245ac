"""Secrets out of log lines: `?apikey=`, `token=`, `key=` query values and bearer tokens;
and the host's directories out of texts clients read (`host_paths`).

Clients may send their key in the query string (`?apikey=`, the only way for a
browser WebSocket), and the access log writes every request line, so the filter
sits on every handler: uvicorn's access and error logs and the root logger's.
"""

from __future__ import annotations

import copy
import logging
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

SECRET_PARAMS = ("apikey", "api_key", "api-key", "access_token", "token", "key", "jwt")
REDACTED = "[redacted]"
_QUERY = re.compile(
    r"((?:^|[?&;\s])(?:" + "|".join(re.escape(p) for p in SECRET_PARAMS) + r")=)[^&;\s\"'#]*",
    re.IGNORECASE,
)
_BEARER = re.compile(r"(\bbearer\s+)[^\s\"',;]+", re.IGNORECASE)


def redact(text: str) -> str:
    """`text` with secret query values and bearer tokens replaced by [redacted]."""
    text = _QUERY.sub(lambda m: m.group(1) + REDACTED, text)
    return _BEARER.sub(lambda m: m.group(1) + REDACTED, text)


def host_paths(text: str, roots: Iterable[Path]) -> str:
    """`text` with every path under one of `roots` (the models and data dirs) made
    relative to it: a job's error names "sd15/model.safetensors", not where the server
    keeps its files (which clients other than admins never see; the log keeps it)."""
    forms = {form for root in roots for form in (root, root.resolve()) if form.is_absolute()}
    prefixes = {f"{form}{os.sep}" for form in forms if form != Path(form.anchor)}
    for prefix in sorted(prefixes, key=len, reverse=True):  # the longest, most precise first
        text = text.replace(prefix, "")
    return text


class RedactSecrets(logging.Filter):
    """Cleans a record's message and its string arguments in place (the arguments too,
    since uvicorn's access formatter reads them one by one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, dict):
            args = record.args.items()
            record.args = {k: redact(v) if isinstance(v, str) else v for k, v in args}
        return True


def install(root: logging.Logger | None = None) -> None:
    """Put the filter on every handler of the root logger (e.g. after basicConfig)."""
    for handler in (root or logging.getLogger()).handlers:
        if not any(isinstance(f, RedactSecrets) for f in handler.filters):
            handler.addFilter(RedactSecrets())


def uvicorn_log_config() -> dict[str, Any]:
    """uvicorn's default logging config with the filter on each of its handlers."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["filters"] = {**config.get("filters", {}), "redact": {"()": RedactSecrets}}
    for handler in config["handlers"].values():
        handler["filters"] = [*handler.get("filters", []), "redact"]
    return config
