"""A single-file checkpoint in the models dir: found by the registry, served like a directory."""

import shutil
from pathlib import Path

import numpy as np
import pytest

from pixelpool.pipelines import get_family
from pixelpool.pipelines.base import WorkItem
from pixelpool.registry.registry import Registry
from pixelpool.testing.singlefile import save_single_file
from pixelpool.testing.tiny import build_tiny_sd15

PARAMS = {"prompt": "a red fox", "negative_prompt": "", "width": 64, "height": 64, "steps": 3,
          "cfg_scale": 7.0, "seed": 5}  # fmt: skip


def test_single_file_model_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    models = tmp_path / "models"
    pipe = build_tiny_sd15(tmp_path / "tok", seed=3)
    pipe.save_pretrained(models / "sd15" / "as-dir")
    save_single_file(pipe, models / "sd15" / "anime" / "as-file.safetensors")
    registry = Registry(models, tmp_path / "reg.db")
    registry.scan()
    names = {e.name: e for e in registry.entries()}
    assert set(names) == {"as-dir", "anime/as-file"}  # the .config sidecar is not a model
    assert names["anime/as-file"].format == "single_file"
    assert names["anime/as-file"].architecture == "sd15"
    registry.close()

    family = get_family("diffusion")
    images = []
    for name in ("as-dir", "anime/as-file"):
        loaded = family.load(names[name].to_wire(), "cpu", "auto")
        (result,) = family.run(loaded, [WorkItem("j", "txt2img", PARAMS)], lambda *a: None,
                               lambda: False)  # fmt: skip
        images.append(result.images[0].astype(int))
    assert np.abs(images[0] - images[1]).max() <= 1
    shutil.rmtree(models)
