"""Hostile input refused in one place, for every dialect: text, names, ids, JSON, numbers.

Request models derive from `RequestModel`: strict types (`true` is not a number, `"5"`
is not an int in JSON), no NaN or infinity, unknown fields rejected, and no string
anywhere that holds an unpaired UTF-16 surrogate (it could not be stored or encoded
later, after the work was done). Prompts (`Prompt`) lose their control characters;
names (`Name`) and ids (`check_id`) that hold control characters, NUL, or a path
that climbs out of its folder are refused. JSON is parsed by `parse_json`, which
refuses deep nesting before Python's parser recurses.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

import numpy as np
from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError, field_validator

from pixelpool.api.errors import ApiError, field_error
from pixelpool.config import LimitsSettings

MAX_JSON_DEPTH = 32
MAX_NAME_CHARS = 512
_SURROGATE = re.compile("[\ud800-\udfff]")
_PROMPT_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")  # keeps \t \n \r
_NAME_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")


def has_surrogate(text: str) -> bool:
    return _SURROGATE.search(text) is not None


def no_surrogates(value: str) -> str:
    if has_surrogate(value):
        raise ValueError("contains an unpaired UTF-16 surrogate; send valid Unicode text")
    return value


def clean_prompt(value: str) -> str:
    """Prompt text: valid Unicode, control characters (but tab and newlines) removed."""
    return _PROMPT_CONTROL.sub("", no_surrogates(value))


def check_name(value: str) -> str:
    """A model, LoRA or sampler name: printable, and no path that leaves its folder."""
    no_surrogates(value)
    if len(value) > MAX_NAME_CHARS:
        raise ValueError(f"is longer than {MAX_NAME_CHARS} characters")
    if _NAME_CONTROL.search(value):
        raise ValueError("must not contain control characters or NUL")
    parts = value.replace("\\", "/").split("/")
    if value.startswith(("/", "\\")) or ".." in parts or re.match(r"^[A-Za-z]:", value):
        raise ValueError("must be a name, not a path outside the models folder")
    return value


Prompt = Annotated[str, AfterValidator(clean_prompt)]
Name = Annotated[str, AfterValidator(check_name)]


def _check_strings(value: Any) -> None:
    if isinstance(value, str):
        no_surrogates(value)
    elif isinstance(value, list | tuple):
        for item in value:
            _check_strings(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_strings(key)
            _check_strings(item)


class RequestModel(BaseModel):
    """Base of every request body: strict types, finite numbers, valid Unicode."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    @field_validator("*", mode="after")
    @classmethod
    def _valid_unicode(cls, value: Any) -> Any:
        _check_strings(value)
        return value


def validate_form(model: type[BaseModel], data: dict[str, Any]) -> Any:
    """Form fields and query parameters arrive as text: numbers are parsed from it (lax)."""
    return model.model_validate(data, strict=False)


def check_id(field: str, value: str, what: str = "job") -> str:
    """Ids are opaque tokens; anything else (a path, NUL, odd characters) is not found."""
    if not _ID.fullmatch(value):
        raise field_error(field, f"no such {what} (not a valid id)", 404)
    return value


def json_depth(body: bytes) -> int:
    """The deepest nesting of arrays and objects in `body`, without parsing it."""
    if not body or (b"[" not in body and b"{" not in body):
        return 0
    skeleton = np.frombuffer(_JSON_STRING.sub(b'""', body), dtype=np.uint8)
    opens = (skeleton == ord("[")) | (skeleton == ord("{"))
    closes = (skeleton == ord("]")) | (skeleton == ord("}"))
    steps = opens.astype(np.int32) - closes.astype(np.int32)
    return int(np.cumsum(steps).max(initial=0))


def parse_json(body: bytes | str, field: str = "body", status: int = 400) -> Any:
    """JSON with nesting bounded by MAX_JSON_DEPTH; errors name `field`, never a 500."""
    raw = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
    if json_depth(raw) > MAX_JSON_DEPTH:
        raise ApiError(status, f"{field}: JSON is nested deeper than {MAX_JSON_DEPTH}", field)
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError too
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else "not valid UTF-8 JSON"
        raise ApiError(status, f"{field}: malformed JSON: {reason}", field) from exc


def validation_error(exc: ValidationError) -> ApiError:
    """The first problem of a pydantic error, as a 422 naming its field."""
    err = exc.errors()[0]
    field = ".".join(str(p) for p in err["loc"]) or "body"
    message = str(err.get("ctx", {}).get("error") or err["msg"])
    return field_error(field, message.removeprefix("Value error, "))


def check_prompts(limits: LimitsSettings, prompt: str | None, negative_prompt: str | None) -> None:
    """Prompt and negative prompt within `limits.max_prompt_chars` / `max_negative_prompt_chars`."""
    for field, text, limit in (
        ("prompt", prompt, limits.max_prompt_chars),
        ("negative_prompt", negative_prompt, limits.max_negative_prompt_chars),
    ):
        if text is None:
            continue
        if not isinstance(text, str):
            raise field_error(field, "must be a string")
        if len(text) > limit:
            raise field_error(field, f"is longer than {limit} characters")
        no_surrogates_field(field, text)


def no_surrogates_field(field: str, text: str) -> None:
    if has_surrogate(text):
        raise field_error(field, "contains an unpaired UTF-16 surrogate; send valid Unicode text")
