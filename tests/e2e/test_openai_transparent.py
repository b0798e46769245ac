"""`background: "transparent"` through the official `openai` SDK: each image is the opaque
one (same seed) cut out by the bgremove pipeline, as that pipeline gives it when called
directly."""

from __future__ import annotations

import base64
import io
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from PIL import Image

from pixelpool.testing.server import ServerProcess

from .test_families_api import direct

FAST = {"steps": 2, "seed": 5}


@pytest.fixture(scope="module")
def tree(extras_dir: Path) -> Path:
    return extras_dir


@pytest.fixture(scope="module")
def server(extras_server: ServerProcess) -> ServerProcess:
    return extras_server


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0) as c:
        yield c


def pixels(b64: str | None) -> np.ndarray:
    assert b64
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))


def cut_out(tree: Path, opaque: np.ndarray, tmp_path: Path) -> np.ndarray:
    """The bgremove pipeline, called in this process on the opaque image."""
    path = tmp_path / "opaque.png"
    Image.fromarray(opaque).save(path)
    rgba = direct(tree, "bgremove", "tiny-seg", "bgremove", path).images[0]
    assert rgba.shape[-1] == 4
    return rgba


def assert_close(got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1


def test_generate_transparent_is_the_cut_out_of_the_opaque_image(
    client: openai.OpenAI, tree: Path, tmp_path: Path
) -> None:
    args: dict[str, Any] = {"prompt": "a fox", "size": "64x64", "extra_body": FAST}
    opaque = client.images.generate(**args)
    assert opaque.background == "opaque"
    resp = client.images.generate(**args, background="transparent")
    assert resp.background == "transparent" and resp.output_format == "png"
    assert resp.data and resp.data[0].model_extra["seed"] == 5
    got = pixels(resp.data[0].b64_json)
    assert_close(got, cut_out(tree, pixels(opaque.data[0].b64_json), tmp_path))  # type: ignore[index]
    assert len(np.unique(got[..., 3])) > 1  # a real alpha channel, not a constant one


def test_webp_keeps_alpha_and_url_results_work(client: openai.OpenAI) -> None:
    resp = client.images.generate(
        prompt="a fox", size="64x64", background="transparent", output_format="webp",
        output_compression=80, response_format="url", extra_body=FAST,
    )  # fmt: skip
    assert resp.data and resp.data[0].url and resp.data[0].url.endswith(".webp")
    got = httpx.get(resp.data[0].url)
    assert got.headers["content-type"] == "image/webp"
    with Image.open(io.BytesIO(got.content)) as img:
        assert img.format == "WEBP" and img.mode == "RGBA"


def test_jpeg_with_transparent_is_a_bad_request_naming_background(
    client: openai.OpenAI,
) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.images.generate(prompt="a fox", background="transparent", output_format="jpeg")
    assert info.value.param == "background" and "JPEG" in info.value.message


def _image() -> bytes:
    ramp = np.linspace(0, 255, 64 * 64 * 3, dtype=np.uint8).reshape(64, 64, 3)
    buf = io.BytesIO()
    Image.fromarray(ramp).save(buf, format="PNG")
    return buf.getvalue()


def test_edit_transparent_is_the_cut_out_of_the_opaque_edit(
    client: openai.OpenAI, tree: Path, tmp_path: Path
) -> None:
    args: dict[str, Any] = {
        "image": ("in.png", _image(), "image/png"), "prompt": "a boat",
        "extra_body": {**FAST, "strength": 0.5},
    }  # fmt: skip
    opaque = client.images.edit(**args)
    resp = client.images.edit(**args, background="transparent")
    assert resp.background == "transparent"
    got = pixels(resp.data[0].b64_json)  # type: ignore[index]
    assert_close(got, cut_out(tree, pixels(opaque.data[0].b64_json), tmp_path))  # type: ignore[index]


def test_stream_ends_with_the_transparent_image(
    client: openai.OpenAI, tree: Path, tmp_path: Path
) -> None:
    opaque = client.images.generate(prompt="a fox", size="64x64", extra_body=FAST)
    events = list(
        client.images.generate(
            prompt="a fox", size="64x64", stream=True, partial_images=1,
            background="transparent", extra_body=FAST,
        )
    )  # fmt: skip
    assert [e.type for e in events] == [
        "image_generation.partial_image", "image_generation.completed"
    ]  # fmt: skip
    assert events[-1].background == "transparent"
    got = pixels(events[-1].b64_json)
    assert_close(got, cut_out(tree, pixels(opaque.data[0].b64_json), tmp_path))  # type: ignore[index]


def test_a_failed_cut_out_is_an_error_envelope_and_leaves_no_job_behind(
    models_dir: Path, tmp_path: Path
) -> None:
    """A bgremove model that cannot load (the first by name, so the one used) fails the
    request with OpenAI's envelope and a message; every job has ended."""
    root = tmp_path / "models"
    shutil.copytree(models_dir, root)
    (root / "bgremove").mkdir()
    (root / "bgremove" / "a-broken.onnx").write_bytes(b"not an onnx graph")
    with (
        ServerProcess(root, tmp_path / "data") as server,
        openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0) as client,
    ):
        with pytest.raises(openai.InternalServerError) as info:
            client.images.generate(
                prompt="a fox", size="64x64", background="transparent", extra_body=FAST
            )
        assert info.value.param == "background"
        assert "background removal failed" in info.value.message
        status = httpx.get(f"{server.url}/api/status").json()
        assert status["active_jobs"] == 0 and status["queue_depth"] == 0
