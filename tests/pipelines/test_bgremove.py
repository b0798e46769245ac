"""bgremove family: tiny ONNX segmenters; output equals onnxruntime with rembg's processing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from pixelpool.families.bgremove.params import BgRemoveParams
from pixelpool.pipelines.base import Cancelled, Loaded, WorkItem
from pixelpool.pipelines.bgremove.family import FAMILY, load_segmenter, remove_backgrounds
from pixelpool.testing.tiny_onnx import write_tiny_segmenter


def picture(height: int = 40, width: int = 50, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def rembg_reference(path: Path, img: Image.Image, size: int, mean, std, divide_max=False,
                    logits=False) -> np.ndarray:  # fmt: skip
    """rembg's U²-Net session, written out: normalize, run, (sigmoid,) min-max, resize."""
    im = np.array(img.convert("RGB").resize((size, size), Image.Resampling.LANCZOS))
    im = im / (max(np.max(im), 1e-6) if divide_max else 255.0)
    tmp = np.zeros((size, size, 3))
    for c in range(3):
        tmp[:, :, c] = (im[:, :, c] - mean[c]) / std[c]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = {session.get_inputs()[0].name: np.expand_dims(tmp.transpose(2, 0, 1), 0).astype("f4")}
    pred = session.run(None, x)[0][:, 0, :, :]
    if logits:
        pred = 1 / (1 + np.exp(-pred))
    pred = np.squeeze((pred - pred.min()) / (pred.max() - pred.min()))
    mask = Image.fromarray((pred * 255).astype("uint8"), mode="L")
    return np.asarray(mask.resize(img.size, Image.Resampling.LANCZOS))


def cut(model, img, mask=None, **params):
    p = BgRemoveParams(image="unused", **params)
    return remove_backgrounds(model, [p], [(img, mask)], lambda *a: None, lambda: False)[0]


def test_u2net_style_matches_rembg(tmp_path: Path) -> None:
    path = write_tiny_segmenter(tmp_path / "u2net.onnx", size=32)
    model = load_segmenter(str(path), "cpu")
    assert (model.extra.height, model.extra.width) == (32, 32)  # from the graph's input
    img = picture()
    out = cut(model, img)
    ref = rembg_reference(path, img, 32, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert out.shape == (40, 50, 4) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[:, :, :3], np.asarray(img))
    assert np.abs(out[:, :, 3].astype(int) - ref).max() <= 1
    assert out[:, :, 3].min() < 64 and out[:, :, 3].max() > 192  # min-max stretched


def test_sidecar_sets_size_normalisation_and_logits(tmp_path: Path) -> None:
    sidecar = {"size": [32, 32], "mean": [0.5, 0.5, 0.5], "std": [1.0, 1.0, 1.0],
               "divide": "max", "output": "logits"}  # fmt: skip
    path = write_tiny_segmenter(tmp_path / "birefnet.onnx", size=32, logits=True, sidecar=sidecar)
    model = load_segmenter(str(path), "cpu")
    img = picture(30, 20, seed=3)
    mask = cut(model, img, mask_only=True)
    ref = rembg_reference(path, img, 32, (0.5,) * 3, (1.0,) * 3, divide_max=True, logits=True)
    assert mask.shape == (30, 20) and mask.dtype == np.uint8
    assert np.abs(mask.astype(int) - ref).max() <= 1


def test_a_bad_sidecar_names_the_file(tmp_path: Path) -> None:
    path = write_tiny_segmenter(tmp_path / "m.onnx", sidecar={"output": "odds"})
    with pytest.raises(ValueError, match=r"(?s)m\.toml.*output"):
        load_segmenter(str(path), "cpu")


def test_input_alpha_multiplies_the_mask(tmp_path: Path) -> None:
    model = load_segmenter(str(write_tiny_segmenter(tmp_path / "m.onnx")), "cpu")
    img = picture()
    alpha = np.zeros((40, 50), np.uint8)
    alpha[:, 25:] = 255
    out = cut(model, img, alpha)
    mask = cut(model, img, mask_only=True)
    assert (out[:, :25, 3] == 0).all()
    np.testing.assert_array_equal(out[:, 25:, 3], mask[:, 25:])


@pytest.mark.parametrize("dynamic", [False, True])
def test_batch_of_two_equals_each_alone(tmp_path: Path, dynamic: bool) -> None:
    path = write_tiny_segmenter(tmp_path / "m.onnx", dynamic_batch=dynamic)
    model = load_segmenter(str(path), "cpu")
    assert model.fixed_batch() is not dynamic
    imgs = [picture(seed=1), picture(24, 36, seed=2)]
    steps: list[tuple[int, int]] = []
    jobs = [BgRemoveParams(image="a"), BgRemoveParams(image="b", mask_only=True)]
    both = remove_backgrounds(model, jobs, [(i, None) for i in imgs],
                              lambda s, t, *_: steps.append((s, t)), lambda: False)  # fmt: skip
    assert steps == ([(1, 1)] if dynamic else [(1, 2), (2, 2)])  # one run, or one per image
    for out, img, p in zip(both, imgs, jobs, strict=True):
        alone = remove_backgrounds(model, [p], [(img, None)], lambda *a: None, lambda: False)[0]
        assert np.abs(out.astype(int) - alone).max() <= 1


def test_cancel_stops_before_a_run(tmp_path: Path) -> None:
    model = load_segmenter(str(write_tiny_segmenter(tmp_path / "m.onnx")), "cpu")
    with pytest.raises(Cancelled):
        remove_backgrounds(model, [BgRemoveParams(image="x")], [(picture(), None)],
                           lambda *a: None, lambda: True)  # fmt: skip


def test_family_load_move_run(tmp_path: Path) -> None:
    path = write_tiny_segmenter(tmp_path / "isnet.onnx")
    Image.fromarray(np.dstack([np.asarray(picture()), np.full((40, 50), 255, np.uint8)])).save(
        tmp_path / "in.png"
    )
    loaded = FAMILY.load({"path": str(path), "architecture": "isnet"}, "cpu", "auto")
    assert isinstance(loaded, Loaded) and loaded.size_bytes == path.stat().st_size
    assert FAMILY.move(loaded, "cpu") is loaded
    image = str(tmp_path / "in.png")
    items = [WorkItem("a", "bgremove", {"image": image}),
             WorkItem("b", "bgremove", {"image": image, "mask_only": True})]  # fmt: skip
    cut_out, mask = FAMILY.run(loaded, items, lambda *a: None, lambda: False)
    assert cut_out.images[0].shape == (40, 50, 4) and mask.images[0].shape == (40, 50)
    np.testing.assert_array_equal(cut_out.images[0][:, :, 3], mask.images[0])
