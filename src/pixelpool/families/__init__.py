"""Task families as the HTTP process sees them: torch-free descriptions (base.py).

The registry asks them which files are models, the job service what a job costs and
what kind of result it returns, the API how to list a model. The worker side of a
family is `pipelines/<family>/`.
"""

from __future__ import annotations

from pixelpool.families import bgremove, diffusion, tag, upscale, vision
from pixelpool.families.base import Cost, FamilyDescription

FAMILIES: dict[str, FamilyDescription] = {
    d.DESCRIPTION.name: d.DESCRIPTION for d in (diffusion, upscale, bgremove, tag, vision)
}
# Folders the registry reads for something other than a family's models.
RESERVED_FOLDERS = frozenset(
    {
        "loras",
        "vae_approx",
        "VAE-approx",
        "other",
        "ip-adapter",
        "ipadapter",
        "controlnet",
        "ControlNet",
    }
)


def get(name: str) -> FamilyDescription:
    try:
        return FAMILIES[name]
    except KeyError as exc:
        raise ValueError(f"unknown task family: {name!r}") from exc


def register(description: FamilyDescription) -> None:
    """Add a family (tests add a fake one)."""
    FAMILIES[description.name] = description


def for_folder(folder: str) -> FamilyDescription | None:
    """The family whose models live under `folder`: the one claiming it, else diffusion."""
    if folder in RESERVED_FOLDERS or folder.startswith("."):
        return None
    for family in FAMILIES.values():
        if folder in family.folders:
            return family
    return FAMILIES["diffusion"]


def estimate_cost(family: str, model: dict, params: dict) -> Cost:
    return get(family).estimate_cost(model, params)
