"""Tiny random vision models (SAM 3, Grounding DINO, Depth Anything, DINOv2/v3), each a
folder with config.json, weights and processor files, as `save_pretrained` writes them.

Built in-process with generated tokenizers (no download), seeded, in seconds; the
vision family loads them through the same code as the real checkpoints.
"""

from __future__ import annotations

from pathlib import Path

import torch

from pixelpool.testing.vocab import write_clip_tokenizer_files

SIDE = 56  # 4 x 4 patches of 14 px (ViT backbones), small enough to run in milliseconds
WORDS = ["cat", "dog", "red", "car", "person", "a", "photo", "of", "visual", "the", "tree"]
BERT_SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def _save(model: torch.nn.Module, processor: object, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(directory))
    processor.save_pretrained(str(directory))  # type: ignore[attr-defined]
    return directory


def write_bert_vocab(directory: Path, words: list[str]) -> Path:
    """A WordPiece vocab.txt: BERT's special tokens, the words, letters and '.'."""
    directory.mkdir(parents=True, exist_ok=True)
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    tokens = [*BERT_SPECIAL, ".", *dict.fromkeys(sorted(words)), *letters]
    tokens += [f"##{c}" for c in letters]
    path = directory / "vocab.txt"
    path.write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return path


def write_tiny_sam3(directory: Path, seed: int = 0, video_config: bool = False) -> Path:
    """SAM 3; with `video_config` its config.json is the published checkpoints' kind
    (`sam3_video`: the detector's config nested beside a tracker's)."""
    import transformers as tf
    from transformers import CLIPTokenizer, Sam3Config, Sam3ImageProcessor, Sam3Model, Sam3Processor

    tok_dir = directory / ".tokenizer"
    vocab_size = write_clip_tokenizer_files(tok_dir, WORDS)
    tokenizer = CLIPTokenizer.from_pretrained(str(tok_dir), local_files_only=True)
    hidden, grid = 32, SIDE // 14
    config = Sam3Config(
        vision_config={
            "backbone_config": {
                "model_type": "sam3_vit_model", "hidden_size": hidden, "intermediate_size": 64,
                "num_hidden_layers": 2,
                "num_attention_heads": 2, "image_size": SIDE, "patch_size": 14,
                "window_size": 2, "global_attn_indexes": [1], "pretrain_image_size": SIDE,
            },
            "fpn_hidden_size": hidden,
            "backbone_feature_sizes": [[grid * 4] * 2, [grid * 2] * 2, [grid] * 2],
        },
        text_config={
            "vocab_size": vocab_size, "hidden_size": hidden, "intermediate_size": 64,
            "projection_dim": hidden, "num_hidden_layers": 1, "num_attention_heads": 2,
            "max_position_embeddings": 32, "pad_token_id": tokenizer.pad_token_id,
            "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
        },
        geometry_encoder_config={"hidden_size": hidden, "num_layers": 1, "num_attention_heads": 2,
                                 "intermediate_size": 64, "roi_size": 2},
        detr_encoder_config={"hidden_size": hidden, "num_layers": 1, "num_attention_heads": 2,
                             "intermediate_size": 64},
        detr_decoder_config={"hidden_size": hidden, "num_layers": 1, "num_queries": 8,
                             "num_attention_heads": 2, "intermediate_size": 64},
        mask_decoder_config={"hidden_size": hidden, "num_attention_heads": 2},
    )  # fmt: skip
    torch.manual_seed(seed)
    model = Sam3Model(config).eval()
    size = {"height": SIDE, "width": SIDE}
    image_processor = Sam3ImageProcessor(
        size=size, mask_size={"height": grid * 4, "width": grid * 4}
    )
    out = _save(model, Sam3Processor(image_processor, tokenizer), directory)
    for f in tok_dir.iterdir():
        f.unlink()
    tok_dir.rmdir()
    if video_config:
        tf.Sam3VideoConfig(detector_config=config.to_dict()).save_pretrained(str(out))
    return out


def _tiny_tracker_parts(vision: dict) -> dict:
    """The tracker's prompt encoder and mask decoder at the tiny SAM 3's sizes."""
    return {
        "vision_config": vision,
        "prompt_encoder_config": {"hidden_size": 32, "image_size": SIDE, "patch_size": 14,
                                  "mask_input_channels": 4},
        "mask_decoder_config": {"hidden_size": 32, "num_attention_heads": 2, "mlp_dim": 64,
                                "iou_head_hidden_dim": 32},
    }  # fmt: skip


def _tiny_sam3_vision() -> dict:
    grid = SIDE // 14
    return {
        "backbone_config": {
            "model_type": "sam3_vit_model", "hidden_size": 32, "intermediate_size": 64,
            "num_hidden_layers": 2, "num_attention_heads": 2, "image_size": SIDE,
            "patch_size": 14, "window_size": 2, "global_attn_indexes": [1],
            "pretrain_image_size": SIDE,
        },
        "fpn_hidden_size": 32,
        "backbone_feature_sizes": [[grid * 4] * 2, [grid * 2] * 2, [grid] * 2],
    }  # fmt: skip


def _tracker_processor() -> object:
    from transformers import Sam3ImageProcessor, Sam3TrackerProcessor

    grid = SIDE // 14
    size, mask_size = {"height": SIDE, "width": SIDE}, {"height": grid * 4, "width": grid * 4}
    return Sam3TrackerProcessor(Sam3ImageProcessor(size=size, mask_size=mask_size))


def write_tiny_sam3_tracker(directory: Path, seed: int = 0) -> Path:
    """SAM 3's tracker alone (`sam3_tracker`): point and box prompts, SAM 2-style."""
    from transformers import Sam3TrackerConfig, Sam3TrackerModel

    config = Sam3TrackerConfig(**_tiny_tracker_parts(_tiny_sam3_vision()))
    torch.manual_seed(seed)
    return _save(Sam3TrackerModel(config).eval(), _tracker_processor(), directory)


def write_tiny_sam3_full(directory: Path, seed: int = 0) -> Path:
    """The full SAM 3 checkpoint's layout (`sam3_video`): the detector's weights under
    `detector_model.*`, the tracker's under `tracker_model.*` / `tracker_neck.*`, with
    Sam3Processor files (text prompts, boxes and points from one folder)."""
    import transformers as tf

    write_tiny_sam3(directory, seed)  # the processor files and the detector's config
    detector = tf.Sam3Config.from_pretrained(str(directory))
    grid = SIDE // 14
    tracker = tf.Sam3TrackerVideoConfig(
        **_tiny_tracker_parts(detector.vision_config.to_dict()),
        memory_attention_hidden_size=32, memory_attention_num_layers=1,
        memory_attention_feed_forward_hidden_size=64, memory_encoder_hidden_size=32,
        memory_encoder_output_channels=16, mask_downsampler_embed_dim=32,
        memory_fuser_embed_dim=32, memory_fuser_intermediate_dim=64, num_maskmem=2,
        memory_attention_rope_feat_sizes=[grid, grid], image_size=SIDE,
    )  # fmt: skip
    config = tf.Sam3VideoConfig(
        detector_config=detector.to_dict(), tracker_config=tracker.to_dict()
    )
    (directory / "model.safetensors").unlink()
    torch.manual_seed(seed)
    tf.Sam3VideoModel(config).eval().save_pretrained(str(directory))
    return directory


def write_tiny_grounding_dino(directory: Path, seed: int = 0, mm: bool = False) -> Path:
    """Grounding DINO (or MM-Grounding-DINO with mm=True): a Swin backbone, a BERT text
    encoder with a generated WordPiece vocab."""
    import transformers as tf

    vocab = write_bert_vocab(directory, WORDS)
    tokenizer = tf.BertTokenizer(str(vocab), do_lower_case=True)
    config_cls = tf.MMGroundingDinoConfig if mm else tf.GroundingDinoConfig
    model_cls = tf.MMGroundingDinoForObjectDetection if mm else tf.GroundingDinoForObjectDetection
    config = config_cls(
        backbone_config=tf.SwinConfig(
            image_size=64, patch_size=4, embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1],
            window_size=2, out_features=["stage2", "stage3", "stage4"],
        ),
        text_config=tf.BertConfig(
            vocab_size=len(vocab.read_text().split()), hidden_size=32, num_hidden_layers=1,
            num_attention_heads=2, intermediate_size=64, max_position_embeddings=64,
        ),
        d_model=32, num_feature_levels=3, encoder_layers=1, decoder_layers=2,
        encoder_ffn_dim=32, decoder_ffn_dim=32, encoder_attention_heads=2,
        decoder_attention_heads=2, num_queries=8, max_text_len=32, encoder_n_points=2,
        decoder_n_points=2,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = model_cls(config).eval()
    image_processor = tf.GroundingDinoImageProcessor(size={"shortest_edge": 64, "longest_edge": 96})
    return _save(model, tf.GroundingDinoProcessor(image_processor, tokenizer), directory)


def _tiny_dinov2(**extra: object) -> object:
    from transformers import Dinov2Config

    return Dinov2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        image_size=SIDE, patch_size=14, **extra,
    )  # fmt: skip


def write_tiny_depth_anything(directory: Path, seed: int = 0) -> Path:
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, DPTImageProcessor

    backbone = _tiny_dinov2(out_features=["stage1", "stage2"], reshape_hidden_states=False)
    config = DepthAnythingConfig(
        backbone_config=backbone, patch_size=14, reassemble_hidden_size=32,
        reassemble_factors=[2, 1], neck_hidden_sizes=[16, 32], fusion_hidden_size=16,
        head_hidden_size=8,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = DepthAnythingForDepthEstimation(config).eval()
    processor = DPTImageProcessor(
        size={"height": SIDE, "width": SIDE}, keep_aspect_ratio=True, ensure_multiple_of=14,
        resample=3, do_pad=False, image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225],
    )  # fmt: skip
    return _save(model, processor, directory)


def write_tiny_dinov2(directory: Path, seed: int = 0) -> Path:
    from transformers import BitImageProcessor, Dinov2Model

    torch.manual_seed(seed)
    model = Dinov2Model(_tiny_dinov2()).eval()
    processor = BitImageProcessor(
        size={"shortest_edge": 64}, crop_size={"height": SIDE, "width": SIDE},
        image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225], do_convert_rgb=True,
    )  # fmt: skip
    return _save(model, processor, directory)


def write_tiny_dinov2_registers(directory: Path, seed: int = 0) -> Path:
    from transformers import BitImageProcessor, Dinov2WithRegistersConfig, Dinov2WithRegistersModel

    config = Dinov2WithRegistersConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        image_size=SIDE, patch_size=14, num_register_tokens=2,
    )  # fmt: skip
    torch.manual_seed(seed)
    processor = BitImageProcessor(
        size={"shortest_edge": 64}, crop_size={"height": SIDE, "width": SIDE},
        image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225], do_convert_rgb=True,
    )  # fmt: skip
    return _save(Dinov2WithRegistersModel(config).eval(), processor, directory)


def _dinov3_processor(side: int) -> object:
    from transformers import DINOv3ViTImageProcessor

    return DINOv3ViTImageProcessor(size={"height": side, "width": side})


def write_tiny_dinov3_vit(directory: Path, seed: int = 0) -> Path:
    from transformers import DINOv3ViTConfig, DINOv3ViTModel

    config = DINOv3ViTConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        patch_size=16, image_size=64, num_register_tokens=2,
    )  # fmt: skip
    torch.manual_seed(seed)
    return _save(DINOv3ViTModel(config).eval(), _dinov3_processor(64), directory)


def write_tiny_dinov3_convnext(directory: Path, seed: int = 0) -> Path:
    from transformers import DINOv3ConvNextConfig, DINOv3ConvNextModel

    config = DINOv3ConvNextConfig(hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1], image_size=64)
    torch.manual_seed(seed)
    return _save(DINOv3ConvNextModel(config).eval(), _dinov3_processor(64), directory)


VISION_MODELS = {
    # registry name (under models/vision/) -> (writer, task, architecture)
    "tiny-sam3": (write_tiny_sam3, "segment", "sam3"),
    "tiny-sam3-tracker": (write_tiny_sam3_tracker, "segment", "sam3_tracker"),
    "tiny-gdino": (write_tiny_grounding_dino, "detect", "grounding-dino"),
    "tiny-depth": (write_tiny_depth_anything, "depth", "depth_anything"),
    "tiny-dinov2": (write_tiny_dinov2, "embed", "dinov2"),
    "tiny-dinov2-reg": (write_tiny_dinov2_registers, "embed", "dinov2_with_registers"),
    "tiny-dinov3": (write_tiny_dinov3_vit, "embed", "dinov3_vit"),
    "tiny-dinov3-convnext": (write_tiny_dinov3_convnext, "embed", "dinov3_convnext"),
}


def write_vision_models(root: Path, names: list[str] | None = None) -> dict[str, tuple[str, str]]:
    """The tiny vision models under root/vision/<name>/; returns name -> (task, arch)."""
    chosen = names or list(VISION_MODELS)
    out = {}
    for name in chosen:
        writer, task, arch = VISION_MODELS[name]
        writer(root / "vision" / name)
        out[name] = (task, arch)
    return out
