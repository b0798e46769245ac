"""vision family, Grounding DINO and MM-Grounding-DINO: boxes, scores and labels equal
the model + GroundingDinoProcessor called directly, alone or batched."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

from pixelpool.families.vision.params import DetectParams
from pixelpool.pipelines.base import Loaded
from pixelpool.testing.tiny_vision import write_tiny_grounding_dino

from .vision_helpers import assert_same_result, load, picture, run


@pytest.fixture(scope="module", params=[False, True], ids=["grounding-dino", "mm-grounding-dino"])
def gdino(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_grounding_dino(tmp_path_factory.mktemp("vision") / "gd", mm=request.param)


@pytest.fixture(scope="module")
def loaded(gdino: Path) -> Loaded:
    arch = "mm-grounding-dino" if "MM" in (gdino / "config.json").read_text() else "grounding-dino"
    return load(gdino, arch)


def direct(path: Path, image, prompts: list[str], threshold: float, text_threshold: float):
    processor = AutoProcessor.from_pretrained(str(path), local_files_only=True)
    model = AutoModelForZeroShotObjectDetection.from_pretrained(str(path), local_files_only=True)
    enc = processor(images=image, text=[prompts], return_tensors="pt")
    with torch.inference_mode():
        out = model.eval()(**enc)
    return processor.post_process_grounded_object_detection(
        out, enc["input_ids"], threshold=threshold, text_threshold=text_threshold,
        target_sizes=[(image.height, image.width)],
    )[0]  # fmt: skip


def test_detections_equal_transformers(gdino: Path, loaded: Loaded, tmp_path: Path) -> None:
    path, image = picture(tmp_path, 48, 80, seed=1)
    prompts = ["a cat", "red car"]
    threshold = float(np.median(direct(gdino, image, prompts, 0.0, 0.2)["scores"].numpy()))
    params = {"images": [path], "prompts": prompts, "threshold": threshold, "text_threshold": 0.2}
    (result,) = run(loaded, "detect", [params])
    (found,) = result.info["images"]
    expected = direct(gdino, image, prompts, threshold, 0.2)
    assert (found["width"], found["height"]) == (80, 48)
    assert len(found["boxes"]) == len(expected["boxes"]) > 0
    np.testing.assert_allclose(found["boxes"], expected["boxes"].numpy(), atol=1e-4)
    np.testing.assert_allclose(found["scores"], expected["scores"].numpy(), atol=1e-4)
    assert found["labels"] == list(expected["text_labels"])
    assert result.info["task"] == "detect" and not result.arrays


def test_batched_jobs_equal_jobs_alone(loaded: Loaded, tmp_path: Path) -> None:
    same = picture(tmp_path, 48, 80, 2)[0]
    a = {"images": [same, picture(tmp_path, 64, 40, 3)[0]], "prompts": ["dog"], "threshold": 0.1}
    b = {"images": [picture(tmp_path, 48, 80, 4)[0]], "prompts": ["a cat", "tree"],
         "threshold": 0.2, "text_threshold": 0.1}  # fmt: skip
    c = {"images": [same], "prompts": ["person"], "threshold": 0.0}
    together = run(loaded, "detect", [a, b, c])
    for job, batched in zip([a, b, c], together, strict=True):
        (alone,) = run(loaded, "detect", [job])
        assert_same_result(batched, alone)


def test_prompts_are_required() -> None:
    with pytest.raises(ValidationError, match="prompts"):
        DetectParams.model_validate({"images": ["x.png"], "prompts": []})
    with pytest.raises(ValidationError, match="text_threshold"):
        DetectParams.model_validate({"images": ["x.png"], "prompts": ["a"], "text_threshold": -1})
