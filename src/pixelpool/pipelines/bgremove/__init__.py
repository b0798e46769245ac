"""The bgremove family: one-image-in, one-mask-out ONNX segmenters (U²-Net, IS-Net, BiRefNet)."""
