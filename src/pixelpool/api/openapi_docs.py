"""What the OpenAPI document says about errors, media types and hand-parsed bodies.

Each dialect has its own error body (see errors.py), so each route lists the
statuses it really returns with that dialect's shape: `native(...)`,
`openai(...)`, `detail(...)`. Routes that read their body themselves (multipart,
raw latents or images, JSON checked by hand) describe it with `json_body`,
`raw_body`, `multipart_body` and `query_params`. `install` replaces FastAPI's
default 422 body (`HTTPValidationError`), which no dialect here sends.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, Field

Responses = dict[int | str, dict[str, Any]]

COMPONENT_REF = "#/components/schemas/{model}"
BINARY = {"type": "string", "format": "binary"}
IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp")
LATENT_TYPES = ("application/x-safetensors", "application/x-fox-latent")

# Statuses by meaning, to compose a route's list.
AUTH = (401, 429)  # every route behind an API key (429: the key's rate limit)
SCOPED = (401, 403, 429)  # ... that also needs a scope
SUBMIT = (400, 401, 403, 404, 413, 422, 429)  # queues a job from a request body
RESULT = (409, 410)  # waits for the job: cancelled / failed, or its result expired
SYNC = SUBMIT + RESULT

_DESCRIPTIONS = {
    400: "Malformed body, or (OpenAI dialect) an invalid value",
    401: "Missing or invalid API key",
    403: "The key lacks the scope this route needs",
    404: "Not found (job, model, LoRA, device, key...); the field is named",
    409: "Conflict: the job was cancelled or failed, or the name is taken",
    410: "The result has expired",
    413: "Body or uploaded image too large",
    422: "Invalid value; the field is named",
    429: "Rate limit or queue full; retry after `Retry-After` seconds",
    500: "The generation failed on the worker",
    503: "Not ready, or the model's files are missing",
}
_HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"schema": {"type": "string"}, "required": True}},
    429: {"Retry-After": {"schema": {"type": "string"}, "required": True,
                          "description": "whole seconds"}},
}  # fmt: skip


class FieldError(BaseModel):
    field: str
    message: str


class NativeError(BaseModel):
    """The native dialect's error body (/api, /infer, /health, /ready)."""

    error: str
    detail: list[FieldError] | None = Field(None, description="one entry per invalid field")


class OpenAIErrorBody(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIError(BaseModel):
    """OpenAI's error envelope, for everything under /v1."""

    error: OpenAIErrorBody


class DetailError(BaseModel):
    """The self-hosted client's error body (/generate, /models, /loras, /switch-model)."""

    detail: str


def errors_of(model: type[BaseModel], statuses: Iterable[int]) -> Responses:
    """OpenAPI error responses with `model` as the body: a dialect passes its own envelope."""
    out: Responses = {}
    for status in sorted(set(statuses)):
        entry: dict[str, Any] = {"model": model, "description": _DESCRIPTIONS[status]}
        if status in _HEADERS:
            entry["headers"] = _HEADERS[status]
        out[status] = entry
    return out


def native(*statuses: int) -> Responses:
    return errors_of(NativeError, statuses)


def openai(*statuses: int) -> Responses:
    """OpenAI answers invalid values with 400, never 422."""
    return errors_of(OpenAIError, (400 if s == 422 else s for s in statuses))


def detail(*statuses: int) -> Responses:
    return errors_of(DetailError, statuses)


def binary(*media_types: str, description: str = "The result") -> Responses:
    """A 200 whose body is one of these binary media types."""
    content = {t: {"schema": BINARY} for t in media_types}
    return {200: {"description": description, "content": content}}


def images(description: str = "The image (output_format picks the type)") -> Responses:
    return binary(*IMAGE_TYPES, description=description)


def json_result(description: str = "The result, as JSON") -> Responses:
    return {200: {"description": description,
                  "content": {"application/json": {"schema": {"type": "object"}}}}}  # fmt: skip


def latents(description: str = "The latents (latent_format or Accept picks the type)") -> Responses:
    return binary(*LATENT_TYPES, description=description)


SSE_EVENT = {  # OpenAPI 3.1: the schema of a text/event-stream describes one event
    "type": "object",
    "required": ["data"],
    "properties": {
        "event": {"type": "string"},
        "id": {"type": "string"},
        "data": {"type": "string", "contentMediaType": "application/json"},
    },
}


def event_stream(description: str = "Server-sent events") -> Responses:
    return {200: {"description": description,
                  "content": {"text/event-stream": {"schema": SSE_EVENT}}}}  # fmt: skip


PENDING: Responses = {
    202: {
        "description": "The job is still queued or running",
        "content": {"application/json": {"schema": {
            "type": "object", "required": ["job_id", "status"],
            "properties": {"job_id": {"type": "string"}, "status": {"type": "string"}},
        }}},
    }
}  # fmt: skip


_MODELS: dict[str, type[BaseModel]] = {}


def _ref(model: type[BaseModel]) -> dict[str, str]:
    _MODELS[model.__name__] = model
    return {"$ref": COMPONENT_REF.format(model=model.__name__)}


# Request examples (small and fast on the demo models; also what the contract fuzzer
# sends first, so that valid requests run end to end).
TXT2IMG = {"prompt": "a red cube on a table", "width": 64, "height": 64, "steps": 2, "seed": 1}
HIRES = {**TXT2IMG, "hires_steps": 1}
INFER = {"id": "req-1", "model_id": "demo-sd", "prompt": "a red cube", "num_inference_steps": 2,
         "width": 256, "height": 256, "seed": 1}  # fmt: skip
OPENAI = {"prompt": "a red cube", "size": "64x64", "steps": 2, "seed": 1}
MODEL = {"model": "demo-sd"}


def example(body: dict[str, Any]) -> dict[str, Any]:
    """openapi_extra: an example for a JSON body FastAPI already describes."""
    return {"requestBody": {"content": {"application/json": {"example": body}}}}


def json_body(model: type[BaseModel], body: dict[str, Any] | None = None) -> dict[str, Any]:
    """openapi_extra for a route that parses a JSON body as `model` by hand."""
    media: dict[str, Any] = {"schema": _ref(model)}
    if body is not None:
        media["example"] = body
    return {"requestBody": {"required": True, "content": {"application/json": media}}}


def raw_body(*media_types: str, description: str) -> dict[str, Any]:
    """openapi_extra for a route whose body is raw bytes (latents, an image)."""
    content = {t: {"schema": BINARY} for t in media_types}
    return {"requestBody": {"required": True, "description": description, "content": content}}


def multipart_body(
    files: dict[str, str], fields: dict[str, Any], required: list[str], many: bool = False
) -> dict[str, Any]:
    """openapi_extra for a multipart route: file parts (name -> description) and text parts.

    `many`: each file part may repeat (an array of files)."""
    each = {"type": "array", "items": BINARY} if many else BINARY
    props: dict[str, Any] = {name: {**each, "description": text} for name, text in files.items()}
    props.update(fields)
    schema = {"type": "object", "properties": props, "required": required}
    return {"requestBody": {"required": True,
                            "content": {"multipart/form-data": {"schema": schema}}}}  # fmt: skip


def form_fields(model: type[BaseModel]) -> dict[str, Any]:
    """A model's scalar fields as multipart text parts (`multipart_body(fields=...)`)."""
    return {name: prop for name, prop, _ in _scalars(model)}


def query_params(
    model: type[BaseModel] | None = None, /, **extra: dict[str, Any]
) -> dict[str, Any]:
    """openapi_extra `parameters`: a model's scalar fields (or `extra` schemas) in the query."""
    params = [
        {"name": name, "in": "query", "required": required, "schema": prop}
        for name, prop, required in (_scalars(model) if model else [])
    ]
    params += [{"name": n, "in": "query", "required": False, "schema": s} for n, s in extra.items()]
    return {"parameters": params}


def _scalars(model: type[BaseModel]) -> list[tuple[str, dict[str, Any], bool]]:
    """(name, schema, required) for the fields that a form or query string can carry."""
    schema = model.model_json_schema(ref_template=COMPONENT_REF)
    required = set(schema.get("required", []))
    out = []
    for name, prop in schema["properties"].items():
        kinds = {o.get("type") for o in prop.get("anyOf", [prop])}
        if kinds & {"array", "object"} or "$ref" in str(prop):
            continue
        out.append((name, prop, name in required))
    return out


def merge(*parts: dict[str, Any]) -> dict[str, Any]:
    """One openapi_extra from several (`json_body(...)`, `query_params(...)`)."""
    out: dict[str, Any] = {}
    for part in parts:
        out.update(part)
    return out


def _is_default_422(response: dict[str, Any]) -> bool:
    schema = response.get("content", {}).get("application/json", {}).get("schema", {})
    return schema.get("$ref", "").endswith("/HTTPValidationError")


def install(app: FastAPI) -> None:
    """Serve the document with our error bodies only, and with the hand-parsed models."""
    build: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        doc = build()
        for item in doc.get("paths", {}).values():
            for operation in item.values():
                responses = operation.get("responses", {})
                if _is_default_422(responses.get("422", {})):
                    del responses["422"]
        schemas = doc.setdefault("components", {}).setdefault("schemas", {})
        for name in ("HTTPValidationError", "ValidationError"):
            schemas.pop(name, None)
        for name, model in _MODELS.items():
            schema = model.model_json_schema(ref_template=COMPONENT_REF)
            schemas.update(schema.pop("$defs", {}))
            schemas.setdefault(name, schema)
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]
