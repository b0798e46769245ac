"""The sd-webui-controlnet extension's listing routes: `/controlnet/version`,
`/controlnet/model_list` and `/controlnet/module_list`, in the extension's shapes.

Models are listed as the extension titles them, `name [hash]` (A1111's short file hash
of the weights): the installed ControlNets, then the IP-Adapters. Modules are the
preprocessors the units here take (`controlnet.py`), ordered and described (`sliders`)
as the extension does.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

from fastapi import APIRouter

from pixelpool.api import openapi_docs as docs
from pixelpool.api.a1111.errors import responses
from pixelpool.api.auth import Caller
from pixelpool.api.selfhosted import State
from pixelpool.registry.controlnets import WEIGHT_FILES

router = APIRouter(tags=["AUTOMATIC1111"])
API_VERSION = 3  # the extension's external_code.get_api_version()
RESOLUTION = {"name": "Resolution", "value": 512, "min": 64, "max": 2048, "step": 8}
CANNY = [{"name": "Low Threshold", "value": 100, "min": 1, "max": 255, "step": 1},
         {"name": "High Threshold", "value": 200, "min": 1, "max": 255, "step": 1}]  # fmt: skip
# name: (label, sorting priority, extra sliders), as the extension registers them
MODULES: dict[str, tuple[str, int, list[dict[str, Any]]]] = {
    "none": ("none", 10, []),
    "canny": ("canny", 100, CANNY),
    "depth": ("depth_midas", 100, []),
    "depth_anything": ("depth_anything", 0, []),
    "depth_anything_v2": ("depth_anything_v2", 0, []),
    "ip-adapter-auto": ("ip-adapter-auto", 1000, []),
    "ip-adapter_clip_sd15": ("ip-adapter_clip_h", 100, []),
    "ip-adapter_clip_sdxl": ("ip-adapter_clip_g", 0, []),
    "ip-adapter_clip_sdxl_plus_vith": ("ip-adapter_clip_sdxl_plus_vith", 0, []),
}


def model_hash(path: Path) -> str:
    """A1111's short model hash (sha256 of 64 KiB at 1 MiB, 8 hex digits). Blocking."""
    try:
        with path.open("rb") as file:
            file.seek(0x100000)
            return hashlib.sha256(file.read(0x10000)).hexdigest()[:8]
    except OSError:
        return "NOFILE"


def _weights(directory: Path) -> Path:
    return next((directory / w for w in WEIGHT_FILES if (directory / w).is_file()), directory)


def _titles(state: State) -> list[str]:
    registry = state.registry
    found = [(c.name, _weights(c.path)) for c in registry.controlnets()]
    found += [(a.name, a.path) for a in registry.ip_adapters()]
    return [f"{name} [{model_hash(path)}]" for name, path in found]


@router.get("/controlnet/version", responses=responses(*docs.AUTH))
async def version(caller: Caller) -> dict[str, int]:
    return {"version": API_VERSION}


@router.get("/controlnet/model_list", responses=responses(*docs.AUTH))
async def model_list(state: State, caller: Caller) -> dict[str, list[str]]:
    """ControlNets and IP-Adapters, `name [hash]`, as units name them in `model`."""
    return {"model_list": await asyncio.to_thread(_titles, state)}


def _sorted(alias_names: bool) -> list[str]:
    def key(name: str) -> str:
        label, priority, _ = MODULES[name]
        return str(priority).zfill(8) + label

    rest = sorted((n for n in MODULES if n != "none"), key=key, reverse=True)
    return [MODULES[n][0] if alias_names else n for n in ["none", *rest]]


@router.get("/controlnet/module_list", responses=responses(*docs.AUTH, 422))
async def module_list(caller: Caller, alias_names: bool = False) -> dict[str, Any]:
    """The modules (preprocessors) units may name; `alias_names`: their UI labels."""
    names = _sorted(alias_names)
    by_label = {label: (sliders, name) for name, (label, _, sliders) in MODULES.items()}
    detail = {}
    for shown in names:
        sliders = MODULES[shown][2] if shown in MODULES else by_label[shown][0]
        detail[shown] = {"model_free": False, "sliders": [RESOLUTION, *sliders]}
    return {"module_list": names, "module_detail": detail}
