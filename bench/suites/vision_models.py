"""Random-weight vision models for the vision suite: small enough for a CPU run, big
enough that a forward pass (not HTTP or JSON) is most of a request's time.

CPU: a ViT-Tiny-sized DINOv2 (192 wide, 6 layers) and a Depth Anything with a 4-layer
backbone of the same width, at 224 px. GPU: DINOv2-Base and Depth-Anything-Small sizes.
Each is saved with `save_pretrained`, so the server and the direct call load the
same folder.
"""

from __future__ import annotations

from pathlib import Path

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
SIZES = {  # (width, layers, heads, input side)
    "cpu": {"embed": (192, 6, 3, 224), "depth": (192, 4, 3, 224)},
    "gpu": {"embed": (768, 12, 12, 224), "depth": (384, 12, 6, 518)},
}


def _backbone(width: int, layers: int, heads: int, side: int, **extra: object) -> object:
    from transformers import Dinov2Config

    return Dinov2Config(hidden_size=width, num_hidden_layers=layers, num_attention_heads=heads,
                        intermediate_size=4 * width, image_size=side, patch_size=14,
                        **extra)  # fmt: skip


def write_embed(directory: Path, kind: str, seed: int = 0) -> Path:
    import torch
    from transformers import BitImageProcessor, Dinov2Model

    width, layers, heads, side = SIZES[kind]["embed"]
    torch.manual_seed(seed)
    model = Dinov2Model(_backbone(width, layers, heads, side)).eval()
    processor = BitImageProcessor(
        size={"shortest_edge": side * 8 // 7}, crop_size={"height": side, "width": side},
        image_mean=MEAN, image_std=STD, do_convert_rgb=True,
    )  # fmt: skip
    model.save_pretrained(str(directory))
    processor.save_pretrained(str(directory))
    return directory


def write_depth(directory: Path, kind: str, seed: int = 0) -> Path:
    import torch
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, DPTImageProcessor

    width, layers, heads, side = SIZES[kind]["depth"]
    stages = [f"stage{i}" for i in range(layers - 3, layers + 1)]  # the last 4 layers
    backbone = _backbone(width, layers, heads, side, out_features=stages,
                         reshape_hidden_states=False)  # fmt: skip
    config = DepthAnythingConfig(
        backbone_config=backbone, patch_size=14, reassemble_hidden_size=width,
        reassemble_factors=[4, 2, 1, 0.5], neck_hidden_sizes=[width // 4, width // 2, width,
                                                              width * 2],
        fusion_hidden_size=width // 3, head_hidden_size=32,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = DepthAnythingForDepthEstimation(config).eval()
    processor = DPTImageProcessor(
        size={"height": side, "width": side}, keep_aspect_ratio=True, ensure_multiple_of=14,
        resample=3, do_pad=False, image_mean=MEAN, image_std=STD,
    )  # fmt: skip
    model.save_pretrained(str(directory))
    processor.save_pretrained(str(directory))
    return directory


def write_models(root: Path, kind: str) -> dict[str, Path]:
    """root/vision/bench-embed and root/vision/bench-depth; name -> folder."""
    return {
        "bench-embed": write_embed(root / "vision" / "bench-embed", kind),
        "bench-depth": write_depth(root / "vision" / "bench-depth", kind),
    }


class Direct:
    """The model called as a user of `transformers` would: processor, forward, post-process."""

    def __init__(self, path: Path, task: str, device: str) -> None:
        import torch
        from transformers import (
            AutoImageProcessor,
            AutoModel,
            AutoModelForDepthEstimation,
        )

        self.torch, self.task, self.device = torch, task, device
        self.processor = AutoImageProcessor.from_pretrained(str(path))
        cls = AutoModelForDepthEstimation if task == "depth" else AutoModel
        self.model = cls.from_pretrained(str(path)).to(device).eval()

    def __call__(self, images: list[object]) -> list[object]:
        torch = self.torch
        with torch.inference_mode():
            inputs = self.processor(images=images, return_tensors="pt").to(self.device)
            out = self.model(**inputs)
            if self.task == "embed":
                return list(out.pooler_output.float().cpu().numpy())
            sizes = [(img.height, img.width) for img in images]  # type: ignore[attr-defined]
            post = self.processor.post_process_depth_estimation(out, target_sizes=sizes)
            return [p["predicted_depth"].float().cpu().numpy() for p in post]
