"""A server whose only device does not serve a family answers that family's routes with
503 naming the family (not a job queued forever), and /api/status shows the families."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from pixelpool.testing.server import ServerProcess
from pixelpool.testing.tiny_onnx import write_tiny_segmenter

CONFIG = """
[devices.cpu]
enabled = true
families = ["diffusion"]
[devices.cuda0]
enabled = false
"""


def test_a_family_no_device_serves_is_503(tmp_path: Path) -> None:
    models = tmp_path / "models"
    write_tiny_segmenter(models / "bgremove" / "tiny-seg.onnx")
    config = tmp_path / "pixelpool.toml"
    config.write_text(CONFIG)
    buf = io.BytesIO()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(buf, "PNG")
    with ServerProcess(models, tmp_path / "data", config=config) as server:
        status = httpx.get(f"{server.url}/api/status").json()
        assert [d["families"] for d in status["devices"]] == [["diffusion"]]
        resp = httpx.post(f"{server.url}/api/bgremove", content=buf.getvalue(), timeout=60)
        assert resp.status_code == 503, resp.text
        assert "bgremove family" in resp.json()["error"]
        resp = httpx.post(f"{server.url}/api/enqueue/bgremove", content=buf.getvalue())
        assert resp.status_code == 503, resp.text
        assert httpx.get(f"{server.url}/api/status").json()["queue_depth"] == 0
        body = {"prompt": "a fox", "background": "transparent"}  # refused before generating
        resp = httpx.post(f"{server.url}/v1/images/generations", json=body)
        assert resp.status_code == 503 and resp.json()["error"]["param"] == "background"
