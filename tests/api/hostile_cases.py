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

from pixelpool.families.diffusion.latent_format import encode_latents

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


GEN = "/api/enqueue/generate"
IMG = "/api/enqueue/img2img"
DEC = "/api/enqueue/decode-latents?model=demo-sd"
OA_GEN = "/v1/images/generations"


def post(
    name: str, path: str, field: str | None, kwargs: dict[str, Any], statuses: tuple = (422,)
) -> Case:
    return Case(name, "POST", path, field, statuses, kwargs)


def get(name: str, path: str, field: str | None, statuses: tuple = (404,)) -> Case:
    return Case(name, "GET", path, field, statuses)


def cases() -> list[Case]:
    nan_latents = encode_latents(np.full((1, 4, 8, 8), np.nan, np.float32), {}, "fxlt")
    img = png()
    many = multipart([("image", img)] * 40)
    params = {"params": json.dumps({"prompt": "a", "model": "demo-sd", "steps": 2})}
    return [
        # native JSON
        post("deep json", "/api/generate", "body", {"content": DEEP, "headers": JSON}, (400,)),
        post(
            "deep json field",
            GEN,
            "body",
            {"content": '{"prompt": "a", "loras": ' + DEEP + "}", "headers": JSON},
            (400,),
        ),
        post(
            "deep json hires",
            "/api/generate-hires",
            "body",
            {"content": DEEP, "headers": JSON},
            (400,),
        ),
        post("bool steps", GEN, "steps", {"json": {**GOOD, "steps": True}}),
        post("bool priority", GEN, "priority", {"json": {**GOOD, "priority": True}}),
        post("float width", GEN, "width", {"json": {**GOOD, "width": 64.5}}),
        post("string steps", GEN, "steps", {"json": {**GOOD, "steps": "2"}}),
        post("nan cfg", GEN, "cfg_scale", raw_json(GOOD, cfg_scale="NaN")),
        post("inf cfg", GEN, "cfg_scale", raw_json(GOOD, cfg_scale="Infinity")),
        post("huge seed", GEN, "seed", {"json": {**GOOD, "seed": 2**70}}),
        post("negative seed", GEN, "seed", {"json": {**GOOD, "seed": -7}}),
        post("huge steps", GEN, "steps", {"json": {**GOOD, "steps": 10**9}}),
        post(
            "surrogate prompt",
            GEN,
            "prompt",
            raw_json({k: v for k, v in GOOD.items() if k != "prompt"}, prompt='"a \\ud800"'),
        ),
        post(
            "surrogate model",
            GEN,
            "model",
            raw_json({k: v for k, v in GOOD.items() if k != "model"}, model='"\\udfff"'),
        ),
        post("huge prompt", GEN, "prompt", {"json": {**GOOD, "prompt": "fox " * 300_000}}),
        post(
            "huge negative prompt",
            GEN,
            "negative_prompt",
            {"json": {**GOOD, "negative_prompt": "x" * 1_000_000}},
        ),
        post("model traversal", GEN, "model", {"json": {**GOOD, "model": "../../../etc/passwd"}}),
        post("model absolute", GEN, "model", {"json": {**GOOD, "model": "/etc/passwd"}}),
        post("model nul", GEN, "model", {"json": {**GOOD, "model": "demo-sd\x00.safetensors"}}),
        post("model backslash", GEN, "model", {"json": {**GOOD, "model": "..\\..\\models"}}),
        post(
            "lora traversal",
            GEN,
            "loras.0.name",
            {"json": {**GOOD, "loras": [{"name": "../../etc/passwd"}]}},
        ),
        post(
            "lora tag traversal", GEN, "loras", {"json": {**GOOD, "prompt": "a <lora:../../x:1>"}}
        ),
        get("job id traversal", "/api/job/..%2F..%2Fetc%2Fpasswd", None),
        get("job id backslash", "/api/job/..%5C..%5Cjobs.db", "job_id"),
        get("job id dots", "/api/job/..", None),
        get("job id nul", "/api/job/abc%00def/result", "job_id"),
        post("job id cancel", "/api/job/%2Fetc%2Fpasswd/cancel", None, {}, (404,)),
        get("job id events", "/api/job/..%5Cx/events", "job_id"),
        # native multipart and uploads
        post("many parts", IMG, None, {**many, "data": params}, (400, 413)),
        post(
            "header bomb",
            IMG,
            "image",
            {**multipart([("image", png_claiming(100_000, 100_000))]), "data": params},
            (413,),
        ),
        post(
            "decompression bomb",
            IMG,
            "image",
            {**multipart([("image", bomb())]), "data": params},
            (413,),
        ),
        post(
            "truncated image",
            IMG,
            "image",
            {**multipart([("image", img[: len(img) // 2])]), "data": params},
        ),
        post(
            "not an image",
            IMG,
            "image",
            {**multipart([("image", b"GIF89a" + b"\0" * 20)]), "data": params},
        ),
        post(
            "deep params", IMG, "params", {**multipart([("image", img)]), "data": {"params": DEEP}}
        ),
        post(
            "bool params",
            IMG,
            "steps",
            {
                **multipart([("image", img)]),
                "data": {"params": json.dumps({"prompt": "a", "steps": True})},
            },
        ),
        post(
            "encode corrupt",
            "/api/enqueue/encode-latents?model=demo-sd",
            "image",
            {"content": b"\x89PNG\r\n\x1a\n garbage"},
        ),
        post(
            "encode bomb",
            "/api/enqueue/encode-latents?model=demo-sd",
            "image",
            {"content": png_claiming(50_000, 50_000)},
            (413,),
        ),
        # latents
        post("latent seed text fxlt", DEC, "latents", {"content": latents(seed="abc")}),
        post(
            "latent seed text st",
            DEC,
            "latents",
            {"content": latents(fmt="safetensors", seed="abc")},
        ),
        post("latent cfg list", DEC, "latents", {"content": latents(cfg_scale=[1, 2])}),
        post(
            "latent shape overflow",
            "/api/enqueue/decode-latents",
            "latents",
            {"content": fxlt_raw((32768,) * 8)},
        ),
        post(
            "latent shape huge",
            "/api/enqueue/decode-latents",
            "latents",
            {"content": fxlt_raw((1, 4, 30000, 30000), data=b"\0" * 64)},
        ),
        post("latent wrong channels", DEC, "latents", {"content": latents((1, 3, 8, 8))}),
        post("latent nan", DEC, "latents", {"content": nan_latents}),
        post("latent too big", DEC, "latents", {"content": latents((1, 4, 512, 512))}, (413,)),
        post(
            "latent deep meta",
            DEC,
            "latents",
            {"content": fxlt_raw((1, 4, 8, 8), b"[" * 5000 + b"]" * 5000, b"\0" * 1024)},
        ),
        post(
            "latent big meta",
            DEC,
            "latents",
            {"content": fxlt_raw((1, 4, 8, 8), b"{}" + b" " * 70_000, b"\0" * 1024)},
        ),
        post(
            "latent model traversal",
            "/api/enqueue/decode-latents",
            "model",
            {"content": latents(model="../../../etc/passwd")},
        ),
        post(
            "latent other arch",
            "/api/enqueue/hires-latents?model=demo-sd&steps=2",
            "model",
            {"content": latents(architecture="sdxl")},
        ),
        post("latent other arch decode", DEC, "model", {"content": latents(architecture="sdxl")}),
        # OpenAI
        post("oa deep", OA_GEN, "body", {"content": DEEP, "headers": JSON}, (400,)),
        post("oa bool n", OA_GEN, "n", {"json": {"prompt": "a", "n": True}}, (400,)),
        post("oa bool steps", OA_GEN, "steps", {"json": {"prompt": "a", "steps": True}}, (400,)),
        post("oa surrogate", OA_GEN, "prompt", raw_json({}, prompt='"\\ud83d"'), (400,)),
        post(
            "oa long negative",
            OA_GEN,
            "negative_prompt",
            {"json": {"prompt": "a", "negative_prompt": "y" * 200_000}},
            (400,),
        ),
        post(
            "oa model traversal",
            OA_GEN,
            "model",
            {"json": {"prompt": "a", "model": "../sd15/demo-sd"}},
            (400,),
        ),
        post(
            "oa edit parts",
            "/v1/images/edits",
            None,
            {**multipart([("image", img)] * 80), "data": {"prompt": "a"}},
            (400, 413),
        ),
        post(
            "oa edit bomb",
            "/v1/images/edits",
            "image",
            {**multipart([("image", png_claiming(100_000, 100_000))]), "data": {"prompt": "a"}},
            (413,),
        ),
        post(
            "oa edit corrupt",
            "/v1/images/edits",
            "image",
            {**multipart([("image", img[:40])]), "data": {"prompt": "a"}},
            (400,),
        ),
        post(
            "oa edit loras deep",
            "/v1/images/edits",
            "loras",
            {**multipart([("image", img)]), "data": {"prompt": "a", "loras": DEEP}},
            (400,),
        ),
        get("oa data traversal", "/v1/images/data/..%2F..%2Fjobs.db", None),
        get("oa data dots", "/v1/images/data/...png", "file_id"),
        get("oa data nul", "/v1/images/data/ab%00cd.png", "file_id"),
        # /v1/infer
        post("infer deep", "/v1/infer", "body", {"content": DEEP, "headers": JSON}, (400,)),
        post(
            "infer bool",
            "/v1/infer",
            "num_inference_steps",
            {
                "json": {
                    "id": "1",
                    "model_id": "demo-sd",
                    "prompt": "a",
                    "num_inference_steps": True,
                }
            },
            (400,),
        ),
        post(
            "infer traversal",
            "/v1/infer",
            "model_id",
            {"json": {"id": "1", "model_id": "../../etc/passwd", "prompt": "a"}},
            (400,),
        ),
        post(
            "infer control id",
            "/v1/infer",
            "id",
            {"json": {"id": "a\x1b[31m", "model_id": "demo-sd", "prompt": "a"}},
            (400,),
        ),
        get("models traversal", "/v1/models/..%2F..%2Fetc%2Fpasswd", "model_id", (400, 404)),
        # self-hosted contract
        post("sh bool", "/generate", "steps", {"json": {"prompt": "a", "steps": True}}),
        post(
            "sh surrogate",
            "/generate",
            "negative_prompt",
            raw_json({"prompt": "a"}, negative_prompt='"\\udc00"'),
        ),
        post(
            "sh long negative",
            "/generate",
            "negative_prompt",
            {"json": {"prompt": "a", "negative_prompt": "z" * 20_001}},
        ),
        post(
            "sh lora traversal",
            "/generate",
            "lora_name",
            {"json": {"prompt": "a", "lora_name": "/etc/passwd"}},
        ),
        post(
            "sh switch traversal", "/switch-model", "model", {"json": {"model": "../../etc/passwd"}}
        ),
        post("sh deep", "/generate", "body", {"content": DEEP, "headers": JSON}, (400,)),
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
