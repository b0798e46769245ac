"""SD3 (flow matching) on a tiny random model: loaded by the registry and the real loader,
and equal to diffusers called directly."""

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import FluxPipeline, StableDiffusion3Pipeline

from pixelpool.families.diffusion.samplers import check_combination
from pixelpool.pipelines import get_family
from pixelpool.pipelines.base import Loaded, WorkItem
from pixelpool.registry.preview_decoders import scan_preview_decoders
from pixelpool.registry.scan import scan_models
from pixelpool.testing.taesd import write_tiny_taesd_dir
from pixelpool.testing.tiny_flow import write_tiny_flux, write_tiny_sd3

from .diffusion_helpers import BASE, load, max_diff, run

PARAMS = {**BASE, "width": 64, "height": 64, "steps": 3}


@pytest.fixture(scope="module")
def sd3_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("flow-models")
    write_tiny_sd3(root / "sd3" / "tiny-sd3")
    return root


@pytest.fixture(scope="module")
def sd3(sd3_dir: Path) -> Loaded:
    (entry,) = scan_models(sd3_dir)
    assert entry.architecture == "sd3" and entry.prediction_type == "flow"
    return load(entry.path, "sd3")


def test_sd3_txt2img_parity(sd3: Loaded, sd3_dir: Path) -> None:
    (ours,) = run(sd3, "txt2img", PARAMS)
    pipe = StableDiffusion3Pipeline.from_pretrained(
        sd3_dir / "sd3" / "tiny-sd3", local_files_only=True, text_encoder_3=None, tokenizer_3=None
    )
    ref = pipe(
        PARAMS["prompt"], negative_prompt=PARAMS["negative_prompt"], width=64, height=64,
        num_inference_steps=3, guidance_scale=PARAMS["cfg_scale"],
        generator=torch.Generator().manual_seed(PARAMS["seed"]),
    ).images[0]  # fmt: skip
    assert ours.images[0].shape == (64, 64, 3)
    assert max_diff(ours.images[0], np.asarray(ref)) <= 1


def test_sd3_img2img_and_flow_samplers(sd3: Loaded, tmp_path: Path) -> None:
    (base,) = run(sd3, "txt2img", PARAMS)
    (heun,) = run(sd3, "txt2img", {**PARAMS, "sampler": "Flow Heun"})
    assert max_diff(base.images[0], heun.images[0]) > 0
    assert check_combination("sd3", "Euler a", None) and not check_combination(
        "sd3", "Flow Euler", None
    )
    from PIL import Image

    Image.fromarray(base.images[0]).save(tmp_path / "in.png")
    (out,) = run(sd3, "img2img", {**PARAMS, "images": [str(tmp_path / "in.png")], "strength": 0.7})
    assert out.images[0].shape == (64, 64, 3)


@pytest.fixture(scope="module")
def flux_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("flux-models")
    write_tiny_flux(root / "flux" / "tiny-flux")
    return root


def test_flux_txt2img_parity(flux_dir: Path) -> None:
    (entry,) = scan_models(flux_dir)
    assert entry.architecture == "flux"
    flux = load(entry.path, "flux")
    steps: list[int] = []
    (ours,) = run(flux, "txt2img", {**PARAMS, "preview_every": 1}, progress=steps)
    pipe = FluxPipeline.from_pretrained(flux_dir / "flux" / "tiny-flux", local_files_only=True)
    ref = pipe(
        PARAMS["prompt"], width=64, height=64, num_inference_steps=3,
        guidance_scale=PARAMS["cfg_scale"], generator=torch.Generator().manual_seed(PARAMS["seed"]),
    ).images[0]  # fmt: skip
    assert ours.images[0].shape == (64, 64, 3)
    assert max_diff(ours.images[0], np.asarray(ref)) <= 1
    assert steps == [1, 2, 3]


def _previews(loaded: Loaded, params: dict) -> list[tuple[int, ...]]:
    shapes: list[tuple[int, ...]] = []

    def progress(step: int, total: int, stage: str, images: list | None) -> None:
        shapes.extend(img.shape for img in images or [])

    get_family("diffusion").run(loaded, [WorkItem("j", "txt2img", params)], progress, lambda: False)
    return shapes


def test_flow_models_give_previews(sd3: Loaded, flux_dir: Path) -> None:
    """SD3 latents and packed FLUX latents (unpacked first) get latent-to-RGB previews at
    1/8 size, and TAESD (here a diffusers AutoencoderTiny dir, taef1) full-size ones."""
    params = {**PARAMS, "width": 80, "height": 48, "preview_every": 1}
    assert _previews(sd3, params) == [(6, 10, 3)] * 3
    flux = load(flux_dir / "flux" / "tiny-flux", "flux")
    assert _previews(flux, params) == [(6, 10, 3)] * 3
    write_tiny_taesd_dir(flux_dir / "vae_approx" / "taef1")
    decoder = scan_preview_decoders(flux_dir)[0]
    assert decoder.architecture == "flux"
    assert _previews(flux, {**params, "preview_decoder": decoder.to_wire()}) == [(48, 80, 3)] * 3
