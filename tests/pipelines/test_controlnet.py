"""ControlNets on the tiny models: the worker's images equal diffusers' ControlNet
pipelines called directly, several at once, img2img/inpaint, canny, batch invariance."""

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch
from diffusers import (
    ControlNetModel,
    StableDiffusionControlNetImg2ImgPipeline,
    StableDiffusionControlNetInpaintPipeline,
    StableDiffusionControlNetPipeline,
    StableDiffusionXLControlNetPipeline,
)
from PIL import Image

from pixelpool.pipelines.base import Loaded
from pixelpool.registry.controlnets import scan_controlnets
from pixelpool.testing.tiny_controlnet import write_tiny_controlnet

from .diffusion_helpers import BASE, MODELS, load, max_diff, run, write_image, write_mask

P = {**BASE, "steps": 2}


@pytest.fixture(scope="module")
def root(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("controlnets")
    write_tiny_controlnet(models_dir / MODELS["sd15"], root / "controlnet" / "a", seed=1)
    write_tiny_controlnet(models_dir / MODELS["sd15"], root / "controlnet" / "b", seed=2)
    write_tiny_controlnet(models_dir / MODELS["sdxl"], root / "controlnet" / "xl", seed=3)
    for i in range(2):
        write_image(root / f"control{i}.png", 64, 48, seed=10 + i)
    write_image(root / "init.png", 64, 48, seed=20)
    write_mask(root / "mask.png", 64, 48)
    return root


@pytest.fixture(scope="module")
def refs(root: Path) -> dict[str, dict[str, Any]]:
    return {e.name: e.to_ref() for e in scan_controlnets(root)}


@pytest.fixture(scope="module")
def sd(models_dir: Path) -> Loaded:
    return load(models_dir / MODELS["sd15"], "sd15")


def _cn(refs: dict, root: Path, name: str, image: int = 0, **kw: Any) -> dict[str, Any]:
    return {**refs[name], "image": str(root / f"control{image}.png"), **kw}


def _kw(p: dict[str, Any]) -> dict[str, Any]:
    return dict(
        prompt=p["prompt"], negative_prompt=p["negative_prompt"],
        num_inference_steps=p["steps"], guidance_scale=p["cfg_scale"],
        generator=torch.Generator("cpu").manual_seed(p["seed"]),
    )  # fmt: skip


def _direct(cls: Any, model: Loaded, *controlnets: Path) -> Any:
    """diffusers' own ControlNet pipeline on the model's weights (shared, not reloaded:
    it only reads them) with freshly loaded ControlNets."""
    nets = [ControlNetModel.from_pretrained(c, local_files_only=True) for c in controlnets]
    pipe = cls.from_pipe(model.obj, controlnet=nets[0] if len(nets) == 1 else nets)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_registry_scan(root: Path, refs: dict) -> None:
    (root / "controlnet" / "loose.safetensors").write_bytes(b"x")  # single files: skipped
    (root / "controlnet" / "notcn").mkdir()
    (root / "controlnet" / "notcn" / "config.json").write_text('{"_class_name": "UNet2D"}')
    found = {e.name: e.architecture for e in scan_controlnets(root)}
    assert found == {"a": "sd15", "b": "sd15", "xl": "sdxl"}


def test_txt2img_parity_and_changes_the_image(sd: Loaded, root: Path, refs: dict) -> None:
    cn = _cn(refs, root, "a", conditioning_scale=0.8, guidance_end=0.6)
    (ours,) = run(sd, "txt2img", {**P, "controlnets": [cn]})
    direct = _direct(StableDiffusionControlNetPipeline, sd,
                     root / "controlnet/a")  # fmt: skip
    ref = direct(image=Image.open(cn["image"]), width=64, height=48,
                 controlnet_conditioning_scale=0.8, control_guidance_end=0.6, **_kw(P))  # fmt: skip
    assert max_diff(ours.images[0], np.asarray(ref.images[0])) <= 1
    (plain,) = run(sd, "txt2img", P)
    assert max_diff(ours.images[0], plain.images[0]) > 10


def test_two_controlnets_at_once(sd: Loaded, root: Path, refs: dict) -> None:
    cns = [_cn(refs, root, "a", 0, conditioning_scale=0.5), _cn(refs, root, "b", 1)]
    (ours,) = run(sd, "txt2img", {**P, "controlnets": cns})
    direct = _direct(StableDiffusionControlNetPipeline, sd,
                     root / "controlnet/a", root / "controlnet/b")  # fmt: skip
    images = [Image.open(c["image"]) for c in cns]
    ref = direct(image=images, width=64, height=48, controlnet_conditioning_scale=[0.5, 1.0],
                 **_kw(P))  # fmt: skip
    assert max_diff(ours.images[0], np.asarray(ref.images[0])) <= 1


def test_batch_invariance_with_own_control_images(sd: Loaded, root: Path, refs: dict) -> None:
    a = {**P, "controlnets": [_cn(refs, root, "a", 0)]}
    b = {**P, "seed": 99, "controlnets": [_cn(refs, root, "a", 1)]}
    together = run(sd, "txt2img", a, b)
    for p, batched in zip((a, b), together, strict=True):
        (alone,) = run(sd, "txt2img", p)
        assert np.array_equal(alone.images[0], batched.images[0])


def test_img2img_and_inpaint_parity(sd: Loaded, root: Path, refs: dict) -> None:
    cn = _cn(refs, root, "a")
    init, mask = root / "init.png", root / "mask.png"
    p = {**P, "images": [str(init)], "strength": 1.0, "controlnets": [cn]}
    (ours,) = run(sd, "img2img", p)
    direct = _direct(StableDiffusionControlNetImg2ImgPipeline, sd,
                     root / "controlnet/a")  # fmt: skip
    # diffusers' img2img/inpaint default scale is 0.8; ours is 1.0 everywhere (as A1111's)
    ref = direct(image=Image.open(init), control_image=Image.open(cn["image"]), strength=1.0,
                 width=64, height=48, controlnet_conditioning_scale=1.0, **_kw(P))  # fmt: skip
    assert max_diff(ours.images[0], np.asarray(ref.images[0])) <= 1
    (ours,) = run(sd, "inpaint", {**p, "masks": [str(mask)]})
    direct = StableDiffusionControlNetInpaintPipeline.from_pipe(direct)
    ref = direct(image=Image.open(init), mask_image=Image.open(mask), strength=1.0,
                 control_image=Image.open(cn["image"]), width=64, height=48,
                 controlnet_conditioning_scale=1.0, **_kw(P))  # fmt: skip
    assert max_diff(ours.images[0], np.asarray(ref.images[0])) <= 1


def test_canny_preprocessor_is_opencv_canny(sd: Loaded, root: Path, refs: dict) -> None:
    cn = _cn(refs, root, "a", preprocessor="canny", canny_low=50, canny_high=150)
    (ours,) = run(sd, "txt2img", {**P, "controlnets": [cn]})
    edges = cv2.Canny(np.asarray(Image.open(cn["image"]).convert("RGB")), 50, 150)
    assert edges.any()
    Image.fromarray(np.stack([edges] * 3, axis=-1)).save(root / "edges.png")
    pre = {**cn, "preprocessor": "none", "image": str(root / "edges.png")}
    (fed,) = run(sd, "txt2img", {**P, "controlnets": [pre]})
    assert np.array_equal(ours.images[0], fed.images[0])


def test_sdxl_parity(root: Path, refs: dict, models_dir: Path) -> None:
    xl = load(models_dir / MODELS["sdxl"], "sdxl")
    cn = _cn(refs, root, "xl", conditioning_scale=0.7)
    (ours,) = run(xl, "txt2img", {**P, "controlnets": [cn]})
    direct = _direct(StableDiffusionXLControlNetPipeline, xl,
                     root / "controlnet/xl")  # fmt: skip
    ref = direct(image=Image.open(cn["image"]), width=64, height=48,
                 controlnet_conditioning_scale=0.7, **_kw(P))  # fmt: skip
    assert max_diff(ours.images[0], np.asarray(ref.images[0])) <= 1
