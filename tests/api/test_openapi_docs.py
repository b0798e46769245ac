"""The OpenAPI document describes each dialect's own error body, and every request body.

(The contract fuzzer in tests/e2e checks the document against a running server;
this checks its shape quickly, without one.)
"""

from __future__ import annotations

from typing import Any

import pytest

from pixelpool.api.a1111.errors import is_a1111
from pixelpool.api.app import create_app
from pixelpool.api.selfhosted import PATHS as SELF_HOSTED_PATHS
from pixelpool.api.vision.dialect import is_vision_path
from pixelpool.config import Settings

DOC = create_app(Settings()).openapi()
OPERATIONS = [
    (path, method, op)
    for path, item in DOC["paths"].items()
    for method, op in item.items()
]  # fmt: skip


def _error_schema(path: str) -> str:
    if path == "/v1" or path.startswith("/v1/"):
        return "OpenAIError"
    if is_a1111(path):  # /sdapi/v1 and the ControlNet extension's /controlnet
        return "A1111Error"
    detail = path in SELF_HOSTED_PATHS or is_vision_path(path)
    return "DetailError" if detail else "NativeError"


@pytest.mark.parametrize(("path", "method", "op"), OPERATIONS, ids=lambda v: str(v)[:40])
def test_errors_are_in_the_dialects_shape(path: str, method: str, op: dict[str, Any]) -> None:
    for status, response in op["responses"].items():
        if not status.startswith(("4", "5")) or (path, status) == ("/ready", "503"):
            continue  # /ready's 503 is its usual body, with ready: false
        schema = response["content"]["application/json"]["schema"]
        assert schema["$ref"].endswith("/" + _error_schema(path)), (method, path, status)
        if path.startswith("/v1"):
            assert status != "422", "OpenAI answers invalid values with 400"


def test_fastapis_default_validation_body_is_gone() -> None:
    assert "HTTPValidationError" not in DOC["components"]["schemas"]


def test_hand_parsed_bodies_are_described() -> None:
    def body(path: str) -> dict[str, Any]:
        return DOC["paths"][path]["post"]["requestBody"]["content"]

    assert body("/api/img2img")["multipart/form-data"]["schema"]["properties"]["image"]
    assert "image" in body("/v1/images/edits")["multipart/form-data"]["schema"]["required"]
    assert "application/x-fox-latent" in body("/api/decode-latents")
    assert "image/png" in body("/api/encode-latents")
    hires = body("/api/generate-hires")["application/json"]["schema"]["$ref"]
    assert hires.rsplit("/", 1)[1] in DOC["components"]["schemas"]
    params = {p["name"] for p in DOC["paths"]["/api/hires-latents"]["post"]["parameters"]}
    assert {"prompt", "hires_steps", "model"} <= params
    media = DOC["paths"]["/api/generate"]["post"]["responses"]["200"]["content"]
    assert {"image/png", "image/jpeg", "image/webp"} <= set(media)
