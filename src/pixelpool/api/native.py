"""The native dialect (`/api`, FoxBurrow-compatible shapes)."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import Field, model_validator

from pixelpool.api import health, ops, visibility
from pixelpool.api import openapi_docs as docs
from pixelpool.api.auth import Caller, Principal
from pixelpool.api.diffusion import caches, references
from pixelpool.api.diffusion.controlnet import ControlNetRequest, attach
from pixelpool.api.diffusion.references import IPAdapterRequest
from pixelpool.api.errors import ApiError
from pixelpool.api.state import AppState, State
from pixelpool.api.validation import Name, Prompt, RequestModel, check_id
from pixelpool.api.vision import native as vision_native
from pixelpool.api.waiting import wait_or_cancel
from pixelpool.families.diffusion import infotext
from pixelpool.jobs.spec import JobRecord, JobStatus

router = APIRouter(prefix="/api", tags=["native"])

# Every op under /api/enqueue/{op}: "generate" is routed here, the others in
# diffusion/native.py or in their family's API module (upscale.py, bgremove.py, tag.py).
OPERATIONS = ("generate", "generate-hires", "generate-latents", "img2img", "inpaint",
              "decode-latents", "encode-latents", "hires-latents", "enhance", "upscale",
              "bgremove", "tag", "segment", "detect", "depth", "embed")  # fmt: skip


class LoraRequest(RequestModel):
    """One LoRA of a request: a name from /api/lora-list and its weight."""

    name: Name = Field(min_length=1)
    weight: float = Field(1.0, ge=-10, le=10)


class GenerateRequest(RequestModel):
    """POST /api/generate and /api/enqueue/generate. Unknown fields are rejected by name;
    types are strict (`"steps": true` is a 422), prompts lose control characters."""

    prompt: Prompt
    negative_prompt: Prompt = Field("", description="empty: the model's default negative prompt")
    model: Name | None = None
    width: int | None = Field(None, description="default: the model's native size")
    height: int | None = None
    steps: int | None = Field(None, description="default 25")
    cfg_scale: float | None = Field(None, description="default 7")
    seed: int | None = Field(None, description="0, -1 or absent: random; the seed used is reported")
    sampler: Name | None = None
    scheduler: Name | None = None
    priority: int = Field(100, ge=1, le=100)
    output_format: str = Field("png", pattern="^(png|jpeg|webp)$")
    vae_tile_width: int = Field(
        0, ge=0, description="accepted for compatibility; tiling is automatic"
    )
    vae_tile_height: int = Field(0, ge=0)
    regional_prompting: bool = False
    loras: list[LoraRequest] = Field([], description="also <lora:name:weight> in the prompt")
    subseed: int | None = Field(None, description="variation seed; 0, -1 or absent: random")
    subseed_strength: float = Field(0.0, ge=0, le=1, description="0: no variation")
    quality: Name | None = Field(
        None, description="a preset: low, medium, high, hd, or the model's"
    )
    preview: bool = Field(False, description="send preview images on the job's events")
    preview_every: int = Field(1, ge=1, le=1000, description="steps between previews")
    ip_adapter: IPAdapterRequest | None = Field(
        None, description="reference images guiding the result (generate, img2img, inpaint)"
    )
    controlnets: list[ControlNetRequest] = Field(
        [], description="ControlNets with their control images (txt2img, img2img, inpaint)"
    )
    clip_embeddings: list[dict[str, Any]] | None = Field(
        None,
        description="FoxBurrow's cached text embeddings (from a `clip_embeddings` WebSocket "
        "message): used instead of encoding the prompt when they fit the model",
    )
    emit_caches: bool = Field(
        False, description="send this job's clip_embeddings and latent_cache on the WebSocket"
    )
    infotext: str | None = Field(
        None,
        max_length=infotext.MAX_CHARS,
        description="A1111 `parameters` text (as in pixelpool's PNGs): its prompt, steps, "
        "sampler, cfg, seed, size, model, LoRAs, variation seed and hi-res fields fill the "
        "fields this request does not give",
    )

    @model_validator(mode="before")
    @classmethod
    def _from_infotext(cls, data: Any) -> Any:
        """The fields `infotext` gives, under the ones the request gives itself."""
        if not isinstance(data, dict) or not isinstance(data.get("infotext"), str):
            return data
        try:
            parsed = infotext.request_fields(data["infotext"])
        except infotext.InfotextError as exc:
            raise ApiError(422, f"infotext: {exc}", "infotext") from exc
        given = {k: v for k, v in parsed.items() if k in cls.model_fields}
        if "model_hash" in parsed:
            given["model_hash"] = parsed["model_hash"]
        merged = {**given, **data}
        if "model_hash" in merged and "model" in data:
            merged.pop("model_hash")
        return merged

    model_hash: str | None = Field(
        None, description="with infotext: the model by A1111 hash when its name is not installed"
    )


API_ONLY = {"vae_tile_width", "vae_tile_height", "regional_prompting", "preview", "preview_every",
            "clip_embeddings", "emit_caches", "infotext", "model_hash", "ip_adapter",
            "controlnets"}  # fmt: skip


async def _spec(state: AppState, req: GenerateRequest, owner: str | None) -> Any:
    if req.regional_prompting:
        raise ApiError(422, "regional_prompting: not supported", "regional_prompting")
    fields = req.model_dump(exclude=API_ONLY)
    fields["model"] = ops.infotext_model(state, req.model, req.model_hash)
    spec = ops.txt2img_spec(state, **fields)
    if req.ip_adapter is not None:
        ref = req.ip_adapter
        spec = await references.from_encoded(
            state, spec, owner, ref.images, name=ref.name, scale=ref.scale
        )
    if req.preview:
        ops.enable_previews(state, spec, req.preview_every)
    return spec


async def _build(state: AppState, req: GenerateRequest, owner: str | None) -> Any:
    """The txt2img spec with what the request attaches: reference images (in `_spec`),
    ControlNets (their images stored) and the client's cached text embeddings."""
    spec = await _spec(state, req, owner)
    if req.controlnets:
        entry = ops.resolve_model(state, ops.infotext_model(state, req.model, req.model_hash))
        spec = await attach(state, entry, spec, req.controlnets, owner)
    await caches.attach(state, spec, req, owner)
    return spec


async def result_response(state: AppState, record: JobRecord, index: int = 0) -> Any:
    if record.status in (JobStatus.queued, JobStatus.running):
        return JSONResponse({"job_id": record.id, "status": record.status.value}, status_code=202)
    if record.status is JobStatus.expired:
        raise ApiError(410, f"job {record.id} has expired; its result was deleted")
    if record.status is not JobStatus.completed:
        raise ApiError(409, f"job {record.id} {record.status.value}: {record.error or 'no result'}")
    if record.result.get("kind") == "json":  # a JSON result is its info (tags)
        return JSONResponse(record.result.get("info", {}), headers={"X-Job-Id": record.id})
    artifacts = record.result.get("artifacts", [])
    if not 0 <= index < len(artifacts):
        raise ApiError(404, f"index: job {record.id} has {len(artifacts)} result(s)", "index")
    art = await state.jobs.artifacts.get(artifacts[index]["id"])
    if art is None:
        raise ApiError(410, f"job {record.id}: result has expired")
    seeds = record.result.get("seeds") or []
    headers = {"X-Job-Id": record.id}
    if index < len(seeds):  # only generated images have seeds
        headers["X-Seed"] = str(seeds[index])
    if art.data is not None:
        return Response(art.data, media_type=art.media_type, headers=headers)
    return FileResponse(art.path, media_type=art.media_type, headers=headers)


def job_view(state: AppState, record: JobRecord) -> dict[str, Any]:
    now = time.time()
    live = state.jobs.progress(record.id)
    step, total = live.get("step", 0), live.get("total", record.spec.params.get("steps", 0))
    if record.status is JobStatus.completed:
        step, progress = total, 1.0
    else:
        progress = step / total if total else 0.0
    run_s = record.result.get("run_s")
    end = record.finished or now
    info = record.result.get("info") or {}
    extra = {"clip_embeddings": info["clip_embeddings"]} if "clip_embeddings" in info else {}
    return {
        **extra,  # what became of the client's cached text embeddings
        "job_id": record.id,
        "op": record.spec.op,
        "model": record.spec.model["name"],
        "status": record.status.value,
        "stage": live.get("stage", "denoise" if record.status is JobStatus.running else None),
        "stage_index": 0,
        "stage_count": 1,
        "denoise_step": step,
        "denoise_total": total,
        "progress": round(progress, 4),
        "gpus": [record.device] if record.device else [],
        "batch_size": record.batch_size,
        "attempts": record.attempts,
        "created_at": record.created,
        "queued_s": round((record.started or end) - record.created, 4),
        "elapsed_s": round(end - record.created, 4),
        "gpu_time_s": round(run_s, 4) if run_s is not None else None,
        "seeds": record.result.get("seeds") or [record.spec.params.get("seed")],
        "error": record.error,
    }


async def visible_job(state: AppState, job_id: str, caller: Principal) -> JobRecord:
    """The job, or 404 when it does not exist or belongs to another key."""
    check_id("job_id", job_id)
    record = await state.jobs.get(job_id)
    if record is None or not caller.may_see(record.owner):
        raise ApiError(404, f"job not found: {job_id}", "job_id")
    return record


@router.get("/status", responses=docs.native(*docs.AUTH))
async def status(state: State, caller: Caller) -> dict[str, Any]:
    return {
        "ready": state.scheduler.ready,
        "uptime_s": round(time.time() - state.started, 1),
        "queue_depth": state.scheduler.queue_depth(),
        "active_jobs": state.jobs.active_count(),
        "devices": visibility.devices(state, caller),
        "nodes": visibility.nodes(await asyncio.to_thread(state.scheduler.nodes), caller),
        "models": len(state.registry.entries()),
        **health.storage_info(state),  # new jobs get 503 while storage_low
    }


@router.get("/model-list", responses=docs.native(*docs.AUTH))
async def model_list(state: State, caller: Caller) -> list[dict[str, Any]]:
    models = [ops.describe_model(state, e) for e in state.registry.entries()]
    for info in models:
        if state.settings.cluster.backend == "ray":  # each node has its own models dir
            info["nodes"] = state.scheduler.model_nodes(info["path"])
        info["path"] = visibility.shown_path(state, info["path"], caller)
    return models


@router.post("/rescan-models", responses=docs.native(*docs.SCOPED))
async def rescan_models(state: State, caller: Caller) -> dict[str, int]:
    caller.require("admin")
    result = await asyncio.to_thread(state.registry.scan)
    await state.scheduler.rediscover()  # a cluster's nodes say which new models they have
    return result.__dict__


@router.post(
    "/generate",
    response_class=FileResponse,
    responses={**docs.images(), **docs.native(*docs.SYNC)},
    openapi_extra=docs.example(docs.TXT2IMG),
)
async def generate(req: GenerateRequest, request: Request, state: State, caller: Caller) -> Any:
    caller.require("generate")
    record = await ops.submit(state, await _build(state, req, caller.owner), caller.owner)
    return await result_response(state, await wait_or_cancel(state, request, record.id))


@router.post(
    "/enqueue/{operation}",
    responses=docs.native(*docs.SUBMIT),
    openapi_extra=docs.example(docs.TXT2IMG),
)
async def enqueue(
    operation: str,
    req: GenerateRequest,
    state: State,
    caller: Caller,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> dict[str, str]:
    caller.require("generate")
    if operation not in OPERATIONS:
        raise ApiError(
            404,
            f"operation: unknown operation {operation!r}; valid: {', '.join(OPERATIONS)}",
            "operation",
        )
    spec = await _build(state, req, caller.owner)
    record = await ops.submit(state, spec, caller.owner, idempotency_key)
    return {"job_id": record.id}


@router.get("/job/{job_id}", responses=docs.native(*docs.AUTH, 404))
async def job_status(job_id: str, state: State, caller: Caller) -> dict[str, Any]:
    return job_view(state, await visible_job(state, job_id, caller))


@router.get("/jobs", responses=docs.native(*docs.AUTH, 422))
async def list_jobs(
    state: State,
    caller: Caller,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    """The caller's jobs of every family, newest first (everyone's on a server without
    auth), each as `GET /api/job/{id}` shows it: the status page's recent jobs."""
    records, total = await state.jobs.store.owned(
        caller.owner, None, limit, offset, everyone=caller.owner is None
    )
    jobs = [job_view(state, await state.jobs.get(r.id) or r) for r in records]
    return {"jobs": jobs, "total": total, "limit": limit, "offset": offset}


@router.get(
    "/job/{job_id}/result",
    response_class=FileResponse,
    responses={
        **docs.binary(*docs.IMAGE_TYPES, *docs.LATENT_TYPES, description="An image or latents"),
        **docs.PENDING,
        **docs.native(*docs.AUTH, 404, *docs.RESULT, 422),
    },
)
async def job_result(
    job_id: str, request: Request, state: State, caller: Caller, index: int = 0
) -> Any:
    """The job's result; a completed vision job's is its JSON, rendered with the output
    options given as query parameters (`output_format`, `array_format`, ...)."""
    record = await visible_job(state, job_id, caller)
    if record.spec.family == "vision" and record.status is JobStatus.completed:
        return await vision_native.job_result(state, request, caller.owner, record)
    return await result_response(state, record, index)


@router.post("/job/{job_id}/cancel", responses=docs.native(*docs.AUTH, 404))
async def job_cancel(job_id: str, state: State, caller: Caller) -> dict[str, str]:
    await visible_job(state, job_id, caller)
    return {"status": await state.jobs.cancel(job_id)}
