"""Cost estimates: the device memory and time a job needs, before it runs (torch-free).

Rough and deliberately conservative: the scheduler uses them to keep a batch
within a device's budget and to refuse at once a job that fits no device.
Activation memory grows with pixels x batch and with the model's width, which
scales roughly with the square root of its size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

ACTIVATION_FACTOR = 0.05  # bytes per pixel per sqrt(model byte); SD 1.5 at 512^2 -> ~0.6 GB
SECONDS_PER_MEGAPIXEL_STEP = 0.05  # a mid-range GPU; only used to order and report


@dataclass(frozen=True)
class Cost:
    model_bytes: int
    item_bytes: int  # per image of a batch
    seconds: float

    def bytes_for(self, batch: int) -> int:
        return self.model_bytes + batch * self.item_bytes


def estimate_cost(family: str, model: dict[str, Any], params: dict[str, Any]) -> Cost:
    model_bytes = int(model.get("size_bytes") or 0)
    width = int(params.get("width") or 512)
    height = int(params.get("height") or 512)
    pixels = width * height
    item = int(pixels * ACTIVATION_FACTOR * math.sqrt(max(model_bytes, 1)))
    steps = int(params.get("steps") or 1) + int(params.get("hires_steps") or 0)
    seconds = steps * pixels / 1e6 * SECONDS_PER_MEGAPIXEL_STEP
    return Cost(model_bytes, item, seconds)
