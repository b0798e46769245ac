"""Task families. Each is imported lazily, inside worker processes only."""

from __future__ import annotations

import importlib
import sys
from typing import Any

from pixelpool.pipelines.base import Family

FAMILY_MODULES = {
    name: f"pixelpool.pipelines.{name}.family"
    for name in ("diffusion", "upscale", "bgremove", "tag", "vision")
}

# Worker-wide settings the families read (the worker sets them once, at start).
RUNTIME_OPTIONS = (
    "batch_invariant",
    "channels_last",
    "compile",
    "compile_backend",
    "compile_warmup",
    "compile_cache_size",
)
_options: dict[str, Any] = {}


def configure(options: dict[str, Any]) -> dict[str, Any]:
    """Set the families' worker-wide options (see RUNTIME_OPTIONS); returns the old ones."""
    old = dict(_options)
    _options.clear()
    _options.update({k: v for k, v in options.items() if k in RUNTIME_OPTIONS and v is not None})
    return old


def option(name: str, default: Any) -> Any:
    return _options.get(name, default)


def get_family(name: str) -> Family:
    """The family implementation (imports torch and its libraries on first use)."""
    try:
        module = importlib.import_module(FAMILY_MODULES[name])
    except KeyError as exc:
        raise ValueError(f"unknown task family: {name!r}") from exc
    return module.FAMILY


def family_stats() -> dict[str, Any]:
    """Counters that the families already imported keep (diffusion: its text-embedding
    cache), for the worker's cache snapshot and so `/api/status`."""
    out: dict[str, Any] = {}
    for module_name in FAMILY_MODULES.values():
        family = getattr(sys.modules.get(module_name), "FAMILY", None)
        stats = getattr(family, "stats", None)
        if callable(stats):
            out.update(stats())
    return out
