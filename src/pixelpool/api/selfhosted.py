"""The self-hosted desktop client's contract: `/generate`, `/models`, `/loras`, `/switch-model`.

(`/health` is in health.py.) Errors on these paths are `{"detail": "..."}`, as the
client reads them. `/switch-model` sets the caller's own default model (an admin
key: the server-wide default), in memory until restart; it loads nothing, the first
request for the model does.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI, Request
from pydantic import Field

from pixelpool.api import openapi_docs as docs
from pixelpool.api import ops
from pixelpool.api.auth import Caller
from pixelpool.api.diffusion import references
from pixelpool.api.errors import ApiError, ErrorInfo, add_error_format
from pixelpool.api.health import current_model, loaded_paths
from pixelpool.api.runs import b64, run_images
from pixelpool.api.state import State
from pixelpool.api.validation import Name, Prompt, RequestModel

router = APIRouter(tags=["self-hosted client"])

PATHS = frozenset({"/generate", "/models", "/loras", "/switch-model"})
REPORTED_PARAMS = ("prompt", "negative_prompt", "width", "height", "steps", "cfg_scale", "sampler",
                   "scheduler")  # fmt: skip


class GenerateRequest(RequestModel):
    """Strictly typed (`true` is not a number); prompts lose control characters."""

    prompt: Prompt
    model: Name | None = None
    negative_prompt: Prompt | None = None
    width: int | None = Field(None, description="default: the model's native size")
    height: int | None = None
    steps: int | None = None
    cfg_scale: float | None = None
    seed: int | None = Field(None, description="absent, 0 or -1: random")
    lora_name: Name | None = None
    lora_scale: float | None = None
    reference_image: str | None = Field(
        None, description="base64 image: guides the image through the IP-Adapter installed "
        "for the model's architecture (422 when none is)",
    )  # fmt: skip
    ip_adapter_scale: float | None = Field(None, description="default 0.7; 0: no effect")


class SwitchRequest(RequestModel):
    model: Name


def _detail(info: ErrorInfo) -> tuple[int, dict[str, Any]]:
    return info.status, {"detail": info.message}


def install(app: FastAPI) -> None:
    add_error_format(app, PATHS.__contains__, _detail)
    app.include_router(router)


def _loras(req: GenerateRequest) -> list[dict[str, Any]] | None:
    if not req.lora_name:
        return None
    weight = 1.0 if req.lora_scale is None else req.lora_scale
    return [{"name": req.lora_name, "weight": weight}]


@router.post(
    "/generate",
    responses=docs.detail(*docs.SYNC, 500),
    openapi_extra=docs.example(docs.TXT2IMG),
)
async def generate(req: GenerateRequest, request: Request, state: State, caller: Caller) -> Any:
    """One image: `{image (base64), seed, parameters}`."""
    caller.require("generate")
    spec = ops.txt2img_spec(
        state, prompt=req.prompt, negative_prompt=req.negative_prompt or "", model=req.model,
        width=req.width, height=req.height, steps=req.steps, cfg_scale=req.cfg_scale,
        seed=req.seed, loras=_loras(req),
    )  # fmt: skip
    if req.reference_image:
        scale = references.DEFAULT_SCALE if req.ip_adapter_scale is None else req.ip_adapter_scale
        spec = await references.from_encoded(
            state, spec, caller.owner, [req.reference_image], scale=scale,
            field="reference_image", name_field="reference_image", scale_field="ip_adapter_scale",
        )  # fmt: skip
    (out,) = await run_images(state, request, [spec], caller.owner)
    used = {k: spec.params.get(k) for k in REPORTED_PARAMS}
    parameters = {"model": spec.model["name"], **used, "seed": out.seed}
    if spec.params.get("ip_adapter"):
        parameters["ip_adapter"] = spec.params["ip_adapter"]["name"]
        parameters["ip_adapter_scale"] = spec.params["ip_adapter"]["scale"]
    return {"image": b64(out.data), "seed": out.seed, "parameters": parameters}


@router.get("/models", responses=docs.detail(*docs.AUTH))
async def models(state: State, caller: Caller) -> dict[str, Any]:
    loaded = loaded_paths(state.scheduler.snapshot())
    listing = {}
    for entry in state.registry.entries():
        info = ops.describe_model(state, entry)
        defaults = info.get("defaults", {})
        listing[entry.name] = {
            "description": info.get("description") or f"{entry.architecture} ({entry.format})",
            "downloaded": True,
            "loaded": str(entry.path) in loaded,
            "default_cfg": defaults.get("cfg_scale"),
            "default_steps": defaults.get("steps"),
        }
    return {"models": listing, "current": current_model(state)}


@router.get("/loras", responses=docs.detail(*docs.AUTH))
async def loras(state: State, caller: Caller) -> dict[str, list[str]]:
    return {"loras": [lora.name for lora in state.registry.loras()]}


@router.post(
    "/switch-model",
    responses=docs.detail(400, *docs.SCOPED, 413, 422, 503),
    openapi_extra=docs.example(docs.MODEL),
)
async def switch_model(req: SwitchRequest, state: State, caller: Caller) -> dict[str, str]:
    """The caller's default model for requests that name none, on every dialect; with the
    admin scope, the server's (for every key without its own). 400 for an unknown model,
    503 when its files have gone from disk."""
    caller.require("generate")
    try:
        entry = ops.resolve_model(state, req.model)
    except ApiError as exc:
        raise ApiError(400, f"unknown model: {req.model}", "model") from exc
    if not entry.path.exists():
        raise ApiError(503, f"model files are missing: {entry.name}", "model")
    if "admin" in caller.scopes or caller.owner is None:
        state.settings.server.default_model = entry.qualified_name
        state.preferences.pop(caller.owner or "", None)
        return {"status": "ok", "model": entry.name, "applies_to": "server"}
    state.preferences[caller.owner] = entry.qualified_name
    return {"status": "ok", "model": entry.name, "applies_to": "key"}
