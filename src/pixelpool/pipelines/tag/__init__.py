"""The tag family: WD-style ONNX taggers with a selected_tags.csv."""
