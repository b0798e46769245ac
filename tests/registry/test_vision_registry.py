"""The registry finds vision models (folders with config.json under models/vision/),
names each one's task from its config, and refuses one named for another family."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from pixelpool import families
from pixelpool.families import vision as vision_family
from pixelpool.registry.registry import Registry, WrongFamily
from pixelpool.testing.tiny_families import write_family_models
from pixelpool.testing.tiny_vision import VISION_MODELS, write_tiny_sam3, write_vision_models


@pytest.fixture(scope="module")
def tree(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("vision-tree") / "models"
    shutil.copytree(models_dir, root)
    write_family_models(root)
    write_vision_models(root)
    vision = root / "vision"
    write_tiny_sam3(vision / "sam3-published", video_config=True)
    (vision / "clip").mkdir()
    (vision / "clip" / "config.json").write_text(json.dumps({"model_type": "clip"}))
    (vision / "broken").mkdir()
    (vision / "broken" / "config.json").write_text("{not json")
    by_class = vision / "group" / "by-class"
    shutil.copytree(vision / "tiny-dinov2", by_class)
    config = json.loads((by_class / "config.json").read_text())
    config.pop("model_type")
    (by_class / "config.json").write_text(json.dumps(config))  # architectures: Dinov2Model
    (vision / "loose.safetensors").write_bytes(b"")
    return root


@pytest.fixture
def registry(tree: Path, tmp_path: Path) -> Registry:
    reg = Registry(tree, tmp_path / "reg.db")
    reg.scan()
    yield reg
    reg.close()


def test_each_vision_model_is_found_with_its_task(registry: Registry) -> None:
    found = {e.name: e for e in registry.entries() if e.family == "vision"}
    expected = {name: (task, arch) for name, (_, task, arch) in VISION_MODELS.items()}
    expected["group/by-class"] = ("embed", "dinov2")
    expected["sam3-published"] = ("segment", "sam3_video")
    assert set(found) == set(expected)  # unknown model type, bad JSON, loose file: skipped
    vision = families.get("vision")
    for name, (task, arch) in expected.items():
        entry = found[name]
        assert (entry.architecture, entry.format) == (arch, "transformers")
        assert vision.describe(entry)["task"] == task
        assert entry.to_wire()["path"].endswith(name)


def test_other_families_are_unchanged(registry: Registry) -> None:
    families_of = {e.name: e.family for e in registry.entries()}
    assert families_of["tiny-esrgan"] == "upscale" and families_of["demo-sd"] == "diffusion"


def test_wrong_family_is_refused(registry: Registry) -> None:
    assert registry.resolve("tiny-sam3", "vision").architecture == "sam3"
    with pytest.raises(WrongFamily, match="'tiny-sam3' is of the vision family, not diffusion"):
        registry.resolve("tiny-sam3", "diffusion")
    with pytest.raises(WrongFamily, match="of the upscale family, not vision"):
        registry.resolve("tiny-esrgan", "vision")


def test_cost_grows_with_the_images(registry: Registry) -> None:
    entry = registry.resolve("tiny-depth", "vision")
    model = {"architecture": entry.architecture, "size_bytes": entry.size_bytes}
    one = families.estimate_cost("vision", model, {"images": ["a"]})
    three = families.estimate_cost("vision", model, {"images": ["a", "b", "c"]})
    assert one.model_bytes == entry.size_bytes and three.item_bytes == 3 * one.item_bytes
    sized = families.estimate_cost("vision", model, {"images": ["a"], "image_sizes": [(640, 480)]})
    assert sized.item_bytes > one.item_bytes


def test_a_model_of_another_task_is_named() -> None:
    assert vision_family.wrong_task("depth", "tiny-depth", "depth_anything") is None
    message = vision_family.wrong_task("segment", "tiny-dinov2", "dinov2")
    assert message == "model 'tiny-dinov2' (dinov2) serves 'embed', not 'segment'"


def test_a_model_type_route_prefers_its_own_architecture(registry: Registry) -> None:
    """`/inference/dinov3` takes a DINOv3 model even when a DINOv2 one sorts first;
    another embed model only when no DINOv3 is installed."""
    from types import SimpleNamespace

    from pixelpool.api.vision.jobs import resolve_vision_model

    state: Any = SimpleNamespace(registry=registry)
    assert resolve_vision_model(state, "embed", None).architecture.startswith("dinov3")
    assert resolve_vision_model(state, "depth", None).name == "tiny-depth"
    assert resolve_vision_model(state, "embed", "tiny-dinov2").name == "tiny-dinov2"


def test_a_sam3_tracker_folder_is_a_segment_model(registry: Registry) -> None:
    entry = registry.resolve("tiny-sam3-tracker", "vision")
    assert (entry.architecture, vision_family.task_of(entry.architecture)) == (
        "sam3_tracker", "segment",
    )  # fmt: skip
    assert vision_family.wrong_task("segment", entry.name, entry.architecture) is None
    message = vision_family.wrong_task("detect", entry.name, entry.architecture)
    assert message == "model 'tiny-sam3-tracker' (sam3_tracker) serves 'segment', not 'detect'"
    config = {"architectures": ["Sam3TrackerModel"]}  # no model_type: found by its class
    assert vision_family.read_model_type(config) == "sam3_tracker"


@pytest.mark.parametrize(
    ("model", "options", "field"),
    [
        ("tiny-sam3-tracker", {"prompts": ["cat"]}, "prompts"),
        ("tiny-sam3", {"points": [[[[1.0, 1.0]]]]}, "points"),
        ("tiny-sam3-tracker", {"points": [[[[9.0, 1.0]]]]}, "points"),  # outside the 8x8 image
    ],
)
def test_a_prompt_the_model_cannot_take_is_a_422_naming_it(
    registry: Registry, tmp_path: Path, model: str, options: dict, field: str
) -> None:
    from pixelpool.api.errors import ApiError
    from pixelpool.api.vision.jobs import StoredImage, build_vision_spec

    entry = registry.resolve(model, "vision")
    stored = [StoredImage(tmp_path / "a.png", 8, 8)]
    with pytest.raises(ApiError) as caught:
        build_vision_spec("segment", entry, stored, options, 100)
    assert (caught.value.status, caught.value.field) == (422, field)


def test_points_on_a_tracker_or_full_sam3_make_a_job(registry: Registry, tmp_path: Path) -> None:
    from pixelpool.api.vision.jobs import StoredImage, build_vision_spec

    stored = [StoredImage(tmp_path / "a.png", 8, 8)]
    options = {"points": [[[[1.0, 1.0]]]], "point_labels": [[[1]]]}
    for name in ("tiny-sam3-tracker", "sam3-published"):
        spec = build_vision_spec("segment", registry.resolve(name, "vision"), stored, options, 1)
        assert spec.params["points"] == [[[(1.0, 1.0)]]]


def test_without_a_model_named_segment_takes_one_that_can_take_the_prompts(
    tmp_path: Path,
) -> None:
    """Text goes to the SAM 3 detector and points to the tracker, whichever the registry
    lists first (here "a-tracker" sorts before "b-detector")."""
    from types import SimpleNamespace

    from pixelpool.api.vision.jobs import resolve_vision_model
    from pixelpool.testing.tiny_vision import write_tiny_sam3_tracker

    write_tiny_sam3_tracker(tmp_path / "models" / "vision" / "a-tracker")
    write_tiny_sam3(tmp_path / "models" / "vision" / "b-detector")
    reg = Registry(tmp_path / "models", tmp_path / "reg.db")
    reg.scan()
    try:
        state: Any = SimpleNamespace(registry=reg)
        pick = resolve_vision_model
        assert pick(state, "segment", None, options={"prompts": ["cat"]}).name == "b-detector"
        assert pick(state, "segment", None, options={"points": [[[1, 1]]]}).name == "a-tracker"
    finally:
        reg.close()
