"""Enhance on the tiny SD 1.x model: against spandrel + Lanczos + diffusers called directly."""

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionImg2ImgPipeline
from PIL import Image
from spandrel import ModelLoader

from pixelpool.families.diffusion.latent_format import encode_latents
from pixelpool.pipelines import get_family
from pixelpool.pipelines.base import Cancelled, Loaded, WorkItem
from pixelpool.pipelines.diffusion.hires import second_pass_steps
from pixelpool.testing.tiny_upscale import write_tiny_upscaler

from .diffusion_helpers import BASE, MODELS, load, max_diff, run, write_image

TARGET = {"width": 128, "height": 96}
ENHANCE = {**BASE, **TARGET, "steps": 2, "strength": 0.5}


@pytest.fixture(scope="module")
def sd(models_dir: Path) -> Loaded:
    return load(models_dir / MODELS["sd15"], "sd15")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("enhance")
    return {
        "image": write_image(root / "in.png", 64, 48),
        "other": write_image(root / "other.png", 64, 48, seed=1),
        "rgba": write_image(root / "rgba.png", 64, 48, seed=3, mode="RGBA"),
        "upscaler": write_tiny_upscaler(root / "tiny-compact.safetensors", "Compact"),
    }


def _ref(path: Path) -> dict:
    return {"name": path.stem, "path": str(path), "key": f"{path}:1", "size_bytes": 1}


@pytest.fixture(scope="module")
def direct(models_dir: Path) -> StableDiffusionImg2ImgPipeline:
    return StableDiffusionImg2ImgPipeline.from_pretrained(
        models_dir / MODELS["sd15"], local_files_only=True, safety_checker=None
    )


def _direct(pipe: StableDiffusionImg2ImgPipeline, image: object) -> np.ndarray:
    out = pipe(
        BASE["prompt"], image=image, strength=0.5, negative_prompt=BASE["negative_prompt"],
        num_inference_steps=second_pass_steps(2, 0.5), guidance_scale=BASE["cfg_scale"],
        generator=torch.Generator("cpu").manual_seed(BASE["seed"]), output_type="np",
    ).images[0]  # fmt: skip
    return np.rint(out * 255).astype(np.uint8)


def test_pixel_path_equals_spandrel_lanczos_then_diffusers(
    sd: Loaded, files: dict[str, Path], direct: StableDiffusionImg2ImgPipeline
) -> None:
    p = {**ENHANCE, "image": str(files["image"]), "upscaler": _ref(files["upscaler"])}
    (ours,) = run(sd, "enhance", p)
    assert ours.images[0].shape == (96, 128, 3) and ours.seeds == [BASE["seed"]]
    # spandrel called directly, untiled, then Lanczos to the target
    descriptor = ModelLoader("cpu").load_from_file(str(files["upscaler"])).eval()
    x = torch.from_numpy(np.asarray(Image.open(files["image"]).convert("RGB")).copy())
    with torch.inference_mode():
        y = descriptor(x.permute(2, 0, 1)[None].float() / 255)[0]
    native = np.clip(np.rint(y.permute(1, 2, 0).numpy() * 255), 0, 255).astype(np.uint8)
    upscaled = Image.fromarray(native).resize((128, 96), Image.Resampling.LANCZOS)
    assert max_diff(ours.images[0], _direct(direct, upscaled)) <= 1
    assert ours.info["upscaler"] == "tiny-compact"


def test_lanczos_path_and_alpha(
    sd: Loaded, files: dict[str, Path], direct: StableDiffusionImg2ImgPipeline
) -> None:
    (ours,) = run(sd, "enhance", {**ENHANCE, "image": str(files["image"])})
    upscaled = Image.open(files["image"]).resize((128, 96), Image.Resampling.LANCZOS)
    assert max_diff(ours.images[0], _direct(direct, upscaled)) <= 1
    (rgba,) = run(sd, "enhance", {**ENHANCE, "image": str(files["rgba"])})
    assert rgba.images[0].shape == (96, 128, 4)


def test_latent_path_equals_diffusers_from_bilinear_latents(
    sd: Loaded, tmp_path: Path, direct: StableDiffusionImg2ImgPipeline
) -> None:
    lat = torch.randn((1, 4, 6, 8), generator=torch.Generator().manual_seed(5))
    path = tmp_path / "lat.fxlt"
    path.write_bytes(encode_latents(lat.numpy(), {"seed": 1}, "fxlt"))
    progress: list[int] = []
    (ours,) = run(sd, "enhance", {**ENHANCE, "latents": str(path)}, progress=progress)
    assert ours.info["upscaler"] == "latent" and progress[-1] == 2  # hires_steps run
    up = torch.nn.functional.interpolate(lat, size=(12, 16), mode="bilinear")
    assert max_diff(ours.images[0], _direct(direct, up)) <= 1


def test_batch_of_two_equals_each_alone(sd: Loaded, files: dict[str, Path]) -> None:
    ref = _ref(files["upscaler"])
    a = {**ENHANCE, "image": str(files["image"]), "upscaler": ref}
    b = {**a, "image": str(files["other"]), "seed": 99, "prompt": "a cat"}
    together = run(sd, "enhance", a, b)
    (alone_a,), (alone_b,) = run(sd, "enhance", a), run(sd, "enhance", b)
    assert np.array_equal(together[0].images[0], alone_a.images[0])
    assert np.array_equal(together[1].images[0], alone_b.images[0])


def test_cancel_between_upscale_tiles(sd: Loaded, files: dict[str, Path]) -> None:
    p = {**ENHANCE, "image": str(files["image"]), "upscaler": _ref(files["upscaler"])}
    with pytest.raises(Cancelled):
        run(sd, "enhance", p, cancel=lambda: True)


def test_progress_reports_upscale_tiles_then_hires_steps(
    sd: Loaded, files: dict[str, Path]
) -> None:
    p = {**ENHANCE, "image": str(files["image"]), "upscaler": _ref(files["upscaler"])}
    seen: list[tuple[str, int, int]] = []
    get_family("diffusion").run(
        sd, [WorkItem("j", "enhance", p)], lambda step, total, stage, _: seen.append(
            (stage, step, total)), lambda: False,
    )  # fmt: skip
    stages = [stage for stage, _, _ in seen]
    assert stages[0] == "upscale" and stages[-1] == "hires"
    assert stages.index("hires") == stages.count("upscale")  # every tile before any step
    assert [(s, t) for stage, s, t in seen if stage == "hires"] == [(1, 2), (2, 2)]
