"""JTP-style tagger: a tiny timm SigLIP ViT; scores equal the reference transform and model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from safetensors.torch import load_model
from torchvision.transforms import InterpolationMode, transforms

from pixelpool.families.tag.params import TagParams
from pixelpool.pipelines.base import Loaded, WorkItem
from pixelpool.pipelines.tag.family import FAMILY, tag_images
from pixelpool.pipelines.tag.jtp import load_jtp
from pixelpool.testing.tiny_jtp import TINY_JTP_TAGS, build_tiny_jtp, write_tiny_jtp


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_jtp(tmp_path_factory.mktemp("jtp"))


def picture(height: int, width: int, seed: int, alpha: bool = False) -> Image.Image:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, 4 if alpha else 3)
    noise = rng.integers(-60, 60, (height, width, len(base)))
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))


def reference(path: Path, image: Image.Image) -> dict[str, float]:
    """The JTP demo's transform (Fit, ToTensor, CompositeAlpha, Normalize, CenterCrop) and
    model call, written out with torchvision; `side` is the tiny model's 28 for 384."""
    side = 28
    img = image.convert("RGBA")
    w, h = img.size
    scale = min(side / h, side / w)
    if scale != 1.0:
        img = TF.resize(img, (min(round(h * scale), side), min(round(w * scale), side)),
                        InterpolationMode.LANCZOS)  # fmt: skip
    tensor = transforms.ToTensor()(img)
    alpha = tensor[3:]
    tensor = tensor[:3] * alpha + (1.0 - alpha) * 0.5
    tensor = transforms.Normalize(mean=[0.5] * 3, std=[0.5] * 3)(tensor)
    tensor = transforms.CenterCrop((side, side))(tensor)
    model = build_tiny_jtp(seed=1)  # other random weights: load_model must overwrite them all
    load_model(model, str(path))
    with torch.no_grad():
        probits = model(tensor.unsqueeze(0))[0]
    tags = [t.replace("_", " ") for t in json.loads((path.parent / "tags.json").read_text())]
    return dict(zip(tags, probits.tolist(), strict=True))


@pytest.mark.parametrize(
    ("size", "alpha"), [((40, 24), False), ((20, 50), True), ((28, 28), False)]
)
def test_scores_equal_the_reference(checkpoint: Path, size: tuple[int, int], alpha: bool) -> None:
    img = picture(*size, seed=sum(size), alpha=alpha)
    model = load_jtp(checkpoint, "cpu")
    [out] = tag_images(model, [TagParams(image="x", general_threshold=0)], [img],
                       lambda *a: None, lambda: False)  # fmt: skip
    ref = reference(checkpoint, img)
    assert set(out["tags"]) == set(ref) and out["characters"] == {} and out["rating"] == {}
    assert max(abs(out["tags"][k] - ref[k]) for k in ref) <= 1 / 255


def test_batch_of_two_equals_each_alone(checkpoint: Path) -> None:
    model = load_jtp(checkpoint, "cpu")
    imgs = [picture(40, 24, seed=1), picture(30, 30, seed=2)]
    jobs = [TagParams(image="x", general_threshold=0)] * 2
    both = tag_images(model, jobs, imgs, lambda *a: None, lambda: False)
    for out, img in zip(both, imgs, strict=True):
        [alone] = tag_images(model, jobs[:1], [img], lambda *a: None, lambda: False)
        assert max(abs(out["tags"][k] - alone["tags"][k]) for k in alone["tags"]) <= 1e-5


def test_family_loads_jtp_by_suffix(checkpoint: Path, tmp_path: Path) -> None:
    picture(32, 32, seed=3).save(tmp_path / "a.png")
    loaded = FAMILY.load({"path": str(checkpoint)}, "cpu", "auto")
    assert isinstance(loaded, Loaded) and loaded.architecture == "jtp" and loaded.size_bytes > 0
    item = WorkItem("a", "tag", {"image": str(tmp_path / "a.png"), "general_threshold": 0,
                                 "top_k": 3})  # fmt: skip
    [result] = FAMILY.run(loaded, [item], lambda *a: None, lambda: False)
    assert len(result.info["tags"]) == 3
    assert set(result.info["tags"]) <= {t.replace("_", " ") for t in TINY_JTP_TAGS}
    assert FAMILY.move(loaded, "cpu").obj is loaded.obj
