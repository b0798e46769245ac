"""Prompt syntax users bring from AUTOMATIC1111, parsed without torch.

- emphasis: ``(word)`` x1.1, ``[word]`` /1.1, ``(word:1.3)`` an explicit weight, nestable;
  ``\\(`` and ``\\)`` are literal brackets;
- ``BREAK`` starts a new 75-token chunk;
- ``<lora:name:weight>`` (or ``<lora:name>``, weight 1) asks for a LoRA and is removed
  from the text the encoder sees.

The API parses LoRA tags (to resolve and validate them before a job is queued); the
worker turns the weighted fragments into embeddings (see ``embeddings.py``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

EMPHASIS = 1.1
BREAK = "BREAK"

_LORA_TAG = re.compile(r"<(?:lora|lyco):([^:>]+)(?::\s*([+-]?(?:\d+\.?\d*|\.\d+))\s*)?>", re.I)
_TOKEN = re.compile(
    r"\\[()\[\]\\]"  # an escaped bracket or backslash
    r"|:\s*([+-]?(?:\d+\.?\d*|\.\d+))\s*\)"  # ':1.3)' closes an explicit weight
    r"|[()\[\]]"  # an opening or closing bracket
    r"|[^\\()\[\]:]+"  # plain text
    r"|[:\\]"  # a lone colon or backslash is text
)
_BREAK_SPLIT = re.compile(r"\s*\bBREAK\b\s*")


@dataclass(frozen=True)
class LoraTag:
    name: str
    weight: float


def extract_lora_tags(prompt: str) -> tuple[str, list[LoraTag]]:
    """The prompt without its ``<lora:...>`` tags, and the tags in order of appearance."""
    tags = [
        LoraTag(m.group(1).strip(), float(m.group(2)) if m.group(2) else 1.0)
        for m in _LORA_TAG.finditer(prompt)
    ]
    text = _LORA_TAG.sub("", prompt)
    return re.sub(r"[ \t]{2,}", " ", text).strip(), tags


def parse_weighted(prompt: str) -> list[tuple[str, float]]:
    """Split a prompt into (text, weight) fragments; ``(BREAK, -1)`` marks a chunk break.

    Unbalanced brackets are closed at the end of the prompt, as A1111 does.
    """
    fragments: list[list[str | float]] = []
    open_round: list[int] = []
    open_square: list[int] = []

    def scale(start: int, factor: float) -> None:
        for fragment in fragments[start:]:
            if fragment[1] != -1:
                fragment[1] = float(fragment[1]) * factor

    for match in _TOKEN.finditer(prompt):
        token, weight = match.group(0), match.group(1)
        if token.startswith("\\") and len(token) == 2:
            fragments.append([token[1], 1.0])
        elif token == "(":
            open_round.append(len(fragments))
        elif token == "[":
            open_square.append(len(fragments))
        elif weight is not None and open_round:
            scale(open_round.pop(), float(weight))
        elif token == ")" and open_round:
            scale(open_round.pop(), EMPHASIS)
        elif token == "]" and open_square:
            scale(open_square.pop(), 1 / EMPHASIS)
        else:
            for i, part in enumerate(_BREAK_SPLIT.split(token)):
                if i:
                    fragments.append([BREAK, -1])
                if part:
                    fragments.append([part, 1.0])
    for start in open_round:
        scale(start, EMPHASIS)
    for start in open_square:
        scale(start, 1 / EMPHASIS)
    merged: list[tuple[str, float]] = []
    for text, weight in fragments:
        if merged and merged[-1][1] == weight and weight != -1:
            merged[-1] = (merged[-1][0] + str(text), float(weight))
        else:
            merged.append((str(text), float(weight)))
    return merged or [("", 1.0)]


def is_plain(prompt: str) -> bool:
    """True when the prompt has no emphasis and no BREAK: the encoder can take it as is."""
    return all(w == 1.0 and t != BREAK for t, w in parse_weighted(prompt)) and not any(
        ch in prompt for ch in "()[]\\"
    )
