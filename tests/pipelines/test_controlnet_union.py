"""Union ControlNets (SDXL's ControlNetUnionModel) on the tiny SDXL model: the worker's
images equal diffusers' union pipeline called directly, and a batch of requests with
their own control images equals each request alone."""

from pathlib import Path

import numpy as np
import torch
from diffusers import ControlNetUnionModel, StableDiffusionXLControlNetUnionPipeline
from PIL import Image

from pixelpool.registry.controlnets import scan_controlnets
from pixelpool.testing.tiny_controlnet import write_tiny_union_controlnet

from .diffusion_helpers import BASE, MODELS, load, max_diff, run, write_image

P = {**BASE, "steps": 2}


def test_union_parity_and_batch(models_dir: Path, tmp_path: Path) -> None:
    write_tiny_union_controlnet(models_dir / MODELS["sdxl"], tmp_path / "controlnet/u", seed=4)
    (found,) = scan_controlnets(tmp_path)
    assert found.union and found.architecture == "sdxl" and found.control_types == 6
    images = [write_image(tmp_path / f"c{i}.png", 64, 48, seed=30 + i) for i in range(2)]
    cn = {**found.to_ref(), "control_mode": 3, "conditioning_scale": 0.7}
    xl = load(models_dir / MODELS["sdxl"], "sdxl")
    first = {**P, "controlnets": [{**cn, "image": str(images[0])}]}
    (ours,) = run(xl, "txt2img", first)

    net = ControlNetUnionModel.from_pretrained(found.path, local_files_only=True)
    direct = StableDiffusionXLControlNetUnionPipeline.from_pipe(xl.obj, controlnet=net)
    direct.set_progress_bar_config(disable=True)
    ref = direct(
        P["prompt"], negative_prompt=P["negative_prompt"], control_image=[Image.open(images[0])],
        control_mode=[3], width=64, height=48, num_inference_steps=2,
        guidance_scale=P["cfg_scale"], controlnet_conditioning_scale=0.7,
        generator=torch.Generator("cpu").manual_seed(P["seed"]),
    )  # fmt: skip
    assert max_diff(ours.images[0], np.asarray(ref.images[0])) <= 1

    second = {**P, "seed": 77, "controlnets": [{**cn, "image": str(images[1])}]}
    together = run(xl, "txt2img", first, second)
    assert np.array_equal(together[0].images[0], ours.images[0])
    assert max_diff(together[1].images[0], ours.images[0]) > 0
