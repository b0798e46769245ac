"""vision family, Depth Anything and DINOv2/v3: depth maps and features equal the
transformers model + image processor called directly, alone or batched."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoImageProcessor, AutoModel, AutoModelForDepthEstimation

from pixelpool.testing import tiny_vision

from .vision_helpers import assert_same_result, load, picture, run

EMBEDDERS = {
    "dinov2": (tiny_vision.write_tiny_dinov2, 1),
    "dinov2_with_registers": (tiny_vision.write_tiny_dinov2_registers, 3),  # CLS + 2 registers
    "dinov3_vit": (tiny_vision.write_tiny_dinov3_vit, 3),  # CLS + 2 register tokens
    "dinov3_convnext": (tiny_vision.write_tiny_dinov3_convnext, 1),  # the pooled token
}


@pytest.fixture(scope="module")
def depth_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_vision.write_tiny_depth_anything(tmp_path_factory.mktemp("vision") / "depth")


@pytest.fixture(scope="module", params=list(EMBEDDERS))
def embedder(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    writer, prefix = EMBEDDERS[request.param]
    path = writer(tmp_path_factory.mktemp("vision") / request.param)
    return path, load(path, request.param), prefix


def direct_depth(path: Path, image) -> np.ndarray:
    processor = AutoImageProcessor.from_pretrained(str(path), local_files_only=True)
    model = AutoModelForDepthEstimation.from_pretrained(str(path), local_files_only=True).eval()
    with torch.inference_mode():
        out = model(**processor(images=image, return_tensors="pt"))
    found = processor.post_process_depth_estimation(out, target_sizes=[(image.height, image.width)])
    return found[0]["predicted_depth"].numpy()


def test_depth_equals_transformers_at_the_input_size(depth_model: Path, tmp_path: Path) -> None:
    loaded = load(depth_model, "depth_anything")
    path, image = picture(tmp_path, 45, 70, seed=1)
    (result,) = run(loaded, "depth", [{"images": [path]}])
    (entry,) = result.info["images"]
    depth = result.arrays[entry["depth"]]
    assert depth.dtype == np.float32 and depth.shape == (45, 70)
    np.testing.assert_allclose(depth, direct_depth(depth_model, image), atol=1e-4, rtol=0)
    assert entry["min"] == pytest.approx(float(depth.min()))


def test_depth_batched_equals_alone(depth_model: Path, tmp_path: Path) -> None:
    loaded = load(depth_model, "depth_anything")
    a = {"images": [picture(tmp_path, 45, 70, 2)[0], picture(tmp_path, 56, 56, 3)[0]]}
    b = {"images": [picture(tmp_path, 45, 70, 4)[0]]}
    together = run(loaded, "depth", [a, b])
    for job, batched in zip([a, b], together, strict=True):
        assert_same_result(batched, run(loaded, "depth", [job])[0])


def direct_features(path: Path, image) -> tuple[np.ndarray, np.ndarray]:
    processor = AutoImageProcessor.from_pretrained(str(path), local_files_only=True)
    model = AutoModel.from_pretrained(str(path), local_files_only=True).eval()
    with torch.inference_mode():
        out = model(**processor(images=image, return_tensors="pt"))
    return out.pooler_output[0].numpy(), out.last_hidden_state[0].numpy()


def test_features_equal_transformers(embedder, tmp_path: Path) -> None:
    path, loaded, prefix = embedder
    file, image = picture(tmp_path, 50, 70, seed=5)
    pooled, hidden = direct_features(path, image)
    patches = hidden[prefix:]
    jobs = [
        {"images": [file], "patch_features": True},
        {"images": [file], "pooling": "mean"},
        {"images": [file], "pooling": "mean", "normalize": True, "patch_features": True},
    ]
    cls, mean, normed = run(loaded, "embed", jobs)
    np.testing.assert_allclose(cls.arrays["embedding/0"], pooled, atol=1e-4, rtol=0)
    np.testing.assert_allclose(cls.arrays["patches/0"], patches, atol=1e-4, rtol=0)
    assert "patches/0" not in mean.arrays
    np.testing.assert_allclose(mean.arrays["embedding/0"], patches.mean(0), atol=1e-4, rtol=0)
    unit = patches.mean(0) / np.linalg.norm(patches.mean(0))
    np.testing.assert_allclose(normed.arrays["embedding/0"], unit, atol=1e-4, rtol=0)
    norms = np.linalg.norm(normed.arrays["patches/0"], axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)
    assert cls.info["images"][0] == {"embedding": "embedding/0", "dim": 32, "patches": "patches/0"}


def test_features_batched_equal_alone(embedder, tmp_path: Path) -> None:
    _, loaded, _ = embedder
    a = {"images": [picture(tmp_path, 50, 70, 6)[0], picture(tmp_path, 30, 30, 7)[0]],
         "patch_features": True}  # fmt: skip
    b = {"images": [picture(tmp_path, 64, 64, 8)[0]], "pooling": "mean"}
    together = run(loaded, "embed", [a, b])
    for job, batched in zip([a, b], together, strict=True):
        assert_same_result(batched, run(loaded, "embed", [job])[0])


def test_a_model_refuses_another_tasks_operation(embedder, tmp_path: Path) -> None:
    _, loaded, _ = embedder
    with pytest.raises(ValueError, match="serves 'embed', not \\['depth'\\]"):
        run(loaded, "depth", [{"images": [picture(tmp_path, 30, 30, 9)[0]]}])
