"""A WD tagger's `selected_tags.csv` (tag_id,name,category,count) and score selection.

Follows the WD tagger reference (SmilingWolf's wd-tagger demo): categories 9
rating, 0 general, 4 character; underscores become spaces except in kaomoji;
MCut thresholds at the largest gap between sorted scores.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

RATING, GENERAL, CHARACTER = 9, 0, 4
KAOMOJIS = frozenset(
    ["0_0", "(o)_(o)", "+_+", "+_-", "._.", "<o>_<o>", "<|>_<|>", "=_=", ">_<", "3_3", "6_9",
     ">_o", "@_@", "^_^", "o_o", "u_u", "x_x", "|_|", "||_||"]
)  # fmt: skip
CHARACTER_MCUT_FLOOR = 0.15


@dataclass(frozen=True)
class Labels:
    names: list[str]
    categories: np.ndarray

    def indexes(self, category: int) -> np.ndarray:
        return np.flatnonzero(self.categories == category)


def read_labels(path: Path) -> Labels:
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    missing = {"name", "category"} - set(rows[0] if rows else {})
    if missing:
        raise ValueError(f"{path.name}: no column {sorted(missing)[0]!r}")
    return Labels([r["name"] for r in rows], np.array([int(r["category"]) for r in rows]))


def display_name(name: str, replace_underscores: bool) -> str:
    return name.replace("_", " ") if replace_underscores and name not in KAOMOJIS else name


def mcut_threshold(probs: np.ndarray) -> float:
    """Maximum Cut Thresholding: the midpoint of the largest gap between sorted scores."""
    if len(probs) < 2:
        return 0.0
    ordered = np.sort(probs)[::-1]
    gap = int(np.argmax(ordered[:-1] - ordered[1:]))
    return float((ordered[gap] + ordered[gap + 1]) / 2)


def select(
    probs: np.ndarray, names: list[str], threshold: float, top_k: int | None
) -> dict[str, float]:
    """Scores above `threshold`, best first, at most `top_k`."""
    keep = [(names[i], float(probs[i])) for i in np.argsort(-probs, kind="stable")
            if probs[i] > threshold]  # fmt: skip
    return dict(keep[:top_k] if top_k else keep)
