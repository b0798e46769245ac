"""A real server over the demo diffusion models, tiny vision models and a tiny upscaler
(for the native vision routes and the chaining tests), and small request helpers."""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from pixelpool.testing.server import ServerProcess
from pixelpool.testing.tiny_upscale import write_tiny_upscaler
from pixelpool.testing.tiny_vision import write_vision_models

from .diffusion_server import png_bytes, smooth_image

VISION = ["tiny-sam3", "tiny-gdino", "tiny-depth", "tiny-dinov2"]
IMAGE = png_bytes(smooth_image(64, 48, seed=3))
IMAGE2 = png_bytes(smooth_image(48, 64, seed=4))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def vision_client(
    models_dir: Path, tmp: Path, keys: list[str] | None = None
) -> Iterator[httpx.Client]:
    """A client of a server whose models dir holds everything the chain needs; with
    `keys`, auth is on and the client presents the first."""
    root = tmp / "models"
    shutil.copytree(models_dir, root)
    write_vision_models(root, VISION)
    write_tiny_upscaler(root / "upscale" / "tiny-esrgan.safetensors", "ESRGAN")
    env = {"PIXELPOOL_AUTH__KEYS": json.dumps(keys)} if keys else None
    headers = {"Authorization": f"Bearer {keys[0]}"} if keys else None
    proc = ServerProcess(root, tmp / "data", env=env).start()
    try:
        with httpx.Client(base_url=proc.url, timeout=120, headers=headers) as client:
            yield client
    finally:
        proc.stop()


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
