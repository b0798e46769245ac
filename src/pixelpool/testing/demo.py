"""The built-in demo models: tiny random SD 1.x and SDXL pipelines on disk."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

DEMO_MODELS = {"sd15/demo-sd": "sd15", "sdxl/demo-sdxl": "sdxl"}


def write_demo_models(models_dir: Path, seed: int = 0) -> list[Path]:
    """Write each demo model unless it is already there (idempotent); return their paths.

    diffusers is imported only when a model is missing: a second run costs no import."""
    paths = []
    for rel, arch in DEMO_MODELS.items():
        target = models_dir / rel
        paths.append(target)
        if (target / "model_index.json").is_file():
            continue
        from pixelpool.testing.tiny import build_tiny_sd15, build_tiny_sdxl

        builders = {"sd15": build_tiny_sd15, "sdxl": build_tiny_sdxl}
        with tempfile.TemporaryDirectory() as tmp:
            pipe = builders[arch](Path(tmp) / "tokenizers", seed=seed)
            staging = Path(tmp) / "model"
            pipe.save_pretrained(staging)
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists():
                shutil.rmtree(target)
            shutil.move(str(staging), target)
    return paths
