"""Chaining by id: one job's output feeds the next without a base64 round trip.

- `boxes_from`: the boxes of a completed detect job (or of a stored detect result)
  become SAM 3 box prompts, per image, optionally filtered by label and score.
- `mask_id`: a SAM 3 mask (a segment job's instance, or a stored mask artifact)
  becomes the white-is-repaint mask of an inpaint.
- `image_id`: a stored image (a job's image result, or an image artifact) becomes
  the input of a one-image op (upscale, bgremove, tag).

Job ids and artifact ids are both opaque tokens; a reference is looked up as a job
first, then as an artifact. Another key's job or artifact is a 404, exactly as an
unknown id is, so ids never leak across keys. Every error names the request field.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from pixelpool.api.errors import ApiError, field_error
from pixelpool.api.state import AppState
from pixelpool.api.validation import check_id
from pixelpool.jobs.artifacts import Artifact
from pixelpool.jobs.spec import JobRecord, JobStatus

NPY_MEDIA_TYPE = "application/x-npy"
JSON_MEDIA_TYPE = "application/json"
MAX_JSON_BYTES = 32 << 20  # a stored detect result larger than this is not boxes
_MASK_REF = re.compile(r"^([^:]+)((?::\d+){0,3})$")
Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Found:
    """What an id names: a job of the caller, or an artifact of the caller."""

    job: JobRecord | None = None
    artifact: Artifact | None = None


def _visible(owner: str | None, thing_owner: str | None) -> bool:
    """As `Principal.may_see`: auth off (owner None) sees everything, else own things only."""
    return owner is None or thing_owner == owner


async def find(state: AppState, ref: Any, field: str, owner: str | None) -> Found:
    """The caller's job or artifact with this id; a 404 naming `field` otherwise."""
    if not isinstance(ref, str):
        raise field_error(field, "must be a job id or an artifact id (a string)")
    check_id(field, ref, "job or artifact")
    record = await state.jobs.get(ref)
    if record is not None and _visible(owner, record.owner):
        return Found(job=record)
    art = await state.jobs.artifacts.get(ref)
    if art is not None and _visible(owner, art.owner):
        return Found(artifact=art)
    raise ApiError(404, f"{field}: no job or artifact {ref} (or it has expired)", field)


def check_completed(record: JobRecord, field: str) -> None:
    """A job whose result can be used: 409 while it runs or when it failed, 410 expired."""
    if record.status is JobStatus.completed:
        return
    if record.status is JobStatus.expired:
        raise ApiError(410, f"{field}: job {record.id} has expired; its result was deleted", field)
    reason = f": {record.error}" if record.error else ""
    raise ApiError(409, f"{field}: job {record.id} is {record.status.value}{reason}", field)


async def artifact_bytes(state: AppState, art: Artifact, field: str) -> bytes:
    data = await state.jobs.artifacts.read(art)
    if data is None:
        raise ApiError(410, f"{field}: artifact {art.id} has expired", field)
    return data


async def _result_artifact(state: AppState, record: JobRecord, name: str, field: str) -> bytes:
    """The bytes of the job's result artifact called `name` (an array such as masks/0/0)."""
    for meta in record.result.get("artifacts", []):
        if meta.get("name") == name:
            art = await state.jobs.artifacts.get(meta["id"])
            if art is None:
                raise ApiError(410, f"{field}: job {record.id}: result has expired", field)
            return await artifact_bytes(state, art, field)
    raise ApiError(410, f"{field}: job {record.id} has no stored {name}", field)


def load_npy(data: bytes, field: str) -> np.ndarray:
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise field_error(field, f"the artifact is not a readable .npy array: {exc}") from exc


# --- boxes_from ----------------------------------------------------------------------


@dataclass(frozen=True)
class BoxesFrom:
    """The `boxes_from` of a segment request: a detect result and optional filters."""

    ref: str
    labels: frozenset[str] | None = None
    min_score: float = 0.0


def parse_boxes_from(value: Any, field: str = "boxes_from") -> BoxesFrom:
    """`"<id>"` or `{"id": "<id>", "labels": [...], "min_score": 0.3}`."""
    if isinstance(value, str):
        return BoxesFrom(value)
    if not isinstance(value, dict):
        raise field_error(field, 'must be an id or {"id", "labels", "min_score"}')
    unknown = sorted(set(value) - {"id", "labels", "min_score"})
    if unknown:
        raise field_error(field, f"unknown key {unknown[0]!r}; valid: id, labels, min_score")
    ref, labels, score = value.get("id"), value.get("labels"), value.get("min_score", 0.0)
    if not isinstance(ref, str):
        raise field_error(field, "id: must be a job id or an artifact id")
    if labels is not None and (
        not isinstance(labels, list) or not all(isinstance(x, str) for x in labels)
    ):
        raise field_error(field, "labels: must be a list of strings")
    if isinstance(score, bool) or not isinstance(score, int | float) or not 0 <= score <= 1:
        raise field_error(field, f"min_score: must be a number between 0 and 1; got {score!r}")
    return BoxesFrom(ref, frozenset(labels) if labels is not None else None, float(score))


@dataclass(frozen=True)
class Detections:
    """Per image: (width, height) and its detections; with the detect job's stored images
    when the reference was a job (so a segment request may leave its images out)."""

    sizes: list[tuple[int, int]]
    boxes: list[list[Box]]
    images: list[str] | None = None


def _per_image(payload: Any) -> list[dict[str, Any]] | None:
    """The per-image detections of a detect result: `info` of a job, or a stored response."""
    if isinstance(payload, dict):
        for key in ("images", "results", "predictions", "data"):
            found = _per_image(payload.get(key)) if key in payload else None
            if found is not None:
                return found
        return None
    if isinstance(payload, list) and all(
        isinstance(x, dict) and isinstance(x.get("boxes"), list) for x in payload
    ):
        return payload
    return None


def _filtered(entry: dict[str, Any], spec: BoxesFrom, field: str) -> list[Box]:
    boxes, scores = entry.get("boxes") or [], entry.get("scores")
    labels = entry.get("labels") or entry.get("text_labels")
    out: list[Box] = []
    try:
        for k, box in enumerate(boxes):
            score = float(scores[k]) if isinstance(scores, list) and k < len(scores) else 1.0
            label = labels[k] if isinstance(labels, list) and k < len(labels) else None
            if score < spec.min_score or (spec.labels is not None and label not in spec.labels):
                continue
            x0, y0, x1, y1 = (float(v) for v in box)
            out.append((x0, y0, x1, y1))
    except (TypeError, ValueError) as exc:
        raise field_error(field, "the detect result holds a malformed box or score") from exc
    return out


async def detections(
    state: AppState, spec: BoxesFrom, owner: str | None, field: str = "boxes_from"
) -> Detections:
    """The boxes (filtered) of a completed detect job, or of a stored detect response."""
    found = await find(state, spec.ref, field, owner)
    images: list[str] | None = None
    if found.job is not None:
        record = found.job
        if record.spec.family != "vision" or record.spec.op != "detect":
            raise field_error(field, f"job {record.id} is a {record.spec.op} job, not detect")
        check_completed(record, field)
        payload: Any = record.result.get("info", {})
        images = list(record.spec.params.get("images") or [])
    else:
        assert found.artifact is not None
        art = found.artifact
        if art.media_type != JSON_MEDIA_TYPE or art.size > MAX_JSON_BYTES:
            raise field_error(field, f"artifact {art.id} is {art.media_type}, not a detect result")
        try:
            payload = json.loads(await artifact_bytes(state, art, field))
        except ValueError as exc:
            raise field_error(field, f"artifact {art.id} is not JSON") from exc
    entries = _per_image(payload)
    if entries is None:
        raise field_error(field, f"{spec.ref} holds no per-image detections (boxes)")
    sizes = [(int(e.get("width") or 0), int(e.get("height") or 0)) for e in entries]
    return Detections(sizes, [_filtered(e, spec, field) for e in entries], images)


# --- mask_id -------------------------------------------------------------------------


@dataclass(frozen=True)
class MaskRef:
    """`<segment job id>[:<image>[:<prompt>[:<instance>]]]`; parts left out: all of them."""

    ref: str
    image: int = 0
    prompt: int | None = None
    instance: int | None = None


def parse_mask_ref(value: Any, field: str = "mask_id") -> MaskRef:
    if not isinstance(value, str) or not (match := _MASK_REF.fullmatch(value.strip())):
        raise field_error(
            field, "must be an artifact id or <segment job id>[:<image>[:<prompt>[:<instance>]]]"
        )
    parts = [int(p) for p in match.group(2).split(":")[1:]]
    parts += [None] * (3 - len(parts))  # type: ignore[list-item]
    return MaskRef(match.group(1), parts[0] or 0, parts[1], parts[2])


def _pick(items: list[Any], index: int | None, what: str, where: str, field: str) -> list[Any]:
    if index is None:
        return items
    if not 0 <= index < len(items):
        raise ApiError(404, f"{field}: {where} has {len(items)} {what}(s), no {index}", field)
    return [items[index]]


async def _segment_mask(state: AppState, record: JobRecord, ref: MaskRef, field: str) -> np.ndarray:
    """The union of the chosen instances' masks of a completed segment job."""
    if record.spec.family != "vision" or record.spec.op != "segment":
        raise field_error(field, f"job {record.id} is a {record.spec.op} job, not segment")
    check_completed(record, field)
    images = record.result.get("info", {}).get("images", [])
    (entry,) = _pick(images, ref.image, "image", f"job {record.id}", field)
    size = (int(entry["height"]), int(entry["width"]))
    union = np.zeros(size, bool)
    where = f"image {ref.image}"
    for query in _pick(entry["prompts"], ref.prompt, "prompt", where, field):
        picked = _pick(query["instances"], ref.instance, "instance", f"{where}, that prompt", field)
        if not picked:
            continue
        stack = load_npy(await _result_artifact(state, record, query["masks"], field), field)
        for inst in picked:
            union |= stack[int(inst["mask"])].astype(bool)
    return union


def _mask_array(array: np.ndarray, field: str) -> np.ndarray:
    """An HxW mask from a stored array: HxW, or NxHxW (their union); nonzero is repaint."""
    if array.ndim == 3:
        array = array.any(axis=0) if array.shape[0] else np.zeros(array.shape[1:], bool)
    if array.ndim != 2 or array.dtype.kind not in "biuf":
        raise field_error(field, f"a mask array is HxW or NxHxW numbers, not {array.shape}")
    return array > (0.5 if array.dtype.kind == "f" else 0)


def mask_png(mask: np.ndarray, size: tuple[int, int] | None) -> bytes:
    """A bool HxW mask as the L-mode PNG inpaint reads (white = repaint), at `size`
    (width, height) if given, resized nearest-neighbour so it stays binary."""
    img = Image.fromarray(np.where(mask, 255, 0).astype(np.uint8), "L")
    if size is not None and img.size != size:
        img = img.resize(size, Image.Resampling.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


async def mask_from_id(
    state: AppState,
    value: Any,
    owner: str | None,
    size: tuple[int, int] | None,
    field: str = "mask_id",
) -> bytes:
    """The PNG mask (white = repaint) that `value` names: a segment job's instances
    (their union), a stored `.npy` mask, or a stored image (passed on as is)."""
    ref = parse_mask_ref(value, field)
    found = await find(state, ref.ref, field, owner)
    if found.job is not None:
        mask = await _segment_mask(state, found.job, ref, field)
    else:
        assert found.artifact is not None
        art = found.artifact
        if ":" in str(value):
            raise field_error(field, "an artifact id takes no :image:prompt:instance suffix")
        data = await artifact_bytes(state, art, field)
        if art.media_type.startswith("image/"):
            return data  # checked like an upload by the caller
        if art.media_type != NPY_MEDIA_TYPE:
            raise field_error(field, f"artifact {art.id} is {art.media_type}, not a mask")
        mask = _mask_array(load_npy(data, field), field)
    if not mask.any():
        raise field_error(field, f"{value} selects an empty mask: nothing to repaint")
    return await asyncio.to_thread(mask_png, mask, size)


# --- image_id ------------------------------------------------------------------------


async def image_from_id(
    state: AppState, value: Any, owner: str | None, field: str = "image_id"
) -> bytes:
    """The bytes of a stored image: `<job id>[:<index>]` (that job's image result, the
    first by default) or an image artifact id."""
    if not isinstance(value, str):
        raise field_error(field, "must be a job id or an artifact id (a string)")
    ref, _, index_text = value.strip().partition(":")
    if index_text and not index_text.isdigit():
        raise field_error(field, "must be an artifact id or <job id>[:<index>]")
    found = await find(state, ref, field, owner)
    if found.job is not None:
        check_completed(found.job, field)
        arts = [a for a in found.job.result.get("artifacts", [])
                if str(a.get("media_type", "")).startswith("image/")]  # fmt: skip
        (meta,) = _pick(arts, int(index_text or 0), "image", f"job {ref}", field)
        art = await state.jobs.artifacts.get(meta["id"])
        if art is None:
            raise ApiError(410, f"{field}: job {ref}: result has expired", field)
    else:
        assert found.artifact is not None
        art = found.artifact
        if index_text:
            raise field_error(field, "an artifact id takes no :index suffix")
        if not art.media_type.startswith("image/"):
            raise field_error(field, f"artifact {art.id} is {art.media_type}, not an image")
    return await artifact_bytes(state, art, field)
