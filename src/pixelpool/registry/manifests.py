"""Optional model manifests: a `.toml` next to a model (or in the models dir, naming it).

```toml
# models/sdxl/anime.toml, beside models/sdxl/anime.safetensors (or anime/)
id = "anime"                     # another name the model answers to
display_name = "Anime XL"
architecture = "sdxl"            # informational; checked against the detected one
negative_prompt = "lowres, bad anatomy"
prompt_guide = "Danbooru tags, most important first"
capabilities = ["txt2img", "img2img"]

[defaults]                       # request values override these; these override the server's
steps = 28
cfg_scale = 5.0
width = 1024
height = 1024
sampler = "Euler a"
scheduler = "Karras"

[presets.hd]                     # selected per request with "quality": "hd"
steps = 40
cfg_scale = 6.0

[[controlnets]]                  # taken by a request's controlnets[0] that names no model
model = "canny-sdxl"
preprocessor = "canny"
conditioning_scale = 0.7
```

A manifest in the models dir itself names its model with `model = "<name>"`.
"""

from __future__ import annotations

import logging
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

log = logging.getLogger(__name__)


class Defaults(BaseModel):
    """Generation defaults of a model, or of one of its presets."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    steps: int | None = Field(None, ge=1, le=1000)
    cfg_scale: float | None = Field(None, ge=0, le=100)
    width: int | None = Field(None, ge=8, le=8192, multiple_of=8)
    height: int | None = Field(None, ge=8, le=8192, multiple_of=8)
    sampler: str | None = None
    scheduler: str | None = None
    negative_prompt: str | None = None

    def set_fields(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class ControlNetDefault(BaseModel):
    """A default ControlNet: the i-th one is used by a request's `controlnets[i]` that
    names no model (the request still sends the control image; its values win)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str
    conditioning_scale: float | None = Field(None, ge=0, le=10)
    guidance_start: float | None = Field(None, ge=0, le=1)
    guidance_end: float | None = Field(None, ge=0, le=1)
    preprocessor: str | None = None


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str | None = Field(None, description="only in a manifest in the models dir itself")
    id: str | None = None
    display_name: str | None = None
    architecture: str | None = None
    negative_prompt: str | None = None
    prompt_guide: str | None = None
    capabilities: tuple[str, ...] = ()
    defaults: Defaults = Defaults()
    presets: dict[str, Defaults] = {}
    controlnets: tuple[ControlNetDefault, ...] = ()

    def model_defaults(self) -> dict[str, Any]:
        """The defaults table plus the top-level negative prompt."""
        base = self.defaults.set_fields()
        if self.negative_prompt is not None:
            base.setdefault("negative_prompt", self.negative_prompt)
        return base

    def describe(self) -> dict[str, Any]:
        """What the model list shows."""
        return {
            "alias": self.id,
            "display_name": self.display_name,
            "prompt_guide": self.prompt_guide,
            "capabilities": list(self.capabilities),
            "presets": {name: p.set_fields() for name, p in self.presets.items()},
        }


def read_manifest(path: Path) -> Manifest | None:
    """A manifest file, or None (with a warning naming the file) when it is invalid."""
    try:
        return Manifest.model_validate(tomllib.loads(path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, ValidationError) as exc:
        log.warning("ignoring invalid model manifest %s: %s", path, exc)
        return None


def sibling_manifest(model_path: Path) -> Path:
    """`x.safetensors` and the directory `x/` both take `x.toml` beside them."""
    return model_path.with_name(model_path.name.removesuffix(".safetensors") + ".toml")


def root_manifests(models_dir: Path) -> dict[str, Manifest]:
    """Manifests in the models dir itself, by the model name they give."""
    found: dict[str, Manifest] = {}
    for path in sorted(models_dir.glob("*.toml")) if models_dir.is_dir() else ():
        manifest = read_manifest(path)
        if manifest is not None and manifest.model:
            found[manifest.model] = manifest
        elif manifest is not None:
            log.warning("ignoring manifest %s: it must name its model (model = ...)", path)
    return found
