"""Per-request LoRAs: adapters loaded once per worker and switched by weight.

Loading a LoRA file costs a read and a PEFT injection; switching between loaded
adapters only sets scales. So each loaded pipeline keeps its adapters (LRU, at
most MAX_ADAPTERS) and a request that uses none simply disables them: the base
model is never reloaded.
"""

from __future__ import annotations

import hashlib
import warnings
import weakref
from collections import OrderedDict
from typing import Any

from pixelpool.families.diffusion.params import LoraRef

MAX_ADAPTERS = 8

_LOADED: weakref.WeakKeyDictionary[Any, OrderedDict[str, None]] = weakref.WeakKeyDictionary()


def adapter_name(ref: LoraRef) -> str:
    """A PEFT-safe adapter name (no dots) that changes when the file changes."""
    return "lora_" + hashlib.sha256(ref.key.encode()).hexdigest()[:16]


def loaded_adapters(pipe: Any) -> list[str]:
    return list(_LOADED.get(pipe, ()))


def activate(pipe: Any, loras: list[LoraRef]) -> None:
    """Make exactly these LoRAs (at these weights) active on the pipeline's modules."""
    cache = _LOADED.setdefault(pipe, OrderedDict())
    if not loras:
        if cache:
            pipe.disable_lora()
        return
    names = [adapter_name(ref) for ref in loras]
    with warnings.catch_warnings():  # PEFT warns about what is intended here: many adapters
        warnings.filterwarnings("ignore", category=UserWarning, module="peft")
        for ref, name in zip(loras, names, strict=True):
            if name in cache:
                cache.move_to_end(name)
                continue
            pipe.load_lora_weights(ref.path, adapter_name=name)
            cache[name] = None
        stale = [n for n in list(cache)[: max(0, len(cache) - MAX_ADAPTERS)] if n not in names]
        if stale:
            pipe.delete_adapters(stale)
            for name in stale:
                del cache[name]
    pipe.enable_lora()
    pipe.set_adapters(names, adapter_weights=[ref.weight for ref in loras])
