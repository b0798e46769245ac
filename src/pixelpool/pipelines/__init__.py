"""Task families. Each is imported lazily, inside worker processes only."""

from __future__ import annotations

import importlib

from pixelpool.pipelines.base import Family

FAMILY_MODULES = {
    name: f"pixelpool.pipelines.{name}.family"
    for name in ("diffusion", "upscale", "bgremove", "tag", "vision")
}


def get_family(name: str) -> Family:
    """The family implementation (imports torch and its libraries on first use)."""
    try:
        module = importlib.import_module(FAMILY_MODULES[name])
    except KeyError as exc:
        raise ValueError(f"unknown task family: {name!r}") from exc
    return module.FAMILY
