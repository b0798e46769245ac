"""tag family: a tiny WD-style tagger; scores equal onnxruntime with the reference processing."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from pixelpool.families.tag.params import TagParams
from pixelpool.pipelines.base import Cancelled, Loaded, WorkItem
from pixelpool.pipelines.tag.family import FAMILY, load_tagger, tag_images
from pixelpool.pipelines.tag.labels import mcut_threshold
from pixelpool.testing.tiny_onnx import TINY_TAGS, write_tiny_wd_tagger

KAOMOJIS = ["0_0", "(o)_(o)", "+_+", "+_-", "._.", "<o>_<o>", "<|>_<|>", "=_=", ">_<", "3_3",
            "6_9", ">_o", "@_@", "^_^", "o_o", "u_u", "x_x", "|_|", "||_||"]  # fmt: skip


@pytest.fixture(scope="module")
def tagger(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_wd_tagger(tmp_path_factory.mktemp("wd"), size=32) / "model.onnx"


def picture(height: int = 40, width: int = 24, seed: int = 0, alpha: bool = False) -> Image.Image:
    """Noise around a colour that differs per seed, so that scores differ too."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, 4 if alpha else 3)
    noise = rng.integers(-40, 40, (height, width, len(base)))
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))


def reference(path: Path, image: Image.Image) -> dict[str, dict[str, float]]:
    """The WD tagger demo's prepare_image and predict, written out (no thresholds: all)."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    _, height, _, _ = session.get_inputs()[0].shape
    canvas = Image.new("RGBA", image.size, (255, 255, 255))
    canvas.alpha_composite(image.convert("RGBA"))
    image = canvas.convert("RGB")
    max_dim = max(image.size)
    pad_left, pad_top = (max_dim - image.size[0]) // 2, (max_dim - image.size[1]) // 2
    padded = Image.new("RGB", (max_dim, max_dim), (255, 255, 255))
    padded.paste(image, (pad_left, pad_top))
    if max_dim != height:
        padded = padded.resize((height, height), Image.BICUBIC)
    array = np.expand_dims(np.asarray(padded, dtype=np.float32)[:, :, ::-1], axis=0)
    preds = session.run([session.get_outputs()[0].name], {session.get_inputs()[0].name: array})
    with (path.parent / "selected_tags.csv").open() as f:
        rows = list(csv.DictReader(f))
    names = [r["name"].replace("_", " ") if r["name"] not in KAOMOJIS else r["name"] for r in rows]
    labels = list(zip(names, preds[0][0].astype(float), strict=True))
    by_category = {c: dict(x for x, r in zip(labels, rows, strict=True) if r["category"] == c)
                   for c in ("0", "4", "9")}  # fmt: skip
    return {"tags": by_category["0"], "characters": by_category["4"], "rating": by_category["9"]}


def run(path: Path, images: list[Image.Image], **params) -> list[dict]:
    jobs = [TagParams(image="unused", **params) for _ in images]
    return tag_images(load_tagger(path, "cpu"), jobs, images, lambda *a: None, lambda: False)


def assert_close(got: dict[str, float], want: dict[str, float]) -> None:
    assert set(got) == set(want)
    for name, score in got.items():
        assert abs(score - want[name]) <= 1 / 255


@pytest.mark.parametrize("alpha", [False, True])
def test_scores_equal_the_reference(tagger: Path, alpha: bool) -> None:
    img = picture(alpha=alpha)
    [out] = run(tagger, [img], general_threshold=0, character_threshold=0)
    ref = reference(tagger, img)
    for key in ("tags", "characters", "rating"):
        assert_close(out[key], ref[key])
    assert "long hair" in out["tags"] and "^_^" in out["tags"]  # kaomoji keep underscores
    assert list(out["tags"].values()) == sorted(out["tags"].values(), reverse=True)


def test_thresholds_and_top_k(tagger: Path) -> None:
    img = picture(seed=4)
    ref = reference(tagger, img)
    [out] = run(tagger, [img], general_threshold=0.3, character_threshold=0.4, top_k=2)
    want = sorted((v, k) for k, v in ref["tags"].items() if v > 0.3)[::-1][:2]
    assert len(want) == 2 and list(out["tags"]) == [k for _, k in want]
    chars = {k for k, v in ref["characters"].items() if v > 0.4}
    assert set(out["characters"]) <= chars and len(out["characters"]) == min(2, len(chars))
    assert len(out["rating"]) == 4  # every rating, whatever the thresholds
    [raw] = run(tagger, [img], general_threshold=0, replace_underscores=False)
    assert "long_hair" in raw["tags"]


def test_mcut(tagger: Path) -> None:
    assert mcut_threshold(np.array([0.9, 0.8, 0.2, 0.1])) == pytest.approx(0.5)
    img = picture(seed=5)
    general = reference(tagger, img)["tags"]
    [out] = run(tagger, [img], general_mcut=True)
    cut = mcut_threshold(np.array(list(general.values())))
    assert set(out["tags"]) == {k for k, v in general.items() if v > cut}


def test_batch_of_two_is_one_run_and_equals_each_alone(tagger: Path) -> None:
    imgs = [picture(seed=1), picture(64, 30, seed=2)]
    model = load_tagger(tagger, "cpu")
    assert not model.fixed_batch()  # WD exports take a batch
    both = run(tagger, imgs, general_threshold=0)
    for out, img in zip(both, imgs, strict=True):
        [alone] = run(tagger, [img], general_threshold=0)
        assert_close(out["tags"], alone["tags"])
    assert max(abs(both[0]["tags"][k] - both[1]["tags"][k]) for k in both[0]["tags"]) > 0.05


def test_cancel_and_label_mismatch(tagger: Path, tmp_path: Path) -> None:
    model = load_tagger(tagger, "cpu")
    with pytest.raises(Cancelled):
        tag_images(model, [TagParams(image="x")], [picture()], lambda *a: None, lambda: True)
    other = write_tiny_wd_tagger(tmp_path)
    lines = (other / "selected_tags.csv").read_text().splitlines()
    (other / "selected_tags.csv").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(ValueError, match="outputs but"):
        load_tagger(other / "model.onnx", "cpu")


def test_family_load_run(tagger: Path, tmp_path: Path) -> None:
    picture().save(tmp_path / "a.png")
    loaded = FAMILY.load({"path": str(tagger)}, "cpu", "auto")
    assert isinstance(loaded, Loaded) and loaded.size_bytes > 0 and loaded.family == "tag"
    items = [WorkItem(str(i), "tag", {"image": str(tmp_path / "a.png")}) for i in range(2)]
    results = FAMILY.run(loaded, items, lambda *a: None, lambda: False)
    assert [set(r.info) for r in results] == [{"tags", "characters", "rating"}] * 2
    assert results[0].info == results[1].info and results[0].images == []
    assert len(TINY_TAGS) == len(load_tagger(tagger, "cpu").extra.names)
