"""The A1111 listing and control routes: models, samplers, options, progress, png-info."""

from __future__ import annotations

import asyncio
import io
from typing import Any

from fastapi import APIRouter, Request
from PIL import Image

from pixelpool.api import openapi_docs as docs
from pixelpool.api import ops
from pixelpool.api.a1111 import running
from pixelpool.api.a1111.errors import responses
from pixelpool.api.a1111.generate import decode_image, model_name
from pixelpool.api.a1111.models import PngInfoRequest
from pixelpool.api.auth import Caller
from pixelpool.api.errors import ApiError, field_error
from pixelpool.api.selfhosted import State
from pixelpool.api.uploads import check_image, max_input_pixels
from pixelpool.families.diffusion.infotext import parse_infotext
from pixelpool.families.diffusion.samplers import SAMPLERS, SCHEDULES
from pixelpool.registry.entry import ModelEntry

router = APIRouter(tags=["AUTOMATIC1111"])


def title(state: State, entry: ModelEntry) -> tuple[str, str | None, str | None]:
    """(title, short hash, sha256): A1111 titles a checkpoint `name [hash10]`; a model
    whose fingerprint is not computed yet is titled by its name alone."""
    full = state.registry.fingerprint(entry)
    if not full:
        return entry.name, None, None
    return f"{entry.name} [{full[:10]}]", full[:10], full


@router.get("/sdapi/v1/sd-models", responses=responses(*docs.AUTH))
async def sd_models(state: State, caller: Caller) -> list[dict[str, Any]]:
    listing = []
    for entry in state.registry.entries():
        if entry.family != "diffusion":
            continue
        name, short, full = title(state, entry)
        listing.append({"title": name, "model_name": entry.name, "hash": short,
                        "sha256": full, "filename": str(entry.path), "config": None})  # fmt: skip
    return listing


@router.get("/sdapi/v1/samplers", responses=responses(*docs.AUTH))
async def samplers(caller: Caller) -> list[dict[str, Any]]:
    return [{"name": name, "aliases": [], "options": {}} for name in SAMPLERS]


@router.get("/sdapi/v1/schedulers", responses=responses(*docs.AUTH))
async def schedulers(caller: Caller) -> list[dict[str, Any]]:
    names = {"Automatic": "automatic", **{k: k.lower().replace(" ", "_") for k in SCHEDULES}}
    return [{"name": key, "label": label, "aliases": None, "default_rho": -1,
             "need_inner_model": False} for label, key in names.items()]  # fmt: skip


@router.get("/sdapi/v1/loras", responses=responses(*docs.AUTH))
async def loras(state: State, caller: Caller) -> list[dict[str, Any]]:
    return [{"name": x.name, "alias": x.name, "path": str(x.path), "metadata": {}}
            for x in state.registry.loras()]  # fmt: skip


@router.get("/sdapi/v1/options", responses=responses(*docs.AUTH, 404))
async def get_options(state: State, caller: Caller) -> dict[str, Any]:
    """The caller's default model (per key, as `/switch-model` sets it) and fixed values."""
    entry = ops.resolve_model(state, None)
    return {"sd_model_checkpoint": title(state, entry)[0], "sd_vae": "Automatic",
            "CLIP_stop_at_last_layers": 1, "samples_format": "png"}  # fmt: skip


@router.post("/sdapi/v1/options", responses=responses(*docs.SCOPED, 400, 404, 413, 422))
async def set_options(body: dict[str, Any], state: State, caller: Caller) -> None:
    """Only `sd_model_checkpoint` is honoured: the caller's default model (an admin key:
    the server's), the mechanism of `/switch-model`. Other keys are ignored."""
    if "sd_model_checkpoint" not in body:
        return None
    caller.require("generate")
    name = model_name(body["sd_model_checkpoint"])
    if name is None:
        raise field_error("sd_model_checkpoint", "must name a model")
    try:
        entry = ops.resolve_model(state, name, "sd_model_checkpoint")
    except ApiError as exc:
        raise ApiError(exc.status, exc.message, "sd_model_checkpoint") from exc
    if "admin" in caller.scopes or caller.owner is None:
        state.settings.server.default_model = entry.qualified_name
        state.preferences.pop(caller.owner or "", None)
    else:
        state.preferences[caller.owner] = entry.qualified_name
    return None


@router.get("/sdapi/v1/progress", responses=responses(*docs.AUTH))
async def progress(request: Request, state: State, caller: Caller) -> dict[str, Any]:
    """The caller's own running /sdapi request; `current_image` stays null (no previews)."""
    jobs = [job for run in running.running(request, caller.owner) for job in run]
    finished, step, total = 0, 0, 0
    for job_id in jobs:
        record = await state.jobs.get(job_id)
        if record is not None and record.status.finished:
            finished += 1
            continue
        p = state.jobs.progress(job_id)
        if p and not total:
            step, total = int(p.get("step", 0)), int(p.get("total", 0))
    done = (finished + (step / total if total else 0)) / len(jobs) if jobs else 0.0
    return {
        "progress": done, "eta_relative": 0.0,
        "state": {"skipped": False, "interrupted": False, "job": jobs[finished] if jobs and
                  finished < len(jobs) else "", "job_count": len(jobs), "job_timestamp": "0",
                  "job_no": finished, "sampling_step": step, "sampling_steps": total},
        "current_image": None, "textinfo": None,
    }  # fmt: skip


@router.post("/sdapi/v1/interrupt", responses=responses(*docs.AUTH))
async def interrupt(request: Request, state: State, caller: Caller) -> None:
    """Cancel the caller's running /sdapi jobs; the request returns what finished."""
    for run in running.running(request, caller.owner):
        for job_id in run:
            try:
                await state.jobs.cancel(job_id)
            except KeyError:
                continue


def _read_text(data: bytes, max_pixels: int) -> tuple[str, dict[str, Any]]:
    """The image's text chunks, once `check_image` has found it a sound image."""
    check_image(data, "image", max_pixels)
    with Image.open(io.BytesIO(data)) as img:
        items = {k: v for k, v in img.info.items() if isinstance(v, str)}
    return str(items.pop("parameters", "")), items


@router.post("/sdapi/v1/png-info", responses=responses(*docs.AUTH, 400, 413, 422))
async def png_info(req: PngInfoRequest, state: State, caller: Caller) -> dict[str, Any]:
    data = decode_image(req.image, "image")
    text, items = await asyncio.to_thread(_read_text, data, max_input_pixels(state))
    return {"info": text, "items": items, "parameters": parse_infotext(text) if text else {}}
