"""The upscale family: super-resolution models spandrel detects, run in blended tiles."""
