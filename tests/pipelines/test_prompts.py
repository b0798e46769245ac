"""A1111 prompt syntax: the parser, LoRA tags, and weighted / long-prompt embeddings."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from pixelpool.families.diffusion.params import Txt2ImgParams
from pixelpool.families.diffusion.prompts import (
    BREAK,
    extract_lora_tags,
    is_plain,
    parse_weighted,
)
from pixelpool.pipelines.base import Loaded
from pixelpool.pipelines.diffusion import embeddings

from .diffusion_helpers import BASE, MODELS, load, max_diff, run


def test_emphasis_syntax() -> None:
    assert parse_weighted("a (red) fox") == [("a ", 1.0), ("red", 1.1), (" fox", 1.0)]
    assert parse_weighted("[blurry]") == [("blurry", pytest.approx(1 / 1.1))]
    assert parse_weighted("((fox))")[0][1] == pytest.approx(1.21)
    assert parse_weighted("(red fox:1.3), tree") == [("red fox", 1.3), (", tree", 1.0)]
    assert parse_weighted("(a (b:2):0.5)") == [("a ", 0.5), ("b", 1.0)]
    assert parse_weighted(r"\(literal\)") == [("(literal)", 1.0)]
    assert parse_weighted("(unclosed") == [("unclosed", pytest.approx(1.1))]
    assert parse_weighted("a BREAK b") == [("a", 1.0), (BREAK, -1.0), ("b", 1.0)]
    assert parse_weighted("time: 10") == [("time: 10", 1.0)]
    assert is_plain("a photo of a fox, 4k") and not is_plain("a (fox)")


def test_lora_tags_are_extracted() -> None:
    text, tags = extract_lora_tags("a fox <lora:style:0.7> in <lora:xl/other> snow")
    assert text == "a fox in snow"
    assert [(t.name, t.weight) for t in tags] == [("style", 0.7), ("xl/other", 1.0)]
    assert extract_lora_tags("no tags") == ("no tags", [])


@pytest.fixture(scope="module", params=["sd15", "sdxl"])
def model(request: pytest.FixtureRequest, models_dir: Path) -> Loaded:
    return load(models_dir / MODELS[request.param], request.param)


def test_plain_prompt_through_embeddings_equals_diffusers(model: Loaded, monkeypatch) -> None:
    """The chunked encoder gives what diffusers' own encoding gives for a plain prompt."""
    (plain,) = run(model, "txt2img", BASE)
    monkeypatch.setattr(embeddings, "needs_embeddings", lambda *a: True)
    (chunked,) = run(model, "txt2img", BASE)
    assert max_diff(plain.images[0], chunked.images[0]) <= 1


def test_weights_change_the_image_and_weight_one_does_not(model: Loaded) -> None:
    (plain,) = run(model, "txt2img", BASE)
    (one,) = run(model, "txt2img", {**BASE, "prompt": "a photo of a (red:1.0) fox"})
    (strong,) = run(model, "txt2img", {**BASE, "prompt": "a photo of a (red:3.0) fox"})
    assert max_diff(plain.images[0], one.images[0]) <= 1
    assert max_diff(plain.images[0], strong.images[0]) > 1


def test_long_prompts_are_chunked_not_truncated(model: Loaded) -> None:
    long = "a photo of a red fox, " * 20
    pipe = model.obj
    tokens = len(embeddings._plain_tokens(pipe.tokenizer, long))
    chunks = embeddings.token_chunks(pipe.tokenizer, long)
    assert tokens > 75 and len(chunks) == math.ceil(tokens / 75)
    assert all(len(ids) == 77 for ids, _ in chunks)
    assert chunks[1][0][0] == pipe.tokenizer.bos_token_id
    params = [Txt2ImgParams(**{**BASE, "prompt": long})]
    out = embeddings.prompt_inputs(pipe, params)
    assert out["prompt_embeds"].shape[1] == 77 * len(chunks)
    assert out["negative_prompt_embeds"].shape == out["prompt_embeds"].shape
    (full,) = run(model, "txt2img", {**BASE, "prompt": long})
    (tail,) = run(model, "txt2img", {**BASE, "prompt": long + " BREAK blue sky"})
    assert max_diff(full.images[0], tail.images[0]) > 1
    assert not np.array_equal(full.images[0], run(model, "txt2img", BASE)[0].images[0])
    assert torch.isfinite(out["prompt_embeds"]).all()
