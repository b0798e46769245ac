"""Tiny random models for tests and the demo, built in-process and saved to disk."""

from pixelpool.testing.demo import DEMO_MODELS, write_demo_models

__all__ = ["DEMO_MODELS", "write_demo_models"]
