"""Hostile requests, one per row, shared by the in-process and the real-server tests.

Each case is a request that must be refused with a 4xx naming `field`, in the dialect's
own envelope, before any job or work exists.
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
from PIL import Image

from pixelpool.pipelines.diffusion.latent_format import encode_latents

JSON = {"content-type": "application/json"}
DEEP = "[" * 10_000 + "]" * 10_000
GOOD = {"prompt": "a fox", "model": "demo-sd", "width": 64, "height": 64, "steps": 2}


@dataclass
class Case:
    name: str
    method: str
    path: str
    field: str | None
    statuses: tuple[int, ...] = (422,)
    kwargs: dict[str, Any] = field(default_factory=dict)


def raw_json(body: dict[str, Any], **raw: str) -> dict[str, Any]:
    """A JSON body with some values spliced in as raw JSON text (NaN, lone surrogates)."""
    items = [json.dumps(body)[1:-1]] if body else []
    items += [f'"{key}": {value}' for key, value in raw.items()]
    return {"content": "{" + ", ".join(items) + "}", "headers": JSON}


def png(width: int = 64, height: int = 64, mode: str = "RGB", **save: Any) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (width, height)).save(buf, format="PNG", **save)
    return buf.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height; there is no pixel data at all."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def bomb() -> bytes:
    """A real PNG of 5000 x 5000 black pixels (25 MP): a few kilobytes on the wire."""
    side = 5_000
    packer = zlib.compressobj(9)
    row = b"\0" * (1 + 3 * side)
    data = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + payload))
        return struct.pack(">I", len(payload)) + kind + payload + crc

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def latents(shape: tuple[int, ...] = (1, 4, 8, 8), fmt: str = "fxlt", **meta: Any) -> bytes:
    return encode_latents(np.zeros(shape, np.float32), meta, fmt)


def fxlt_raw(shape: tuple[int, ...], meta: bytes = b"", data: bytes = b"") -> bytes:
    header = b"FXLT" + struct.pack("<HH", 1, len(shape)) + struct.pack(f"<{len(shape)}i", *shape)
    return header + struct.pack("<I", len(meta)) + meta + data


def multipart(files: list[tuple[str, bytes]], data: dict[str, str] | None = None) -> dict:
    return {"files": [(name, ("f.png", blob, "image/png")) for name, blob in files],
            "data": data or {}}  # fmt: skip


def cases() -> list[Case]:
    nan_latents = encode_latents(np.full((1, 4, 8, 8), np.nan, np.float32), {}, "fxlt")
    img = png()
    many = multipart([("image", img)] * 40)
    params = {"params": json.dumps({"prompt": "a", "model": "demo-sd", "steps": 2})}
    return [
        # native JSON
        Case(
            "deep json", "POST", "/api/generate", "body", (400,), {"content": DEEP, "headers": JSON}
        ),
        Case(
            "deep json field",
            "POST",
            "/api/enqueue/generate",
            "body",
            (400,),
            {"content": '{"prompt": "a", "loras": ' + DEEP + "}", "headers": JSON},
        ),
        Case(
            "deep json hires",
            "POST",
            "/api/generate-hires",
            "body",
            (400,),
            {"content": DEEP, "headers": JSON},
        ),
        Case(
            "bool steps",
            "POST",
            "/api/enqueue/generate",
            "steps",
            kwargs={"json": {**GOOD, "steps": True}},
        ),
        Case(
            "bool priority",
            "POST",
            "/api/enqueue/generate",
            "priority",
            kwargs={"json": {**GOOD, "priority": True}},
        ),
        Case(
            "float width",
            "POST",
            "/api/enqueue/generate",
            "width",
            kwargs={"json": {**GOOD, "width": 64.5}},
        ),
        Case(
            "string steps",
            "POST",
            "/api/enqueue/generate",
            "steps",
            kwargs={"json": {**GOOD, "steps": "2"}},
        ),
        Case(
            "nan cfg",
            "POST",
            "/api/enqueue/generate",
            "cfg_scale",
            kwargs=raw_json(GOOD, cfg_scale="NaN"),
        ),
        Case(
            "inf cfg",
            "POST",
            "/api/enqueue/generate",
            "cfg_scale",
            kwargs=raw_json(GOOD, cfg_scale="Infinity"),
        ),
        Case(
            "huge seed",
            "POST",
            "/api/enqueue/generate",
            "seed",
            kwargs={"json": {**GOOD, "seed": 2**70}},
        ),
        Case(
            "negative seed",
            "POST",
            "/api/enqueue/generate",
            "seed",
            kwargs={"json": {**GOOD, "seed": -7}},
        ),
        Case(
            "huge steps",
            "POST",
            "/api/enqueue/generate",
            "steps",
            kwargs={"json": {**GOOD, "steps": 10**9}},
        ),
        Case(
            "surrogate prompt",
            "POST",
            "/api/enqueue/generate",
            "prompt",
            kwargs=raw_json({k: v for k, v in GOOD.items() if k != "prompt"}, prompt='"a \\ud800"'),
        ),
        Case(
            "surrogate model",
            "POST",
            "/api/enqueue/generate",
            "model",
            kwargs=raw_json({k: v for k, v in GOOD.items() if k != "model"}, model='"\\udfff"'),
        ),
        Case(
            "huge prompt",
            "POST",
            "/api/enqueue/generate",
            "prompt",
            kwargs={"json": {**GOOD, "prompt": "fox " * 300_000}},
        ),
        Case(
            "huge negative prompt",
            "POST",
            "/api/enqueue/generate",
            "negative_prompt",
            kwargs={"json": {**GOOD, "negative_prompt": "x" * 1_000_000}},
        ),
        Case(
            "model traversal",
            "POST",
            "/api/enqueue/generate",
            "model",
            kwargs={"json": {**GOOD, "model": "../../../etc/passwd"}},
        ),
        Case(
            "model absolute",
            "POST",
            "/api/enqueue/generate",
            "model",
            kwargs={"json": {**GOOD, "model": "/etc/passwd"}},
        ),
        Case(
            "model nul",
            "POST",
            "/api/enqueue/generate",
            "model",
            kwargs={"json": {**GOOD, "model": "demo-sd\x00.safetensors"}},
        ),
        Case(
            "model backslash",
            "POST",
            "/api/enqueue/generate",
            "model",
            kwargs={"json": {**GOOD, "model": "..\\..\\models"}},
        ),
        Case(
            "lora traversal",
            "POST",
            "/api/enqueue/generate",
            "loras.0.name",
            kwargs={"json": {**GOOD, "loras": [{"name": "../../etc/passwd"}]}},
        ),
        Case(
            "lora tag traversal",
            "POST",
            "/api/enqueue/generate",
            "loras",
            kwargs={"json": {**GOOD, "prompt": "a <lora:../../x:1>"}},
        ),
        Case("job id traversal", "GET", "/api/job/..%2F..%2Fetc%2Fpasswd", None, (404,)),
        Case("job id backslash", "GET", "/api/job/..%5C..%5Cjobs.db", "job_id", (404,)),
        Case("job id dots", "GET", "/api/job/..", None, (404,)),
        Case("job id nul", "GET", "/api/job/abc%00def/result", "job_id", (404,)),
        Case("job id cancel", "POST", "/api/job/%2Fetc%2Fpasswd/cancel", None, (404,)),
        Case("job id events", "GET", "/api/job/..%5Cx/events", "job_id", (404,)),
        # native multipart and uploads
        Case(
            "many parts", "POST", "/api/enqueue/img2img", None, (400, 413), {**many, "data": params}
        ),
        Case(
            "header bomb",
            "POST",
            "/api/enqueue/img2img",
            "image",
            (413,),
            {**multipart([("image", png_claiming(100_000, 100_000))]), "data": params},
        ),
        Case(
            "decompression bomb",
            "POST",
            "/api/enqueue/img2img",
            "image",
            (413,),
            {**multipart([("image", bomb())]), "data": params},
        ),
        Case(
            "truncated image",
            "POST",
            "/api/enqueue/img2img",
            "image",
            kwargs={**multipart([("image", img[: len(img) // 2])]), "data": params},
        ),
        Case(
            "not an image",
            "POST",
            "/api/enqueue/img2img",
            "image",
            kwargs={**multipart([("image", b"GIF89a" + b"\0" * 20)]), "data": params},
        ),
        Case(
            "deep params",
            "POST",
            "/api/enqueue/img2img",
            "params",
            kwargs={**multipart([("image", img)]), "data": {"params": DEEP}},
        ),
        Case(
            "bool params",
            "POST",
            "/api/enqueue/img2img",
            "steps",
            kwargs={
                **multipart([("image", img)]),
                "data": {"params": json.dumps({"prompt": "a", "steps": True})},
            },
        ),
        Case(
            "encode corrupt",
            "POST",
            "/api/enqueue/encode-latents?model=demo-sd",
            "image",
            kwargs={"content": b"\x89PNG\r\n\x1a\n garbage"},
        ),
        Case(
            "encode bomb",
            "POST",
            "/api/enqueue/encode-latents?model=demo-sd",
            "image",
            (413,),
            kwargs={"content": png_claiming(50_000, 50_000)},
        ),
        # latents
        Case(
            "latent seed text fxlt",
            "POST",
            "/api/enqueue/decode-latents?model=demo-sd",
            "latents",
            kwargs={"content": latents(seed="abc")},
        ),
        Case(
            "latent seed text st",
            "POST",
            "/api/enqueue/decode-latents?model=demo-sd",
            "latents",
            kwargs={"content": latents(fmt="safetensors", seed="abc")},
        ),
        Case(
            "latent cfg list",
            "POST",
            "/api/enqueue/decode-latents?model=demo-sd",
            "latents",
            kwargs={"content": latents(cfg_scale=[1, 2])},
        ),
        Case(
            "latent shape overflow",
            "POST",
            "/api/enqueue/decode-latents",
            "latents",
            kwargs={"content": fxlt_raw((32768,) * 8)},
        ),
        Case(
            "latent shape huge",
            "POST",
            "/api/enqueue/decode-latents",
            "latents",
            kwargs={"content": fxlt_raw((1, 4, 30000, 30000), data=b"\0" * 64)},
        ),
        Case(
            "latent wrong channels",
            "POST",
            "/api/enqueue/decode-latents?model=demo-sd",
            "latents",
            kwargs={"content": latents((1, 3, 8, 8))},
        ),
        Case(
            "latent nan",
            "POST",
            "/api/enqueue/decode-latents?model=demo-sd",
            "latents",
            kwargs={"content": nan_latents},
        ),
        Case(
            "latent too big",
            "POST",
            "/api/enqueue/decode-latents?model=demo-sd",
            "latents",
            (413,),
            kwargs={"content": latents((1, 4, 512, 512))},
        ),
        Case(
            "latent deep meta",
            "POST",
            "/api/enqueue/decode-latents?model=demo-sd",
            "latents",
            kwargs={"content": fxlt_raw((1, 4, 8, 8), b"[" * 5000 + b"]" * 5000, b"\0" * 1024)},
        ),
        Case(
            "latent big meta",
            "POST",
            "/api/enqueue/decode-latents?model=demo-sd",
            "latents",
            kwargs={"content": fxlt_raw((1, 4, 8, 8), b"{}" + b" " * 70_000, b"\0" * 1024)},
        ),
        Case(
            "latent model traversal",
            "POST",
            "/api/enqueue/decode-latents",
            "model",
            kwargs={"content": latents(model="../../../etc/passwd")},
        ),
        Case(
            "latent other arch",
            "POST",
            "/api/enqueue/hires-latents?model=demo-sd&steps=2",
            "model",
            kwargs={"content": latents(architecture="sdxl")},
        ),
        Case(
            "latent other arch decode",
            "POST",
            "/api/enqueue/decode-latents?model=demo-sd",
            "model",
            kwargs={"content": latents(architecture="sdxl")},
        ),
        # OpenAI
        Case(
            "oa deep",
            "POST",
            "/v1/images/generations",
            "body",
            (400,),
            {"content": DEEP, "headers": JSON},
        ),
        Case(
            "oa bool n",
            "POST",
            "/v1/images/generations",
            "n",
            (400,),
            {"json": {"prompt": "a", "n": True}},
        ),
        Case(
            "oa bool steps",
            "POST",
            "/v1/images/generations",
            "steps",
            (400,),
            {"json": {"prompt": "a", "steps": True}},
        ),
        Case(
            "oa surrogate",
            "POST",
            "/v1/images/generations",
            "prompt",
            (400,),
            raw_json({}, prompt='"\\ud83d"'),
        ),
        Case(
            "oa long negative",
            "POST",
            "/v1/images/generations",
            "negative_prompt",
            (400,),
            {"json": {"prompt": "a", "negative_prompt": "y" * 200_000}},
        ),
        Case(
            "oa model traversal",
            "POST",
            "/v1/images/generations",
            "model",
            (400,),
            {"json": {"prompt": "a", "model": "../sd15/demo-sd"}},
        ),
        Case(
            "oa edit parts",
            "POST",
            "/v1/images/edits",
            None,
            (400, 413),
            {**multipart([("image", img)] * 80), "data": {"prompt": "a"}},
        ),
        Case(
            "oa edit bomb",
            "POST",
            "/v1/images/edits",
            "image",
            (413,),
            {**multipart([("image", png_claiming(100_000, 100_000))]), "data": {"prompt": "a"}},
        ),
        Case(
            "oa edit corrupt",
            "POST",
            "/v1/images/edits",
            "image",
            (400,),
            {**multipart([("image", img[:40])]), "data": {"prompt": "a"}},
        ),
        Case(
            "oa edit loras deep",
            "POST",
            "/v1/images/edits",
            "loras",
            (400,),
            {**multipart([("image", img)]), "data": {"prompt": "a", "loras": DEEP}},
        ),
        Case("oa data traversal", "GET", "/v1/images/data/..%2F..%2Fjobs.db", None, (404,)),
        Case("oa data dots", "GET", "/v1/images/data/...png", "file_id", (404,)),
        Case("oa data nul", "GET", "/v1/images/data/ab%00cd.png", "file_id", (404,)),
        # /v1/infer
        Case("infer deep", "POST", "/v1/infer", "body", (400,), {"content": DEEP, "headers": JSON}),
        Case(
            "infer bool",
            "POST",
            "/v1/infer",
            "num_inference_steps",
            (400,),
            {
                "json": {
                    "id": "1",
                    "model_id": "demo-sd",
                    "prompt": "a",
                    "num_inference_steps": True,
                }
            },
        ),
        Case(
            "infer traversal",
            "POST",
            "/v1/infer",
            "model_id",
            (400,),
            {"json": {"id": "1", "model_id": "../../etc/passwd", "prompt": "a"}},
        ),
        Case(
            "infer control id",
            "POST",
            "/v1/infer",
            "id",
            (400,),
            {"json": {"id": "a\x1b[31m", "model_id": "demo-sd", "prompt": "a"}},
        ),
        Case(
            "models traversal", "GET", "/v1/models/..%2F..%2Fetc%2Fpasswd", "model_id", (400, 404)
        ),
        # self-hosted contract
        Case(
            "sh bool", "POST", "/generate", "steps", kwargs={"json": {"prompt": "a", "steps": True}}
        ),
        Case(
            "sh surrogate",
            "POST",
            "/generate",
            "negative_prompt",
            kwargs=raw_json({"prompt": "a"}, negative_prompt='"\\udc00"'),
        ),
        Case(
            "sh long negative",
            "POST",
            "/generate",
            "negative_prompt",
            kwargs={"json": {"prompt": "a", "negative_prompt": "z" * 20_001}},
        ),
        Case(
            "sh lora traversal",
            "POST",
            "/generate",
            "lora_name",
            kwargs={"json": {"prompt": "a", "lora_name": "/etc/passwd"}},
        ),
        Case(
            "sh switch traversal",
            "POST",
            "/switch-model",
            "model",
            kwargs={"json": {"model": "../../etc/passwd"}},
        ),
        Case("sh deep", "POST", "/generate", "body", (400,), {"content": DEEP, "headers": JSON}),
    ]


def field_named(resp: httpx.Response, name: str) -> bool:
    """Whether the error body names `name`: OpenAI `param`, native `detail`, or the message."""
    body = resp.json()
    error = body.get("error")
    if isinstance(error, dict):
        return error.get("param") == name or name in error.get("message", "")
    text = error if isinstance(error, str) else str(body.get("detail", ""))
    return name in text or any(
        d.get("field") == name for d in body.get("detail") or [] if isinstance(d, dict)
    )


def check(case: Case, resp: httpx.Response) -> str | None:
    """None when the response is right, else what is wrong with it."""
    if resp.status_code not in case.statuses:
        return f"{case.name}: {resp.status_code} (want {case.statuses}): {resp.text[:300]}"
    if case.field and not field_named(resp, case.field):
        return f"{case.name}: error does not name {case.field}: {resp.text[:300]}"
    if " at 0x" in resp.text or "Traceback" in resp.text:
        return f"{case.name}: error shows Python internals: {resp.text[:300]}"
    return None
