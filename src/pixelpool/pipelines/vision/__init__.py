"""The vision family: SAM 3, Grounding DINO, Depth Anything and DINOv2/v3 through transformers."""
