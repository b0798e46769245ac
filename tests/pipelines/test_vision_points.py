"""vision family, SAM 3 point prompts: results equal Sam3TrackerModel + Sam3TrackerProcessor
called directly (from a sam3_tracker folder, and from the full SAM 3 checkpoint's
tracker), and a job's result is the same alone or batched with others."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from transformers import Sam3TrackerModel, Sam3TrackerProcessor

from pixelpool.families.vision import prompt_problem
from pixelpool.families.vision.params import MAX_POINTS, SegmentParams
from pixelpool.pipelines.base import Loaded
from pixelpool.pipelines.vision import model, tracker
from pixelpool.testing.tiny_vision import write_tiny_sam3_full, write_tiny_sam3_tracker

from .vision_helpers import assert_same_result, load, picture, run

POINTS = [[[10.0, 20.0], [30.0, 5.0]], [[50.0, 30.0]]]  # two objects, for a 70x40 image
LABELS = [[1, 0], [1]]


@pytest.fixture(scope="module")
def tracker_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_sam3_tracker(tmp_path_factory.mktemp("vision") / "tiny-sam3-tracker")


@pytest.fixture(scope="module")
def loaded(tracker_dir: Path) -> Loaded:
    return load(tracker_dir, "sam3_tracker")


def direct(path: Path, image, multimask: bool = False, **prompts) -> tuple[np.ndarray, list]:
    """Masks (objects x candidates flattened, H, W) and predicted IoUs, as transformers
    gives them for this one image."""
    processor = Sam3TrackerProcessor.from_pretrained(str(path), local_files_only=True)
    net = Sam3TrackerModel.from_pretrained(
        str(path), local_files_only=True, key_mapping=tracker.KEY_MAPPING
    ).eval()
    enc = processor(images=image, return_tensors="pt", **prompts)
    with torch.inference_mode():
        out = net(**enc, multimask_output=multimask)
    masks = processor.post_process_masks(out.pred_masks, enc["original_sizes"])[0]
    flat = masks.reshape(-1, image.height, image.width).numpy().astype(bool)
    return flat, out.iou_scores[0].reshape(-1).tolist()


def check(entry: dict, masks: np.ndarray, expected: tuple[np.ndarray, list], per: int) -> None:
    want_masks, want_scores = expected
    assert masks.dtype == bool
    np.testing.assert_array_equal(masks, want_masks)
    np.testing.assert_allclose([i["score"] for i in entry["instances"]], want_scores, atol=1e-4)
    assert [i["mask"] for i in entry["instances"]] == list(range(len(masks)))
    assert [i["object"] for i in entry["instances"]] == [k // per for k in range(len(masks))]
    for inst, mask in zip(entry["instances"], masks, strict=True):
        ys, xs = np.nonzero(mask)
        box = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] if len(xs) else [0, 0, 0, 0]
        assert inst["box"] == [float(v) for v in box]


@pytest.mark.parametrize("multimask", [False, True], ids=["best-mask", "three-masks"])
def test_points_equal_transformers(
    tracker_dir: Path, loaded: Loaded, tmp_path: Path, multimask: bool
) -> None:
    path, image = picture(tmp_path, 40, 70, seed=1)
    job = {"images": [path], "points": [POINTS], "point_labels": [LABELS],
           "multimask_output": multimask}  # fmt: skip
    (result,) = run(loaded, "segment", [job])
    (entry,) = result.info["images"][0]["prompts"]
    assert entry["prompt"] == "points" and result.info["architecture"] == "sam3_tracker"
    masks = result.arrays[entry["masks"]]
    per = 3 if multimask else 1
    assert masks.shape == (2 * per, 40, 70)
    expected = direct(tracker_dir, image, multimask, input_points=[POINTS], input_labels=[LABELS])
    check(entry, masks, expected, per)


def test_points_with_boxes_and_boxes_alone_equal_transformers(
    tracker_dir: Path, loaded: Loaded, tmp_path: Path
) -> None:
    path, image = picture(tmp_path, 48, 64, seed=2)
    boxes = [[4.0, 6.0, 30.0, 40.0], [20.0, 2.0, 60.0, 20.0]]
    points = [[[10.0, 20.0]], [[40.0, 10.0]]]
    (both,) = run(loaded, "segment", [{"images": [path], "points": [points], "boxes": [boxes]}])
    (entry,) = both.info["images"][0]["prompts"]
    expected = direct(tracker_dir, image, input_points=[points], input_boxes=[boxes])
    check(entry, both.arrays[entry["masks"]], expected, 1)

    (alone,) = run(loaded, "segment", [{"images": [path], "boxes": [boxes]}])
    (entry,) = alone.info["images"][0]["prompts"]
    assert entry["prompt"] == "boxes"  # a tracker takes boxes as objects, not exemplars
    check(entry, alone.arrays[entry["masks"]], direct(tracker_dir, image, input_boxes=[boxes]), 1)


def test_full_sam3_checkpoint_takes_text_and_points_in_one_job(tmp_path: Path) -> None:
    """A sam3_video folder: text runs the detector, points the tracker loaded from the
    same weights (tracker_model.* / tracker_neck.*), as transformers loads it."""
    from transformers import Sam3Model, Sam3Processor

    full = write_tiny_sam3_full(tmp_path / "sam3-full")
    path, image = picture(tmp_path, 40, 70, seed=3)
    loaded_full = load(full, "sam3_video")
    assert loaded_full.obj.tracker is None  # loaded on the first point job
    job = {"images": [path], "prompts": ["cat"], "points": [POINTS], "threshold": 0.0}
    (result,) = run(loaded_full, "segment", [job])
    trk = loaded_full.obj.tracker[0]
    assert trk.vision_encoder.backbone is loaded_full.obj.model.vision_encoder.backbone
    text, points = result.info["images"][0]["prompts"]
    assert (text["prompt"], points["prompt"]) == ("cat", "points")
    # labels given: without them transformers labels the padding point 1 (foreground)
    expected = direct(full, image, input_points=[POINTS], input_labels=[[[1, 1], [1]]])
    check(points, result.arrays[points["masks"]], expected, 1)

    processor = Sam3Processor.from_pretrained(str(full), local_files_only=True)
    detector = Sam3Model.from_pretrained(str(full), local_files_only=True).eval()
    enc = processor(images=image, text="cat", return_tensors="pt")
    with torch.inference_mode():
        out = detector(**enc)
    found = processor.post_process_instance_segmentation(
        out, threshold=0.0, mask_threshold=0.5, target_sizes=[(40, 70)]
    )[0]
    np.testing.assert_array_equal(result.arrays[text["masks"]], found["masks"].numpy())


@pytest.mark.parametrize("rows", [0, 1], ids=["one-forward", "one-per-forward"])
def test_batched_jobs_equal_jobs_alone(
    loaded: Loaded, tmp_path: Path, rows: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    if rows:
        monkeypatch.setattr(tracker, "DECODE_ROWS", rows)
        monkeypatch.setattr(model, "ENCODE_ROWS", rows)
    a = {"images": [picture(tmp_path, 40, 70, 4)[0], picture(tmp_path, 64, 32, 5)[0]],
         "points": [POINTS, [[[3.0, 4.0]]]]}  # fmt: skip
    b = {"images": [picture(tmp_path, 50, 50, 6)[0]], "points": [[[[5.0, 5.0], [20.0, 30.0]]]],
         "point_labels": [[[1, 0]]], "boxes": [[[1.0, 1.0, 40.0, 45.0]]],
         "multimask_output": True, "mask_threshold": 0.3}  # fmt: skip
    c = {"images": [picture(tmp_path, 40, 70, 4)[0]], "points": [POINTS]}
    together = run(loaded, "segment", [a, b, c])
    for job, batched in zip([a, b, c], together, strict=True):
        (alone,) = run(loaded, "segment", [job])
        assert_same_result(batched, alone)


def test_an_image_without_objects_gets_an_empty_entry(loaded: Loaded, tmp_path: Path) -> None:
    job = {"images": [picture(tmp_path, 32, 32, 7)[0], picture(tmp_path, 40, 70, 8)[0]],
           "points": [[], POINTS]}  # fmt: skip
    (result,) = run(loaded, "segment", [job])
    (empty,) = result.info["images"][0]["prompts"]
    assert empty["instances"] == [] and result.arrays[empty["masks"]].shape == (0, 32, 32)
    assert len(result.info["images"][1]["prompts"][0]["instances"]) == 2


def test_text_prompts_to_a_tracker_fail_the_job(loaded: Loaded, tmp_path: Path) -> None:
    job = {"images": [picture(tmp_path, 32, 32, 9)[0]], "prompts": ["cat"]}
    with pytest.raises(ValueError, match="not text prompts"):
        run(loaded, "segment", [job])


def test_each_model_kind_names_the_prompt_it_cannot_take() -> None:
    text = SegmentParams(images=["a.png"], prompts=["cat"])
    points = SegmentParams(images=["a.png"], points=[[[[1, 2]]]])
    assert prompt_problem("trk", "sam3_tracker", text)[0] == "prompts"
    assert prompt_problem("plain", "sam3", points)[0] == "points"
    assert prompt_problem("full", "sam3_video", text) is None
    assert prompt_problem("full", "sam3_video", points) is None
    assert prompt_problem("trk", "sam3_tracker", points) is None


SIZED = {"images": ["x.png"], "image_sizes": [(70, 40)]}


@pytest.mark.parametrize(
    ("params", "field", "message"),
    [
        ({"points": [POINTS, POINTS]}, "points", "one list of point groups"),
        ({"points": [[[[71.0, 3.0]]]]}, "points", "outside image 0 \\(70x40"),
        ({"points": [[[[3.0, -1.0]]]]}, "points", "outside image 0"),
        ({"points": [[[[1.0, 1.0]] * (MAX_POINTS + 1)]]}, "points", "1 to 16"),
        ({"points": [[[]]]}, "points", "1 to 16"),
        ({"points": [POINTS], "point_labels": [[[1], [1]]]}, "point_labels", "one label per"),
        ({"points": [POINTS], "point_labels": [[[1, 2], [1]]]}, "point_labels", "1 \\(fore"),
        ({"point_labels": [[[1]]], "prompts": ["cat"]}, "point_labels", "without points"),
        ({"points": [POINTS], "boxes": [[[0, 0, 5, 5]]]}, "points", "one point group per box"),
        ({"points": [[[[1, 2, 3]]]]}, "points", "Tuple should have at most 2"),
    ],
)
def test_bad_points_name_the_field(params: dict, field: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message) as caught:
        SegmentParams.model_validate({**SIZED, **params})
    assert caught.value.errors()[0]["loc"][0] == field


def test_points_are_checked_against_sizes_only_when_known() -> None:
    """The API validates options before storing images (no sizes yet), then again."""
    SegmentParams.model_validate({"images": ["x.png"], "points": [[[[500.0, 500.0]]]]})
