"""Step previews: TAESD decoders in both layouts, the latent-to-RGB fallback, bad files."""

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import FluxPipeline
from safetensors.torch import save_file

from pixelpool.families.diffusion.params import PreviewDecoderRef
from pixelpool.pipelines.base import Loaded
from pixelpool.pipelines.diffusion import previews
from pixelpool.registry.preview_decoders import scan_preview_decoders
from pixelpool.testing.taesd import (
    build_tiny_taesd,
    original_decoder_state,
    write_tiny_taesd_dir,
    write_tiny_taesd_file,
)

from .diffusion_helpers import BASE, load

PARAMS = {**BASE, "steps": 3, "preview_every": 1}  # 64 x 48


def ref_for(path: Path) -> dict[str, Any]:
    (entry,) = [e for e in scan_preview_decoders(path.parent.parent) if e.path == path.resolve()]
    return entry.to_wire()


def collect(loaded: Loaded, params: dict[str, Any], op: str = "txt2img") -> list[np.ndarray]:
    """Run one job; return its previews in step order (one per previewed step)."""
    from pixelpool.pipelines import get_family
    from pixelpool.pipelines.base import WorkItem

    seen: list[np.ndarray] = []

    def progress(step: int, total: int, stage: str, images: list | None) -> None:
        if images is not None:
            assert len(images) == 1 and images[0].dtype == np.uint8
            seen.append(images[0])

    get_family("diffusion").run(loaded, [WorkItem("j", op, params)], progress, lambda: False)
    return seen


@pytest.fixture(scope="module")
def sd15(models_dir: Path) -> Loaded:
    return load(models_dir / "sd15/demo-sd", "sd15")


@pytest.fixture(scope="module")
def approx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("models") / "vae_approx"
    write_tiny_taesd_file(folder / "taesd_decoder.safetensors", seed=3)
    write_tiny_taesd_file(folder / "taesdxl_decoder.pth", seed=3)
    write_tiny_taesd_dir(folder / "taesd", seed=3)
    write_tiny_taesd_file(folder / "taef1_decoder.safetensors", latent_channels=16)
    # A decoder with one weight missing: strict loading names it.
    state = original_decoder_state(build_tiny_taesd())
    del state["5.conv.4.weight"]
    save_file(state, str(folder / "taesd3_decoder.safetensors"))
    return folder


def test_single_file_and_diffusers_dir_decode_like_autoencoder_tiny(approx: Path) -> None:
    """The ComfyUI key layout (offset by one) loads strictly into diffusers' DecoderTiny."""
    reference = build_tiny_taesd(seed=3).decoder.eval()
    latents = torch.randn(2, 4, 6, 8, generator=torch.Generator().manual_seed(0))
    expected = reference(latents)
    for name in ("taesd_decoder.safetensors", "taesdxl_decoder.pth", "taesd"):
        ref = PreviewDecoderRef(**ref_for(approx / name))
        decoder = previews.load_decoder(ref, torch.device("cpu"), torch.float32)
        assert decoder is not None, name
        assert previews.load_decoder(ref, torch.device("cpu"), torch.float32) is decoder  # cached
        assert torch.equal(decoder(latents), expected), name
    keys = set(original_decoder_state(build_tiny_taesd()))
    assert {"1.weight", "1.bias", "3.conv.0.weight", "19.bias"} <= keys and "0.weight" not in keys


def test_taesd_previews_have_the_image_size(sd15: Loaded, approx: Path) -> None:
    plain = collect(sd15, PARAMS)
    assert [p.shape for p in plain] == [(6, 8, 3)] * 3  # latent-to-RGB: 1/8 of 64 x 48
    tiny = collect(
        sd15, {**PARAMS, "preview_decoder": ref_for(approx / "taesd_decoder.safetensors")}
    )
    assert [p.shape for p in tiny] == [(48, 64, 3)] * 3
    diffusers_dir = collect(sd15, {**PARAMS, "preview_decoder": ref_for(approx / "taesd")})
    assert all(np.array_equal(a, b) for a, b in zip(tiny, diffusers_dir, strict=True))


def test_bad_or_mismatched_decoder_falls_back_with_a_warning(
    sd15: Loaded, approx: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="pixelpool")
    bad = ref_for(approx / "taesd3_decoder.safetensors")
    assert len(collect(sd15, {**PARAMS, "preview_decoder": bad})) == 3  # the job runs on
    assert all(p.shape == (6, 8, 3) for p in collect(sd15, {**PARAMS, "preview_decoder": bad}))
    failures = [r.getMessage() for r in caplog.records if "taesd3_decoder" in r.getMessage()]
    assert len(failures) == 1  # once, not at every step or job
    assert "cannot be used" in failures[0] and "layers.4.conv.4.weight" in failures[0]

    wrong = ref_for(approx / "taef1_decoder.safetensors")  # 16 channels for a 4-channel model
    assert [p.shape for p in collect(sd15, {**PARAMS, "preview_decoder": wrong})] == [(6, 8, 3)] * 3
    assert any("takes 16 latent channels" in r.getMessage() for r in caplog.records)


def test_latent_rgb_tables_for_16_channel_latents() -> None:
    zeros = torch.zeros(1, 16, 4, 5)
    for arch in ("sd3", "flux"):
        (image,) = previews.latent_rgb(zeros, arch)
        bias = torch.tensor(previews.LATENT_RGB[arch][1])
        expected = ((bias + 1) / 2).clamp(0, 1).mul(255).round().to(torch.uint8).numpy()
        assert image.shape == (4, 5, 3) and (image == expected).all()
    latents = torch.randn(1, 16, 4, 5, generator=torch.Generator().manual_seed(1))
    sd3, flux = previews.latent_rgb(latents, "sd3")[0], previews.latent_rgb(latents, "flux")[0]
    assert not np.array_equal(sd3, flux)
    # A 4-channel latent (the tiny test models) on a 16-channel architecture: the 4-row table.
    small = torch.randn(1, 4, 4, 5, generator=torch.Generator().manual_seed(2))
    assert np.array_equal(
        previews.latent_rgb(small, "flux")[0], previews.latent_rgb(small, "sd15")[0]
    )


def test_unpack_matches_diffusers() -> None:
    latents = torch.randn(2, 16, 6, 10, generator=torch.Generator().manual_seed(0))
    packed = FluxPipeline._pack_latents(latents, 2, 16, 6, 10)
    assert torch.equal(previews.unpack(packed, 80, 48, 8), latents)
    assert torch.equal(
        previews.unpack(packed, 80, 48, 8), FluxPipeline._unpack_latents(packed, 48, 80, 8)
    )
    assert previews.unpack(packed, 64, 64, 8) is None  # a size that does not fit
