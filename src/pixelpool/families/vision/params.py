"""Vision parameters (torch-free): a job holds a list of images, as the vision API sends
batches. Names follow the `transformers` processors' post-processing arguments.

Every option here only filters or reshapes what the forward pass returns, so any jobs
of one operation on one model can share a forward pass: the batch key is the op.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import ConfigDict, Field, ValidationInfo, field_validator, model_validator

from pixelpool.families.base import OpParams

MAX_IMAGES = 64
MAX_PROMPTS = 32
MAX_BOXES = 64
MAX_PROMPT_CHARS = 200
MAX_POINTS = 16  # per object (one point group)


class VisionOpParams(OpParams):
    """A list of uploaded images; their sizes (set by the API) feed the cost estimate."""

    model_config = ConfigDict(extra="forbid")
    op: ClassVar[str] = "vision"  # each operation's own name: the batch key

    images: list[str] = Field(
        min_length=1, max_length=MAX_IMAGES, description="paths of the uploaded input images"
    )
    image_sizes: list[tuple[int, int]] = Field(
        default_factory=list, description="(width, height) of each image, for the cost estimate"
    )

    def batch_key(self) -> tuple[Any, ...]:
        return (self.op,)


def _clean_prompts(prompts: list[str]) -> list[str]:
    cleaned = [p.strip() for p in prompts]
    if any(not p for p in cleaned):
        raise ValueError("a prompt is empty")
    if any(len(p) > MAX_PROMPT_CHARS for p in cleaned):
        raise ValueError(f"a prompt is longer than {MAX_PROMPT_CHARS} characters")
    return cleaned


Box = tuple[float, float, float, float]
Point = tuple[float, float]


def _check_points(groups_per_image: list[list[list[Point]]], info: ValidationInfo) -> None:
    """One list of objects per image, each object 1..MAX_POINTS points inside its image
    (when the API has set the images' sizes), and one box per object with boxes."""
    images = info.data.get("images") or []
    if len(groups_per_image) != len(images):
        raise ValueError("one list of point groups (objects) per image")
    sizes = info.data.get("image_sizes") or []
    boxes = info.data.get("boxes")
    for i, groups in enumerate(groups_per_image):
        if len(groups) > MAX_BOXES:
            raise ValueError(f"at most {MAX_BOXES} objects (point groups) per image")
        if any(not 1 <= len(g) <= MAX_POINTS for g in groups):
            raise ValueError(f"each object is a list of 1 to {MAX_POINTS} [x, y] points")
        if len(sizes) == len(images):
            width, height = sizes[i]
            for x, y in (pt for g in groups for pt in g):
                if not (0 <= x <= width and 0 <= y <= height):
                    raise ValueError(
                        f"point [{x}, {y}] is outside image {i} ({width}x{height} pixels)"
                    )
        if boxes is not None and i < len(boxes) and boxes[i] and len(boxes[i]) != len(groups):
            raise ValueError(f"image {i}: with boxes, one point group per box (one per object)")


class SegmentParams(VisionOpParams):
    """SAM 3 (promptable concept segmentation). Each text prompt is one query per image;
    `boxes` are exemplars of the concept in that image (label 1) or counter-examples
    (label 0): with prompts they refine every prompt, alone they are one visual query.

    `points` are SAM 2-style prompts for SAM 3's tracker: per image, a list of objects,
    each a group of [x, y] points (`point_labels` 1 foreground, 0 background), one mask
    per object. With points, `boxes` are those objects' boxes (one per group), not
    exemplars; a tracker-only model (`sam3_tracker`) also takes boxes alone that way."""

    op: ClassVar[str] = "segment"
    prompts: list[str] = Field(default_factory=list, max_length=MAX_PROMPTS)
    boxes: list[list[Box]] | None = Field(
        None, description="per image, xyxy boxes in pixels of that image"
    )
    box_labels: list[list[int]] | None = Field(None, description="per box: 1 positive, 0 negative")
    threshold: float = Field(0.5, ge=0, le=1, description="instance score threshold")
    mask_threshold: float = Field(0.5, ge=0, le=1, description="mask probability threshold")
    points: list[list[list[Point]]] | None = Field(
        None, description="per image, objects, each a list of [x, y] points in pixels"
    )
    point_labels: list[list[list[int]]] | None = Field(
        None, description="per point: 1 foreground, 0 background (default all 1)"
    )
    multimask_output: bool = Field(
        False, description="points: three candidate masks per object instead of the best one"
    )

    _prompts = field_validator("prompts")(_clean_prompts)

    @field_validator("points")
    @classmethod
    def _points(cls, value: Any, info: ValidationInfo) -> Any:
        if value is not None:
            _check_points(value, info)
        return value

    @field_validator("point_labels")
    @classmethod
    def _point_labels(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None:
            return value
        points = info.data.get("points")
        if points is None:
            raise ValueError("point_labels without points")
        shape = [[len(g) for g in groups] for groups in points]
        if [[len(g) for g in groups] for groups in value] != shape:
            raise ValueError("one label per point, grouped as the points are")
        if any(label not in (0, 1) for groups in value for g in groups for label in g):
            raise ValueError("1 (foreground) or 0 (background)")
        return value

    def has_points(self) -> bool:
        return self.points is not None and any(self.points)

    @model_validator(mode="after")
    def _consistent(self) -> SegmentParams:
        has_boxes = self.boxes is not None and any(self.boxes)
        if not self.prompts and not has_boxes and not self.has_points():
            raise ValueError("give prompts or boxes (or points)")
        if self.points is not None and self.box_labels is not None:
            raise ValueError("box_labels: with points, boxes are objects' boxes and take no labels")
        if self.boxes is not None:
            if len(self.boxes) != len(self.images):
                raise ValueError("boxes: one list per image")
            if any(len(b) > MAX_BOXES for b in self.boxes):
                raise ValueError(f"boxes: at most {MAX_BOXES} per image")
            if any(x1 < x0 or y1 < y0 for per in self.boxes for x0, y0, x1, y1 in per):
                raise ValueError("boxes: each is [x0, y0, x1, y1] with x1 >= x0, y1 >= y0")
        if self.box_labels is not None:
            if self.boxes is None:
                raise ValueError("box_labels without boxes")
            if [len(x) for x in self.box_labels] != [len(b) for b in self.boxes]:
                raise ValueError("box_labels: one label per box")
            if any(label not in (0, 1) for per in self.box_labels for label in per):
                raise ValueError("box_labels: 1 (positive) or 0 (negative)")
        return self

    def queries(self) -> list[str]:
        """The query texts every image is asked (SAM 3 names a box-only query 'visual')."""
        return list(self.prompts) or ["visual"]

    def boxes_are_objects(self, tracker_only: bool) -> bool:
        """Boxes prompt the tracker (one object each) rather than the detector (exemplars)."""
        return self.points is not None or tracker_only

    def detector_queries(self, tracker_only: bool) -> list[str]:
        """The detector's queries: none when the job holds only objects for the tracker."""
        if tracker_only:
            return []
        if self.prompts or not self.boxes_are_objects(tracker_only):
            return self.queries()
        return []

    def tracker_objects(self, tracker_only: bool) -> bool:
        """Whether this job has objects (points, or boxes as objects) for the tracker."""
        has_boxes = self.boxes is not None and any(self.boxes)
        return self.has_points() or (self.boxes_are_objects(tracker_only) and has_boxes)


class DetectParams(VisionOpParams):
    """Grounding DINO: open-vocabulary boxes for text labels."""

    op: ClassVar[str] = "detect"
    prompts: list[str] = Field(min_length=1, max_length=MAX_PROMPTS, description="text labels")
    threshold: float = Field(0.35, ge=0, le=1, description="box score threshold (box_threshold)")
    text_threshold: float = Field(0.25, ge=0, le=1, description="label token threshold")

    _prompts = field_validator("prompts")(_clean_prompts)


class DepthParams(VisionOpParams):
    """Depth Anything: relative depth (larger is nearer) at each input's size."""

    op: ClassVar[str] = "depth"


class EmbedParams(VisionOpParams):
    """DINOv2 / DINOv3 features."""

    op: ClassVar[str] = "embed"
    pooling: Literal["cls", "mean"] = Field(
        "cls", description="cls: the model's pooled CLS output; mean: mean of patch tokens"
    )
    patch_features: bool = Field(False, description="also return the patch tokens")
    normalize: bool = Field(False, description="L2-normalise the embedding (and patches)")


PARAMS: dict[str, type[VisionOpParams]] = {
    "segment": SegmentParams,
    "detect": DetectParams,
    "depth": DepthParams,
    "embed": EmbedParams,
}
