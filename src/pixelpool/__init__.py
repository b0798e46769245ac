"""pixelpool: a self-hosted inference server for image models."""

__version__ = "0.1.0"
