"""img2img and inpaint on the tiny SD 1.x model, against diffusers called directly."""

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionInpaintPipeline
from PIL import Image

from pixelpool.pipelines.base import Loaded
from pixelpool.pipelines.diffusion.images import fit_canvas

from .diffusion_helpers import BASE, MODELS, load, max_diff, run, write_image, write_mask


@pytest.fixture(scope="module")
def sd(models_dir: Path) -> Loaded:
    return load(models_dir / MODELS["sd15"], "sd15")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("inputs")
    return {
        "image": write_image(root / "in.png", 64, 48),
        "other": write_image(root / "other.png", 64, 48, seed=1),
        "mask": write_mask(root / "mask.png", 64, 48),
        "wide": write_image(root / "wide.png", 96, 48, seed=2),
        "rgba": write_image(root / "rgba.png", 64, 48, seed=3, mode="RGBA"),
    }


def _kw(p: dict) -> dict:
    return dict(
        negative_prompt=p["negative_prompt"],
        num_inference_steps=p["steps"],
        guidance_scale=p["cfg_scale"],
        generator=torch.Generator("cpu").manual_seed(p["seed"]),
    )


def test_img2img_parity(sd: Loaded, inputs: dict[str, Path], models_dir: Path) -> None:
    p = {**BASE, "images": [str(inputs["image"])], "strength": 0.6}
    (ours,) = run(sd, "img2img", p)
    direct = StableDiffusionImg2ImgPipeline.from_pretrained(
        models_dir / MODELS["sd15"], local_files_only=True, safety_checker=None
    )
    ref = direct(BASE["prompt"], image=Image.open(inputs["image"]), strength=0.6, **_kw(BASE))
    assert ours.seeds == [BASE["seed"]] and ours.images[0].shape == (48, 64, 3)
    assert max_diff(ours.images[0], np.asarray(ref.images[0])) <= 1


def test_inpaint_parity(sd: Loaded, inputs: dict[str, Path], models_dir: Path) -> None:
    p = {**BASE, "images": [str(inputs["image"])], "masks": [str(inputs["mask"])],
         "strength": 1.0}  # fmt: skip
    (ours,) = run(sd, "inpaint", p)
    direct = StableDiffusionInpaintPipeline.from_pretrained(
        models_dir / MODELS["sd15"], local_files_only=True, safety_checker=None
    )
    ref = direct(
        BASE["prompt"], image=Image.open(inputs["image"]), mask_image=Image.open(inputs["mask"]),
        width=64, height=48, strength=1.0, **_kw(BASE),
    )  # fmt: skip
    assert max_diff(ours.images[0], np.asarray(ref.images[0])) <= 1


def test_several_images_per_job_and_batching(sd: Loaded, inputs: dict[str, Path]) -> None:
    two = {**BASE, "images": [str(inputs["image"]), str(inputs["other"])], "strength": 0.5}
    (both,) = run(sd, "img2img", two)
    assert both.seeds == [BASE["seed"], BASE["seed"] + 1]
    (alone,) = run(sd, "img2img", {**two, "images": [str(inputs["other"])],
                                   "seed": BASE["seed"] + 1})  # fmt: skip
    assert max_diff(both.images[1], alone.images[0]) == 0
    # A batch of two jobs gives what each gives alone.
    a, b = run(sd, "img2img", {**two, "images": [str(inputs["image"])]}, {**two, "seed": 7})
    assert max_diff(a.images[0], both.images[0]) == 0 and len(b.images) == 2


def test_other_aspect_ratio_outpaints_on_an_extended_canvas(
    sd: Loaded, inputs: dict[str, Path], models_dir: Path
) -> None:
    p = {**BASE, "images": [str(inputs["image"])], "width": 128, "height": 48, "strength": 0.9}
    (out,) = run(sd, "img2img", p)
    assert out.images[0].shape == (48, 128, 3)
    canvas, mask = fit_canvas(Image.open(inputs["image"]).convert("RGB"), 128, 48)
    original = np.asarray(Image.open(inputs["image"]))
    assert np.array_equal(np.asarray(canvas)[:, 32:96], original)  # the input, centred
    assert np.array_equal(np.asarray(canvas)[:, :32], np.repeat(original[:, :1], 32, axis=1))
    assert (np.asarray(mask)[:, 32:96] == 0).all() and (np.asarray(mask)[:, :32] == 255).all()
    direct = StableDiffusionInpaintPipeline.from_pretrained(
        models_dir / MODELS["sd15"], local_files_only=True, safety_checker=None
    )
    ref = direct(BASE["prompt"], image=canvas, mask_image=mask, width=128, height=48,
                 strength=0.9, **_kw(BASE))  # fmt: skip
    assert max_diff(out.images[0], np.asarray(ref.images[0])) <= 1


def test_alpha_is_kept_and_masks_are_resized(sd: Loaded, inputs: dict[str, Path]) -> None:
    (out,) = run(sd, "img2img", {**BASE, "images": [str(inputs["rgba"])], "strength": 0.5})
    assert out.images[0].shape == (48, 64, 4)
    expected_alpha = np.asarray(Image.open(inputs["rgba"]))[:, :, 3]
    assert np.array_equal(out.images[0][:, :, 3], expected_alpha)
    big_mask = Path(str(inputs["mask"]).replace(".png", "-big.png"))
    Image.open(inputs["mask"]).resize((128, 96)).save(big_mask)
    p = {**BASE, "images": [str(inputs["image"])], "masks": [str(big_mask)], "strength": 1.0}
    (resized,) = run(sd, "inpaint", p)
    (exact,) = run(sd, "inpaint", {**p, "masks": [str(inputs["mask"])]})
    assert max_diff(resized.images[0], exact.images[0]) <= 8
