"""vision family, SAM 3: results equal Sam3Model + Sam3Processor called directly, and a
job's result is the same alone or batched with others."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from transformers import Sam3Model, Sam3Processor

from pixelpool.families.vision.params import SegmentParams
from pixelpool.pipelines.base import Cancelled, Loaded
from pixelpool.pipelines.vision import model, segment
from pixelpool.testing.tiny_vision import write_tiny_sam3

from .vision_helpers import assert_same_result, load, picture, run


@pytest.fixture(scope="module")
def sam3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_sam3(tmp_path_factory.mktemp("vision") / "tiny-sam3")


@pytest.fixture(scope="module")
def loaded(sam3: Path) -> Loaded:
    return load(sam3, "sam3")


def direct(path: Path, image, threshold: float, mask_threshold: float, **inputs) -> dict:
    processor = Sam3Processor.from_pretrained(str(path), local_files_only=True)
    model = Sam3Model.from_pretrained(str(path), local_files_only=True).eval()
    enc = processor(images=image, return_tensors="pt", **inputs)
    with torch.inference_mode():
        out = model(**enc)
    return processor.post_process_instance_segmentation(
        out, threshold=threshold, mask_threshold=mask_threshold,
        target_sizes=[(image.height, image.width)],
    )[0]  # fmt: skip


def check_prompt(entry: dict, masks: np.ndarray, expected: dict) -> None:
    assert masks.dtype == bool and masks.shape[0] == len(entry["instances"])
    np.testing.assert_array_equal(masks, expected["masks"].numpy().astype(bool))
    boxes = [inst["box"] for inst in entry["instances"]]
    scores = [inst["score"] for inst in entry["instances"]]
    np.testing.assert_allclose(boxes, expected["boxes"].numpy().reshape(-1, 4), atol=1e-4)
    np.testing.assert_allclose(scores, expected["scores"].numpy(), atol=1e-4)
    assert [inst["mask"] for inst in entry["instances"]] == list(range(len(masks)))


def test_text_prompts_equal_transformers(sam3: Path, loaded: Loaded, tmp_path: Path) -> None:
    path, image = picture(tmp_path, 40, 70, seed=1)
    (result,) = run(loaded, "segment", [{"images": [path], "prompts": ["red car", "cat"],
                                         "threshold": 0.0, "mask_threshold": 0.5}])  # fmt: skip
    image_info = result.info["images"][0]
    assert (image_info["width"], image_info["height"]) == (70, 40)
    assert [p["prompt"] for p in image_info["prompts"]] == ["red car", "cat"]
    for entry in image_info["prompts"]:
        masks = result.arrays[entry["masks"]]
        assert masks.shape[1:] == (40, 70) and masks.any()
        check_prompt(entry, masks, direct(sam3, image, 0.0, 0.5, text=entry["prompt"]))


def test_a_published_sam3_video_config_loads_the_same_detector(
    sam3: Path, loaded: Loaded, tmp_path: Path
) -> None:
    video = write_tiny_sam3(tmp_path / "sam3-video", video_config=True)
    assert '"model_type": "sam3_video"' in (video / "config.json").read_text()
    path = picture(tmp_path, 40, 50, seed=8)[0]
    job = {"images": [path], "prompts": ["cat"], "threshold": 0.0}
    (mine,) = run(load(video, "sam3_video"), "segment", [job])
    (plain,) = run(loaded, "segment", [job])
    assert mine.info.pop("architecture") == "sam3_video"
    plain.info.pop("architecture")
    assert_same_result(mine, plain, atol=0)


def test_box_prompt_equals_transformers(sam3: Path, loaded: Loaded, tmp_path: Path) -> None:
    path, image = picture(tmp_path, 48, 48, seed=2)
    boxes, labels = [[4.0, 6.0, 30.0, 40.0], [20.0, 2.0, 44.0, 20.0]], [1, 0]
    params = {"images": [path], "boxes": [boxes], "box_labels": [labels], "threshold": 0.2}
    (result,) = run(loaded, "segment", [params])
    (entry,) = result.info["images"][0]["prompts"]
    assert entry["prompt"] == "visual"
    expected = direct(sam3, image, 0.2, 0.5, input_boxes=[boxes], input_boxes_labels=[labels])
    check_prompt(entry, result.arrays[entry["masks"]], expected)


@pytest.mark.parametrize("rows", [0, 2], ids=["one-forward", "chunks-of-2"])
def test_batched_jobs_equal_jobs_alone(
    loaded: Loaded, tmp_path: Path, rows: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    if rows:  # several forward passes per stage, as a large batch makes
        monkeypatch.setattr(segment, "DECODE_ROWS", rows)
        monkeypatch.setattr(model, "ENCODE_ROWS", rows)
    a = {"images": [picture(tmp_path, 40, 70, 3)[0], picture(tmp_path, 64, 32, 4)[0]],
         "prompts": ["person", "dog"], "threshold": 0.0}  # fmt: skip
    b = {"images": [picture(tmp_path, 50, 50, 5)[0]], "prompts": ["tree"],
         "boxes": [[[1.0, 1.0, 20.0, 30.0]]], "threshold": 0.1, "mask_threshold": 0.4}  # fmt: skip
    c = {"images": [picture(tmp_path, 40, 70, 3)[0]], "prompts": ["cat"], "threshold": 0.0}
    together = run(loaded, "segment", [a, b, c])
    for job, batched in zip([a, b, c], together, strict=True):
        (alone,) = run(loaded, "segment", [job])
        assert_same_result(batched, alone)


def test_a_prompt_too_long_for_the_text_encoder_is_cut(loaded: Loaded, tmp_path: Path) -> None:
    path = picture(tmp_path, 32, 32, 7)[0]
    long = " ".join(["cat"] * 40)
    cut = " ".join(["cat"] * 30)  # 30 words + start and end tokens: the 32 that fit
    (a,) = run(loaded, "segment", [{"images": [path], "prompts": [long], "threshold": 0.0}])
    (b,) = run(loaded, "segment", [{"images": [path], "prompts": [cut], "threshold": 0.0}])
    assert a.info["images"][0]["prompts"][0]["prompt"] == long
    np.testing.assert_array_equal(a.arrays["masks/0/0"], b.arrays["masks/0/0"])


def test_cancel_stops_before_the_model_runs(loaded: Loaded, tmp_path: Path) -> None:
    job = {"images": [picture(tmp_path, 32, 32, 6)[0]], "prompts": ["cat"]}
    with pytest.raises(Cancelled):
        run(loaded, "segment", [job], cancel=lambda: True)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"prompts": []}, "give prompts or boxes"),
        ({"prompts": ["  "]}, "a prompt is empty"),
        ({"prompts": ["cat"], "threshold": 1.5}, "threshold"),
        ({"boxes": [[[0, 0, 1, 1]], [[0, 0, 1, 1]]]}, "one list per image"),
        ({"boxes": [[[5, 0, 1, 1]]]}, "x1 >= x0"),
        ({"boxes": [[[0, 0, 1, 1]]], "box_labels": [[2]]}, "1 \\(positive\\) or 0"),
        ({"prompts": ["cat"], "points": [[1, 2]]}, "points"),
    ],
)
def test_bad_params_name_the_problem(params: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        SegmentParams.model_validate({"images": ["x.png"], **params})


def test_batch_key_is_the_operation() -> None:
    p = SegmentParams(images=["a.png"], prompts=["cat"], threshold=0.3)
    q = SegmentParams(images=["b.png", "c.png"], prompts=["dog"], threshold=0.9)
    assert p.batch_key() == q.batch_key() == ("segment",)
