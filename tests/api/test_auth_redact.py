"""Secrets never reach a log line: query keys and bearer tokens, through uvicorn's own
access formatter and every handler of its logging config."""

from __future__ import annotations

import io
import logging
import logging.config
from pathlib import Path

from uvicorn.logging import AccessFormatter

from pixelpool import redact
from pixelpool.redact import REDACTED, RedactSecrets, host_paths

KEY = "pp_Zm9vYmFyYmF6cXV4"


def test_query_secrets_and_bearer_tokens_are_redacted() -> None:
    line = f'GET /api/status?apikey={KEY}&x=1 "Authorization: Bearer {KEY}"'
    clean = redact.redact(line)
    assert KEY not in clean and clean.count(REDACTED) == 2 and "&x=1" in clean
    for name in ("apikey", "APIKEY", "token", "key", "api_key", "access_token"):
        assert KEY not in redact.redact(f"/api/ws?a=1&{name}={KEY}")
    kept = "/api/job/1?monkey=3&keyword=4&index=0"
    assert redact.redact(kept) == kept


def access_record(path: str) -> logging.LogRecord:
    """A record as uvicorn's access logger makes it."""
    args = ("127.0.0.1:5000", "GET", path, "1.1", 200)
    return logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d', args, None
    )


def test_the_access_log_line_is_redacted() -> None:
    record = access_record(f"/api/status?apikey={KEY}")
    assert RedactSecrets().filter(record)
    line = AccessFormatter('%(client_addr)s - "%(request_line)s" %(status_code)s').format(record)
    assert KEY not in line and f"/api/status?apikey={REDACTED}" in line


def test_uvicorns_logging_config_puts_the_filter_on_every_handler() -> None:
    config = redact.uvicorn_log_config()
    assert all("redact" in h["filters"] for h in config["handlers"].values())
    logging.config.dictConfig(config)
    stream = io.StringIO()
    handler = logging.getLogger("uvicorn.access").handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(stream)
    logging.getLogger("uvicorn.access").handle(access_record(f"/v1/models?token={KEY}"))
    logging.getLogger("uvicorn.error").info("WebSocket /api/ws?apikey=%s [accepted]", KEY)
    assert f"token={REDACTED}" in stream.getvalue() and KEY not in stream.getvalue()


def test_install_covers_the_root_handlers() -> None:
    root = logging.getLogger("pixelpool-test-root")
    stream = io.StringIO()
    root.addHandler(logging.StreamHandler(stream))
    redact.install(root)
    redact.install(root)  # idempotent
    assert len(root.handlers[0].filters) == 1
    root.warning("retrying %s", f"http://h/x?apikey={KEY}")
    assert KEY not in stream.getvalue() and REDACTED in stream.getvalue()


def test_host_paths_leave_errors_relative(tmp_path: Path) -> None:
    models = tmp_path / "models"
    link = tmp_path / "link"
    link.symlink_to(tmp_path)
    error = (f"model files are missing: {models}/sdxl/demo; read {tmp_path}/data/x.png; "
             f"metadata/y and data/z stay")  # fmt: skip
    assert host_paths(error, [link / "models", Path("data"), Path("/")]) == (
        f"model files are missing: sdxl/demo; read {tmp_path}/data/x.png; metadata/y and "
        "data/z stay"
    )
    assert host_paths(error, [models, tmp_path / "data"]).startswith(
        "model files are missing: sdxl/demo; read x.png;"
    )
