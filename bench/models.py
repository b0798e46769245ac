"""Models for the benchmark: written into a temp models dir, loaded directly for comparison.

CPU: the tiny random demo models (`pixelpool.testing`), plus two more tiny SD 1.x
dirs with other seeds so the switch suite has three distinct models.
GPU: real-size SD 1.5 and SDXL architectures from the bundled diffusers configs with
random weights in fp16: they time like the real models without downloading any.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from bench.common import log
from bench.plan import SWITCH_EXTRA

DIFFUSERS_DIRS = {"sd15": "sd15", "sdxl": "sdxl"}


def _save(pipe: Any, target: Path) -> Path:
    """Save atomically (staging dir, then rename), as write_demo_models does."""
    if (target / "model_index.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=target.parent))
    try:
        pipe.save_pretrained(staging, safe_serialization=True)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def prepare_cpu_models(models_dir: Path) -> dict[str, Path]:
    """Demo models + two extra tiny SD 1.x models; returns registry name -> directory."""
    from pixelpool.testing import write_demo_models
    from pixelpool.testing.tiny import build_tiny_sd15

    paths = {p.name: p for p in write_demo_models(models_dir)}
    for seed, name in enumerate(SWITCH_EXTRA, start=1):
        with tempfile.TemporaryDirectory() as tmp:
            pipe = build_tiny_sd15(Path(tmp) / "tokenizers", seed=seed)
            paths[name] = _save(pipe, models_dir / "sd15" / name)
    return paths


def build_from_configs(config_dir: Path, device: str, dtype: Any, seed: int) -> Any:
    """A full-size pipeline with randomly initialised weights, from a diffusers config dir.

    Modules are created directly on `device` (torch's default-device context), so even
    SDXL's 2.6 B-parameter UNet initialises in seconds on a GPU.
    """
    import diffusers
    import torch
    import transformers

    index = json.loads((config_dir / "model_index.json").read_text())
    pipeline_cls = getattr(diffusers, index["_class_name"])
    torch.manual_seed(seed)
    components: dict[str, Any] = {}
    for name, spec in index.items():
        if name.startswith("_") or not isinstance(spec, list):
            continue
        library, cls_name = spec
        sub = config_dir / name
        if name in ("safety_checker", "feature_extractor") or cls_name is None:
            components[name] = None
        elif library == "diffusers" and cls_name.endswith("Scheduler"):
            components[name] = getattr(diffusers, cls_name).from_pretrained(sub)
        elif library == "diffusers":
            model_cls = getattr(diffusers, cls_name)
            with torch.device(device):
                components[name] = model_cls.from_config(model_cls.load_config(sub)).to(dtype)
        elif cls_name.endswith("Tokenizer"):
            components[name] = getattr(transformers, cls_name).from_pretrained(sub)
        else:
            model_cls = getattr(transformers, cls_name)
            config = model_cls.config_class.from_pretrained(sub)
            with torch.device(device):
                components[name] = model_cls(config).to(dtype)
    if "safety_checker" in components:
        components["requires_safety_checker"] = False
    pipe = pipeline_cls(**components)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def prepare_gpu_models(
    models_dir: Path, device: str = "cuda", switch: bool = True
) -> dict[str, Path]:
    """Real-size random SD 1.5 and SDXL, saved in fp16 (two more SD 1.5 seeds when the
    switch suite runs); a model already in `models_dir` is kept, not built again."""
    import torch

    from pixelpool.pipelines.diffusion.singlefile import bundled_config_dir

    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    wanted = [
        ("sd15", "bench-sd15", 0),
        ("sd15", "bench-sd15-b", 1),
        ("sd15", "bench-sd15-c", 2),
        ("sdxl", "bench-sdxl", 3),
    ]
    if not switch:
        wanted = [w for w in wanted if w[1] not in ("bench-sd15-b", "bench-sd15-c")]
    paths = {}
    for arch, name, seed in wanted:
        target = models_dir / DIFFUSERS_DIRS[arch] / name
        if (target / "model_index.json").is_file():
            paths[name] = target
            continue
        log(f"building real-size random {arch} model {name} on {device}")
        pipe = build_from_configs(bundled_config_dir(arch), device, dtype, seed)
        paths[name] = _save(pipe, target)
        del pipe
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    return paths


def demo_entry(arch: str, models: Path | None, prefix: str) -> dict[str, str]:
    """The registry entry the profilers load: `models` (a diffusers dir), or the tiny
    demo model of `arch` written to a new temp dir."""
    from pixelpool.testing import write_demo_models

    path = models
    if path is None:
        root = Path(tempfile.mkdtemp(prefix=prefix))
        write_demo_models(root)
        path = root / {"sd15": "sd15/demo-sd", "sdxl": "sdxl/demo-sdxl"}[arch]
    return {"architecture": arch, "path": str(path), "format": "diffusers", "name": "m"}


def model_bytes_on_disk(path: Path) -> int:
    """Weight bytes of a diffusers dir: what the cache budgets once it is loaded
    (the server loads tiny models in the dtype they were saved in, fp32 on CPU and
    fp16 on CUDA, so file size is a close estimate)."""
    return sum(f.stat().st_size for f in path.rglob("*.safetensors"))


def architecture_of(path: Path) -> str:
    cls = json.loads((path / "model_index.json").read_text())["_class_name"]
    return "sdxl" if "XL" in cls else "sd15"


def load_direct(path: Path, device: str) -> Any:
    """The pipeline as a user loads it: from_pretrained from local files, moved to the
    device (on CUDA with channels-last weights, as the server's default there)."""
    import torch
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    if architecture_of(path) == "sdxl":
        pipe = StableDiffusionXLPipeline.from_pretrained(path, dtype=dtype, local_files_only=True)
    else:
        pipe = StableDiffusionPipeline.from_pretrained(
            path, dtype=dtype, local_files_only=True,
            safety_checker=None, requires_safety_checker=False,
        )  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    pipe.to(device)
    if device.startswith("cuda"):  # the layout the server uses on CUDA by default
        for module in (pipe.unet, pipe.vae):
            module.to(memory_format=torch.channels_last)
    return pipe


def direct_generate(pipe: Any, workload: Any, seed: int, device: str) -> Any:
    """`pipe(...).images[0]`: the plain diffusers call a user makes; returns a PIL image.

    The generator is on the CPU, as the server's are, so both draw the same noise.
    """
    import torch

    image = pipe(
        prompt=workload.prompt,
        negative_prompt=workload.negative_prompt,
        width=workload.width,
        height=workload.height,
        num_inference_steps=workload.steps,
        guidance_scale=workload.cfg_scale,
        generator=torch.Generator("cpu").manual_seed(seed),
    ).images[0]
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return image


def direct_batch(pipe: Any, workload: Any, seeds: list[int], device: str) -> list[Any]:
    """One direct call for a batch, one CPU generator per image (as the server batches)."""
    import torch

    n = len(seeds)
    images = pipe(
        prompt=[workload.prompt] * n,
        negative_prompt=[workload.negative_prompt] * n,
        width=workload.width,
        height=workload.height,
        num_inference_steps=workload.steps,
        guidance_scale=workload.cfg_scale,
        generator=[torch.Generator("cpu").manual_seed(s) for s in seeds],
    ).images
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return images
