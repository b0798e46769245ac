"""Inputs and small request helpers for the native vision routes and the chaining tests
(their server is the shared `extras_server`/`keyed_server` of tests/conftest.py)."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx

from .diffusion_server import png_bytes, smooth_image

IMAGE = png_bytes(smooth_image(64, 48, seed=3))
IMAGE2 = png_bytes(smooth_image(48, 64, seed=4))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def multipart(
    client: httpx.Client, path: str, params: dict[str, Any], **files: bytes | list[bytes]
) -> httpx.Response:
    """POST multipart: each file field (one or several parts) plus `params` JSON."""
    parts = []
    for name, value in files.items():
        for data in value if isinstance(value, list) else [value]:
            parts.append((name, (name, data, "application/octet-stream")))
    return client.post(path, data={"params": json.dumps(params)}, files=parts)


def error_of(resp: httpx.Response, status: int, field: str) -> str:
    """The native error message, checked to be `status` and to name `field`."""
    assert resp.status_code == status, (resp.status_code, resp.text[:500])
    message = resp.json()["error"]
    assert field in message, message
    return message
