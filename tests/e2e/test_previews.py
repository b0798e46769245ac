"""Step previews through the real server: TAESD decoders installed under vae_approx/
give full-size previews; a broken one is logged and the job goes on with latent-to-RGB."""

import base64
import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image
from safetensors.torch import save_file

from pixelpool.testing.server import ServerProcess
from pixelpool.testing.taesd import (
    build_tiny_taesd,
    original_decoder_state,
    write_tiny_taesd_dir,
    write_tiny_taesd_file,
)
from pixelpool.testing.tiny_flow import write_tiny_flux

JOB = {"prompt": "a fox", "width": 128, "height": 64, "steps": 3, "seed": 7, "preview": True,
       "preview_every": 1}  # fmt: skip


@pytest.fixture(scope="module")
def server(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("preview-models")
    for family in ("sd15", "sdxl"):
        shutil.copytree(models_dir / family, root / family)
    write_tiny_flux(root / "flux" / "tiny-flux")
    write_tiny_taesd_file(root / "vae_approx" / "taesd_decoder.safetensors")  # ComfyUI file
    write_tiny_taesd_dir(root / "vae_approx" / "taef1")  # diffusers AutoencoderTiny
    broken = original_decoder_state(build_tiny_taesd())
    del broken["19.bias"]
    save_file(broken, str(root / "vae_approx" / "taesdxl_decoder.safetensors"))
    with ServerProcess(root, tmp_path_factory.mktemp("data")) as proc:
        yield proc


def preview_sizes(url: str, model: str) -> list[tuple[int, int]]:
    """Generate with previews; the sizes of the preview images the job's events carried."""
    resp = httpx.post(f"{url}/api/generate", json={**JOB, "model": model}, timeout=180)
    assert resp.status_code == 200, resp.text
    assert Image.open(io.BytesIO(resp.content)).size == (128, 64)
    sizes = []
    with httpx.stream("GET", f"{url}/api/job/{resp.headers['X-Job-Id']}/events", timeout=60) as r:
        for line in r.iter_lines():
            if line.startswith("data: "):
                event = json.loads(line.removeprefix("data: "))
                if event["type"] == "preview":
                    image = Image.open(io.BytesIO(base64.b64decode(event["image"])))
                    sizes.append(image.size)
    assert sizes, "no preview events"
    return sizes


def test_taesd_single_file_gives_full_size_previews(server: ServerProcess) -> None:
    assert set(preview_sizes(server.url, "demo-sd")) == {(128, 64)}  # latent-to-RGB: 16 x 8


def test_flux_previews_with_a_diffusers_taesd_dir(server: ServerProcess) -> None:
    assert set(preview_sizes(server.url, "tiny-flux")) == {(128, 64)}


def test_broken_decoder_is_logged_and_latent_rgb_used(server: ServerProcess) -> None:
    assert set(preview_sizes(server.url, "demo-sdxl")) == {(16, 8)}
    assert "taesdxl_decoder.safetensors cannot be used" in server.log()


def test_decoders_are_not_generation_models(server: ServerProcess) -> None:
    names = {m["name"] for m in httpx.get(f"{server.url}/api/model-list").json()}
    assert names == {"demo-sd", "demo-sdxl", "tiny-flux"}
