"""The IP-Adapter scanner on the published layouts, from headers and configs alone."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from pixelpool.registry.ip_adapters import pick, scan_ip_adapters


def _adapter(path: Path, cross: int, clip: int, plus: bool = False) -> None:
    """An adapter file with real key names and shapes (zeros; only the header is read)."""
    z = lambda *shape: np.zeros(shape, np.float16)  # noqa: E731
    tensors = {
        "ip_adapter.1.to_k_ip.weight": z(8, cross),
        "ip_adapter.1.to_v_ip.weight": z(8, cross),
    }
    if plus:
        tensors |= {"image_proj.latents": z(1, 16, 64), "image_proj.proj_in.weight": z(64, clip)}
    else:
        tensors |= {
            "image_proj.proj.weight": z(4 * cross, clip),
            "image_proj.norm.weight": z(cross),
        }
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))


def _encoder(directory: Path, hidden: int, projection: int) -> None:
    directory.mkdir(parents=True)
    config = {"architectures": ["CLIPVisionModelWithProjection"], "hidden_size": hidden,
              "projection_dim": projection}  # fmt: skip
    (directory / "config.json").write_text(json.dumps(config))
    save_file({"w": np.zeros(1, np.float16)}, str(directory / "model.safetensors"))


def test_published_layout_and_comfyui_folder(tmp_path: Path) -> None:
    root = tmp_path / "ip-adapter"
    _encoder(root / "models/image_encoder", hidden=1280, projection=1024)  # ViT-H
    _encoder(root / "sdxl_models/image_encoder", hidden=1664, projection=1280)  # ViT-bigG
    _adapter(root / "models/ip-adapter_sd15.safetensors", 768, 1024)
    _adapter(root / "models/ip-adapter-plus_sd15.safetensors", 768, 1280, plus=True)
    _adapter(root / "sdxl_models/ip-adapter_sdxl.safetensors", 2048, 1280)
    _adapter(root / "sdxl_models/ip-adapter-plus_sdxl_vit-h.safetensors", 2048, 1280, plus=True)
    _adapter(root / "sdxl_models/orphan.safetensors", 2048, 999)  # no encoder of that width
    save_file({"x": np.zeros(1, np.float16)}, str(root / "not-an-adapter.safetensors"))
    _encoder(tmp_path / "ipadapter/image_encoder", hidden=1280, projection=1024)
    _adapter(tmp_path / "ipadapter/comfy_sd15.safetensors", 768, 1024)

    found = {e.name: e for e in scan_ip_adapters(tmp_path)}
    assert sorted(found) == ["comfy_sd15", "models/ip-adapter-plus_sd15", "models/ip-adapter_sd15",
                             "sdxl_models/ip-adapter-plus_sdxl_vit-h",
                             "sdxl_models/ip-adapter_sdxl"]  # fmt: skip
    assert found["models/ip-adapter_sd15"].architecture == "sd15"
    assert found["models/ip-adapter_sd15"].image_encoder == root / "models/image_encoder"
    plus_xl = found["sdxl_models/ip-adapter-plus_sdxl_vit-h"]
    assert (plus_xl.architecture, plus_xl.variant) == ("sdxl", "plus")
    assert plus_xl.image_encoder == root / "models/image_encoder"  # ViT-H, by width
    assert found["sdxl_models/ip-adapter_sdxl"].image_encoder == root / "sdxl_models/image_encoder"
    entries = list(found.values())
    assert pick(entries, "sdxl").name == "sdxl_models/ip-adapter_sdxl"  # base before plus
    assert pick(entries, "sd15").name == "comfy_sd15"
    assert pick(entries, "flux") is None
    key = found["comfy_sd15"].key
    (tmp_path / "ipadapter/image_encoder/model.safetensors").write_bytes(b"changed")
    assert {e.name: e for e in scan_ip_adapters(tmp_path)}["comfy_sd15"].key != key
