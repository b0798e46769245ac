"""IP-Adapters on the tiny models: the worker against diffusers given `ip_adapter_image=`
directly, batch invariance with each job's own references, scale switching without
reloading."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import AutoPipelineForImage2Image, DiffusionPipeline
from PIL import Image

from pixelpool.pipelines.base import Loaded
from pixelpool.pipelines.diffusion import ip_adapter as ipa
from pixelpool.registry.ip_adapters import IPAdapterEntry, scan_ip_adapters
from pixelpool.testing.tiny_ip_adapter import write_tiny_ip_adapter

from .diffusion_helpers import MODELS, load, max_diff, run, write_image

BASE = {"prompt": "a photo of a red fox", "negative_prompt": "blurry", "width": 64,
        "height": 64, "steps": 2, "cfg_scale": 6.5, "seed": 1234}  # fmt: skip


class Setup:
    def __init__(self, arch: str, model: Loaded, adapters: dict[str, IPAdapterEntry],
                 refs: list[Path], model_dir: Path) -> None:  # fmt: skip
        self.arch, self.model, self.adapters = arch, model, adapters
        self.refs, self.model_dir = refs, model_dir
        self.plain = _image(self, BASE)  # before any adapter was loaded
        self._direct: Any = None
        self._direct_variant = ""

    def direct_pipe(self, variant: str) -> Any:
        """One diffusers pipeline per model, its adapter loaded from the same files."""
        if self._direct is None:
            self._direct = DiffusionPipeline.from_pretrained(str(self.model_dir),
                                                             local_files_only=True)  # fmt: skip
            self._direct.set_progress_bar_config(disable=True)
        if self._direct_variant != variant:
            if self._direct_variant:
                self._direct.unload_ip_adapter()
            entry = self.adapters[variant]
            self._direct.load_ip_adapter(str(entry.path.parent), subfolder="",
                                         weight_name=entry.path.name)  # fmt: skip
            self._direct_variant = variant
        return self._direct

    def params(self, variant: str = "base", scale: float = 0.7, refs: list[int] = (0,),
               **extra: Any) -> dict[str, Any]:  # fmt: skip
        images = [str(self.refs[i]) for i in refs]
        return {**BASE, **extra, "ip_adapter": self.adapters[variant].to_wire(scale, images)}

    def direct(self, variant: str, scale: float, refs: list[int], **extra: Any) -> np.ndarray:
        """diffusers itself: load_ip_adapter from the same files, ip_adapter_image=."""
        pipe = self.direct_pipe(variant)
        pipe.set_ip_adapter_scale(scale)
        images = [Image.open(self.refs[i]).convert("RGB") for i in refs]
        p = {**BASE, **extra}
        out = pipe(
            p["prompt"], negative_prompt=p["negative_prompt"], width=p["width"],
            height=p["height"], num_inference_steps=p["steps"], guidance_scale=p["cfg_scale"],
            generator=torch.Generator("cpu").manual_seed(p["seed"]),
            ip_adapter_image=images[0] if len(images) == 1 else [images],
        ).images[0]  # fmt: skip
        return np.asarray(out)


@pytest.fixture(scope="module", params=["sd15", "sdxl"])
def setup(
    request: pytest.FixtureRequest, models_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Setup:
    arch = request.param
    root = tmp_path_factory.mktemp(f"ipa-{arch}")
    folder = root / "ip-adapter" / "models"
    for variant in ("base", "plus"):
        write_tiny_ip_adapter(models_dir / MODELS[arch], folder / f"ipa-{variant}.safetensors",
                              arch, plus=variant == "plus", seed=3)  # fmt: skip
    entries = {e.variant: e for e in scan_ip_adapters(root)}
    assert {e.architecture for e in entries.values()} == {arch}
    refs = [write_image(root / f"ref{i}.png", 40 + 8 * i, 48, seed=10 + i) for i in range(3)]
    return Setup(arch, load(models_dir / MODELS[arch], arch), entries, refs,
                 models_dir / MODELS[arch])  # fmt: skip


def _image(setup: Setup, params: dict[str, Any], op: str = "txt2img") -> np.ndarray:
    return run(setup.model, op, params)[0].images[0]


def test_parity_with_diffusers_and_differs_from_plain(setup: Setup) -> None:
    ours = _image(setup, setup.params())
    assert max_diff(ours, setup.direct("base", 0.7, [0])) <= 1  # sd15: 0, sdxl: 1
    assert max_diff(ours, setup.plain) > 10
    # Without references the adapter is detached: the plain model's image again.
    assert np.array_equal(_image(setup, BASE), setup.plain)
    assert ipa.loaded_key(setup.model.obj) and not ipa.is_attached(setup.model.obj)


def test_plus_variant_and_several_references(setup: Setup) -> None:
    if setup.arch != "sd15":
        pytest.skip("one architecture is enough for the variants")
    ours = _image(setup, setup.params("plus", 0.8, [0, 1]))
    assert max_diff(ours, setup.direct("plus", 0.8, [0, 1])) <= 1
    several = _image(setup, setup.params("base", 0.7, [0, 1]))
    assert max_diff(several, setup.direct("base", 0.7, [0, 1])) <= 1
    assert max_diff(several, _image(setup, setup.params("base", 0.7, [0]))) > 0


def test_batch_with_mixed_references_equals_each_alone(setup: Setup) -> None:
    if setup.arch != "sd15":
        pytest.skip("references enter the UNet the same way on SDXL (parity above)")
    jobs = [setup.params(refs=[0]), setup.params(refs=[2], seed=99, prompt="a blue house")]
    batched = [r.images[0] for r in run(setup.model, "txt2img", *jobs)]
    alone = [_image(setup, job) for job in jobs]
    for b, a in zip(batched, alone, strict=True):
        assert np.array_equal(b, a)


def test_scale_switches_without_reloading(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    if setup.arch != "sd15":
        pytest.skip("the adapter cache does not depend on the architecture")
    usual = _image(setup, setup.params(scale=0.7))
    pipe = setup.model.obj
    monkeypatch.setattr(pipe, "load_ip_adapter", lambda *a, **k: pytest.fail("reloaded"))
    zero = _image(setup, setup.params(scale=0.0))
    assert max_diff(zero, setup.plain) <= 1  # scale 0: the reference adds nothing
    assert max_diff(usual, zero) > 10


def test_img2img_with_a_reference(setup: Setup, tmp_path: Path) -> None:
    if setup.arch != "sd15":
        pytest.skip("img2img shares the base pipeline's UNet on every architecture")
    init = str(write_image(tmp_path / "init.png", 64, 64, seed=5))
    p = setup.params(images=[init], strength=0.8, steps=3)
    ours = _image(setup, p, "img2img")
    plain = _image(setup, {**p, "ip_adapter": None}, "img2img")
    assert max_diff(ours, plain) > 0
    direct = AutoPipelineForImage2Image.from_pipe(setup.direct_pipe("base"))
    direct.set_progress_bar_config(disable=True)
    direct.set_ip_adapter_scale(0.7)
    out = direct(
        BASE["prompt"], image=Image.open(init).convert("RGB"), strength=0.8,
        negative_prompt=BASE["negative_prompt"], num_inference_steps=3,
        guidance_scale=BASE["cfg_scale"], generator=torch.Generator().manual_seed(BASE["seed"]),
        ip_adapter_image=Image.open(setup.refs[0]).convert("RGB"), output_type="np",
    ).images[0]  # fmt: skip
    assert max_diff(ours, (out * 255).round().astype(np.uint8)) <= 1
