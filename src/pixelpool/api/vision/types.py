"""The Vision Models API's model types and the vision operation each one runs."""

from __future__ import annotations

from types import MappingProxyType

from pixelpool.api.errors import ApiError

MODEL_TYPES = MappingProxyType({"sam3": "segment", "grounding-dino": "detect",
                                "depth-anything": "depth", "dinov3": "embed"})  # fmt: skip
TYPE_OF_OP = MappingProxyType({op: name for name, op in MODEL_TYPES.items()})


def op_of(model_type: str, field: str = "model_type") -> str:
    """The operation of a model type; 404 naming `field` for an unknown one."""
    op = MODEL_TYPES.get(model_type)
    if op is None:
        valid = ", ".join(MODEL_TYPES)
        raise ApiError(404, f"{field}: unknown model type {model_type!r}; valid: {valid}", field)
    return op
