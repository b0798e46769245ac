"""Contract fuzzing: every operation of the OpenAPI document, against a real server.

Schemathesis generates valid and invalid requests from the document the server
publishes (all dialects, auth on, a valid key sent) and checks that none gets a
5xx and that every response (status, media type, body, headers) is one the
document describes. Sizes, steps and queue are limited so valid requests stay cheap.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from PIL import Image
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from pixelpool.api.app import create_app
from pixelpool.config import Settings
from pixelpool.families.diffusion.latent_format import encode_latents
from pixelpool.testing.server import ServerProcess

KEY = "fuzz-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
LIMITS = {
    "PIXELPOOL_AUTH__KEYS": json.dumps([KEY]),
    "PIXELPOOL_LIMITS__MAX_SIZE": "256",
    "PIXELPOOL_LIMITS__MAX_STEPS": "2",
    "PIXELPOOL_LIMITS__MAX_IMAGES": "2",
    "PIXELPOOL_LIMITS__MAX_PROMPT_CHARS": "200",
    "PIXELPOOL_LIMITS__MAX_INPUT_PIXELS": str(128 * 128),
    "PIXELPOOL_SCHEDULER__MAX_QUEUE": "8",
    "PIXELPOOL_SERVER__MAX_BODY_BYTES": str(256 * 1024),
}
CHECKS = [
    schemathesis.checks.not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]


EXAMPLES = int(os.environ.get("PIXELPOOL_FUZZ_EXAMPLES", "8"))  # per operation; raise it locally
SIDES = st.sampled_from([8, 63, 64, 72, 128])  # 64: valid at these limits


def _image(width: int, height: int, fmt: str, seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt)
    return buf.getvalue()


def _latents(side: int, channels: int, fmt: str, meta: dict[str, object]) -> bytes:
    array = np.zeros((1, channels, side // 8 or 1, side // 8 or 1), np.float32)
    return encode_latents(array, meta, fmt)


def images(fmt: str) -> st.SearchStrategy[bytes]:
    """Real images (some of a valid size), or arbitrary bytes."""
    real = st.builds(_image, SIDES, SIDES, st.just(fmt), st.integers(0, 3))
    return st.one_of(real, st.binary(max_size=256))


LATENTS = st.one_of(
    st.builds(
        _latents,
        SIDES,
        st.sampled_from([4, 3]),
        st.sampled_from(["safetensors", "fxlt"]),
        st.fixed_dictionaries(
            {},
            optional={
                "architecture": st.sampled_from(["sd15", "sdxl"]),
                "seed": st.integers(0, 2**31),
            },
        ),
    ),
    st.binary(max_size=256),
)
# Bodies and uploads that the server can decode, besides random bytes.
for _kind, _fmt in (("png", "PNG"), ("jpeg", "JPEG"), ("webp", "WEBP")):
    schemathesis.openapi.media_type(f"image/{_kind}", images(_fmt))
schemathesis.openapi.media_type(
    "application/x-safetensors", LATENTS, aliases=["application/x-fox-latent"]
)
schemathesis.openapi.media_type("application/octet-stream", LATENTS)
schemathesis.openapi.format("binary", images("PNG"))
schemathesis.serializer.alias(
    ["application/x-safetensors", "application/x-fox-latent"], "application/octet-stream"
)

# The document is built here, from the same app factory, so that each operation is one
# test; the fixture checks that the server publishes exactly this document.
DOCUMENT = create_app(Settings()).openapi()
schema = schemathesis.openapi.from_dict(DOCUMENT)


@pytest.fixture(scope="module")
def fuzz_server(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with ServerProcess(models_dir, tmp_path_factory.mktemp("fuzz"), env=LIMITS) as server:
        assert httpx.get(f"{server.url}/openapi.json").json() == DOCUMENT
        yield server.url


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_every_operation_keeps_its_contract(fuzz_server: str, case: schemathesis.Case) -> None:
    case.call_and_validate(base_url=fuzz_server, headers=AUTH, checks=CHECKS, timeout=60)
