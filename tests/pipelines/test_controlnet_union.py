"""Union ControlNets (SDXL's ControlNetUnionModel) on the tiny SDXL model: the worker's
images equal diffusers' union pipeline called directly, and a batch of requests with
their own control images equals each request alone."""

from pathlib import Path

import numpy as np
import torch
from diffusers import ControlNetUnionModel, StableDiffusionXLControlNetUnionPipeline
from PIL import Image

from pixelpool.pipelines.diffusion.controlnet import OneImageAtATime
from pixelpool.registry.controlnets import scan_controlnets
from pixelpool.testing.tiny_controlnet import (
    build_tiny_union_controlnet,
    write_tiny_union_controlnet,
)

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


def test_a_batch_mates_control_image_does_not_reach_an_image(models_dir: Path) -> None:
    """The union model's transformer attends across the rows of its call (diffusers passes
    it (batch, tokens, width) where attention expects (tokens, batch, width)), so run
    whole, an image's residuals depend on its batch-mates' control images; each image's
    rows go through it alone instead. Rows as the pipeline lays them out under guidance:
    every image's unconditional row, then every image's conditional row."""
    net = build_tiny_union_controlnet(models_dir / MODELS["sdxl"], seed=5)
    raw = net.forward
    net.forward = OneImageAtATime(raw)
    g = torch.Generator().manual_seed(0)
    rows, c = 4, net.config  # two images, each an unconditional and a conditional row
    sample = torch.randn(rows, 4, 6, 8, generator=g)
    text = torch.randn(rows, 7, c.cross_attention_dim, generator=g)
    pooled = c.projection_class_embeddings_input_dim - 6 * c.addition_time_embed_dim
    added = {"text_embeds": torch.randn(rows, pooled, generator=g),
             "time_ids": torch.randn(rows, 6, generator=g)}  # fmt: skip
    control = torch.randn(rows, 3, 48, 64, generator=g)
    control[[1, 3]] = -50 * control[[0, 2]]  # a batch-mate unlike this image: its mark shows
    kinds = torch.zeros(rows, c.num_control_type)
    kinds[:, 1] = 1

    def call(forward: object, idx: list[int], images: int) -> list[torch.Tensor]:
        net.forward.images = images
        with torch.no_grad():
            down, mid = forward(
                sample[idx], torch.tensor(500), encoder_hidden_states=text[idx],
                controlnet_cond=[control[idx]], control_type=kinds[idx], control_type_idx=[1],
                added_cond_kwargs={k: v[idx] for k, v in added.items()}, return_dict=False,
            )  # fmt: skip
        return [*down, mid]

    alone = call(net, [0, 2], 1)
    in_batch = call(net, [0, 1, 2, 3], 2)
    for solo, both in zip(alone, in_batch, strict=True):
        assert torch.equal(both[[0, 2]], solo)
    whole = call(raw, [0, 1, 2, 3], 2)  # what the model does unaided: far past rounding
    assert max((w[[0, 2]] - a).abs().max().item() for w, a in zip(whole, alone, strict=True)) > 1e-3
