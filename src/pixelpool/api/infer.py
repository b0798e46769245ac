"""The inference dialect: `/`, `/v1`, `/v1/health`, `/v1/models[/{id}]`, `/infer`, `/v1/infer`.

Model ids are SHA-256 fingerprints (names work too). `GET /v1/models` answers in
OpenAI's list shape and, beside it, this dialect's `models` and `count`.
Errors under /v1 use OpenAI's envelope; `/infer` uses the native shape.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import Field

from pixelpool import __version__
from pixelpool.api import openapi_docs as docs
from pixelpool.api import ops, status_page
from pixelpool.api.auth import Caller
from pixelpool.api.health import health_body
from pixelpool.api.runs import b64, build_specs, check_count, run_images
from pixelpool.api.state import AppState, State
from pixelpool.api.validation import Name, Prompt, RequestModel
from pixelpool.api.vision.types import MODEL_TYPES
from pixelpool.families.vision import task_of
from pixelpool.jobs.spec import JobSpec
from pixelpool.registry.entry import ModelEntry

router = APIRouter(tags=["inference"])

FIELD_NAMES = {"model": "model_id", "steps": "num_inference_steps", "cfg_scale": "guidance_scale"}
LINKS = {
    "health": "/v1/health",
    "models": "/v1/models",
    "infer": "/v1/infer",
    "images": "/v1/images/generations",
    "native": "/api",
    "docs": "/docs",
}


class InferRequest(RequestModel):
    """Strictly typed (`true` is not a number); prompts lose control characters."""

    id: Name = Field(min_length=1, max_length=200, description="echoed in the response")
    model_id: Name = Field(description="SHA-256 fingerprint (a 10+ digit prefix or a name works)")
    prompt: Prompt = Field(min_length=1, max_length=1000)
    negative_prompt: Prompt | None = None
    num_inference_steps: int = Field(30, ge=1, le=150)
    guidance_scale: float = Field(7.5, ge=1, le=20)
    width: int | None = Field(None, ge=256, le=1024, description="default: the model's native")
    height: int | None = Field(None, ge=256, le=1024)
    seed: int | None = Field(None, description="absent, 0 or -1: random; image i gets seed+i")
    num_images: int = Field(1, ge=1, le=4)


def _model_object(entry: ModelEntry) -> dict[str, Any]:
    """OpenAI's model object: `id` is the name clients pass as `model`."""
    return {"id": entry.name, "object": "model", "created": entry.mtime_ns // 10**9,
            "owned_by": "pixelpool"}  # fmt: skip


def model_info(state: AppState, entry: ModelEntry) -> dict[str, Any]:
    """This dialect's model shape (id = fingerprint, path relative to the models dir)."""
    try:
        path = entry.path.relative_to(state.registry.models_dir)
    except ValueError:
        path = entry.path
    return {
        "id": state.registry.fingerprint(entry),
        "name": entry.name,
        "size": entry.size_bytes,
        "path": str(path),
        "extension": entry.path.suffix,
        "architecture": entry.architecture,
    }


VISION_ENDPOINTS = {
    "health": "/health",
    "models_status": "/models/status",
    "load": "/models/load",
    "unload": "/models/unload",
    "unload_all": "/models/unload-all",
    "inference": [f"/inference/{t}" for t in MODEL_TYPES],
    "submit": "/jobs/submit/{model_type}",
    "jobs": "/jobs",
    "job": "/jobs/{job_id}",
}


@router.get(
    "/",
    response_model=dict[str, Any],
    responses={200: {"content": {"text/html": {}}, "description": "JSON, or the status page"}},
)
async def root(state: State, request: Request, response: Response) -> Any:
    """Service info; also the Vision Models API's: its endpoints and model types with
    the installed vision model that serves each (null: none installed). A browser
    (`Accept` ranking `text/html` above JSON) gets the status page instead."""
    if status_page.wants_html(request.headers.get("accept")):
        return status_page.page()
    response.headers["Vary"] = "Accept"
    vision = [e for e in state.registry.entries() if e.family == "vision"]
    models = {
        t: next((e.name for e in vision if task_of(e.architecture) == op), None)
        for t, op in MODEL_TYPES.items()
    }
    return {"name": "pixelpool", "version": __version__, "latest": "/v1", "links": LINKS,
            "message": "pixelpool: image models, and the Vision Models API",
            "endpoints": VISION_ENDPOINTS, "models": models, "docs": "/docs"}  # fmt: skip


@router.get("/v1")
async def v1_info() -> dict[str, Any]:
    return {"name": "pixelpool", "version": "v1", "server_version": __version__, "links": LINKS}


@router.get("/v1/health")
async def v1_health(state: State) -> dict[str, Any]:
    return health_body(state)


@router.get("/v1/models", responses=docs.openai(*docs.AUTH))
async def list_models(state: State, caller: Caller) -> dict[str, Any]:
    entries = state.registry.entries()
    return {
        "object": "list",
        "data": [_model_object(e) for e in entries],
        "models": [model_info(state, e) for e in entries],
        "count": len(entries),
    }


@router.get("/v1/models/{model_id:path}", responses=docs.openai(*docs.AUTH, 404, 422))
async def get_model(model_id: str, state: State, caller: Caller) -> dict[str, Any]:
    """By fingerprint (or prefix, or name); both this dialect's and OpenAI's fields."""
    entry = ops.resolve_model(state, model_id, "model_id", family=None)
    return {**_model_object(entry), **model_info(state, entry)}


@router.post(
    "/infer", responses=docs.native(*docs.SYNC, 500), openapi_extra=docs.example(docs.INFER)
)
@router.post(
    "/v1/infer", responses=docs.openai(*docs.SYNC, 500), openapi_extra=docs.example(docs.INFER)
)
async def infer(req: InferRequest, request: Request, state: State, caller: Caller) -> Any:
    caller.require("generate")
    started = time.perf_counter()
    count = check_count(state, req.num_images, "num_images")
    entry = ops.resolve_model(state, req.model_id, "model_id")

    def build(seed: int | None) -> JobSpec:
        return ops.txt2img_spec(
            state, prompt=req.prompt, negative_prompt=req.negative_prompt or "",
            model=entry.qualified_name, width=req.width, height=req.height,
            steps=req.num_inference_steps, cfg_scale=req.guidance_scale, seed=seed,
        )  # fmt: skip

    specs = build_specs(build, req.seed, count, FIELD_NAMES)
    outputs = await run_images(state, request, specs, caller.owner)
    return {
        "id": req.id,
        "model_id": state.registry.fingerprint(entry) or req.model_id,
        "images": [
            {"base64": b64(o.data), "seed": o.seed, "width": o.width, "height": o.height}
            for o in outputs
        ],
        "processing_time": round(time.perf_counter() - started, 3),
        "prompt": req.prompt,
        "negative_prompt": req.negative_prompt,
        "num_inference_steps": req.num_inference_steps,
        "guidance_scale": req.guidance_scale,
    }
