"""Which models a job names besides its main one (LoRAs, ControlNets, IP-Adapters and
their image encoders, an upscaler, a depth model): on a cluster each node has its own
models dir, so a job may go only to a node that has them all.

A TAESD preview decoder is not needed: a worker that cannot load it draws its previews
with the latent-to-RGB approximation, so a node without it still runs the job."""

from __future__ import annotations

from collections.abc import Set
from typing import Any

OPTIONAL = frozenset({"preview_decoder"})  # the worker does without (see above)


def named_models(params: dict[str, Any], known: Set[str]) -> dict[str, str]:
    """Every string in `params` that is one of the `known` model paths, with the top-level
    param that names it (the field a refusal blames). Other strings (prompts, uploads)
    are not models: only the registry's paths count."""
    found: dict[str, str] = {}

    def walk(value: Any, field: str) -> None:
        if isinstance(value, str):
            if value in known:
                found.setdefault(value, field)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item, field)
        elif isinstance(value, list | tuple):
            for item in value:
                walk(item, field)

    for field, value in params.items():
        if field not in OPTIONAL:
            walk(value, field)
    return found
