"""LoRA scanning (architecture, trigger words) and model manifests, without loading models."""

import json
import shutil
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from pixelpool.registry.loras import scan_loras
from pixelpool.registry.registry import Registry
from pixelpool.registry.scan import scan_models


def _lora(path: Path, keys: dict[str, tuple[int, ...]], meta: dict[str, str] | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: np.zeros(s, np.float32) for k, s in keys.items()}, str(path), metadata=meta)


def test_lora_architecture_and_trigger_words(tmp_path: Path) -> None:
    loras = tmp_path / "loras"
    _lora(loras / "meta.safetensors", {"unet.x.lora_A.weight": (4, 8)},
          {"ss_base_model_version": "sdxl_base_v1-0",
           "ss_tag_frequency": json.dumps({"set": {"fox": 3, "snow": 5, " red": 1}})})  # fmt: skip
    _lora(loras / "sub/kohya15.safetensors",
          {"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight":
           (4, 768)})  # fmt: skip
    _lora(loras / "te2.safetensors", {"lora_te2_text_model_x.lora_down.weight": (4, 8)})
    _lora(loras / "flux.safetensors", {"transformer.single_transformer_blocks.0.x.lora_A.weight":
                                       (4, 8)})  # fmt: skip
    _lora(loras / "unknown.safetensors", {"x.lora_A.weight": (4, 8)},
          {"modelspec.trigger_phrase": "a, b"})  # fmt: skip
    (loras / "broken.safetensors").write_bytes(b"junk")
    found = {e.name: e for e in scan_loras(tmp_path)}
    assert {n: e.architecture for n, e in found.items()} == {
        "meta": "sdxl", "sub/kohya15": "sd15", "te2": "sdxl", "flux": "flux", "unknown": None,
    }  # fmt: skip
    assert found["meta"].trigger_words == ("snow", "fox", "red")
    assert found["unknown"].trigger_words == ("a", "b")


def test_manifests_defaults_and_resolution(tmp_path: Path, models_dir: Path) -> None:
    shutil.copytree(models_dir / "sd15/demo-sd", tmp_path / "sd15/a")
    shutil.copytree(models_dir / "sd15/demo-sd", tmp_path / "sd15/b")
    shutil.copytree(models_dir / "sd15/demo-sd", tmp_path / "sd15/c")
    (tmp_path / "sd15/a.toml").write_text('id = "alpha"\n[defaults]\nsteps = 9\n'
                                          '[presets.hd]\ncfg_scale = 4.5\n')  # fmt: skip
    (tmp_path / "b.toml").write_text('model = "sd15/b"\ndisplay_name = "Bee"\n')
    (tmp_path / "sd15/c.toml").write_text("[defaults]\nsteps = 'many'\n")  # invalid: ignored
    cfg = tmp_path / "sd15/b/scheduler/scheduler_config.json"
    cfg.write_text(json.dumps({**json.loads(cfg.read_text()), "prediction_type": "v_prediction",
                               "rescale_betas_zero_snr": True}))  # fmt: skip
    entries = {e.name: e for e in scan_models(tmp_path)}
    assert entries["a"].manifest.defaults.steps == 9
    assert entries["a"].manifest.presets["hd"].set_fields() == {"cfg_scale": 4.5}
    assert entries["b"].manifest.display_name == "Bee"
    assert entries["b"].prediction_type == "v_prediction" and entries["b"].zero_snr
    assert entries["c"].manifest is None and entries["a"].prediction_type == "epsilon"
    registry = Registry(tmp_path, tmp_path / "cache.db")
    registry.scan()
    assert registry.resolve("alpha").name == "a"
    registry.close()
