"""The vision family's API side: result encodings and large-result artifacts."""
