"""Generated CLIP byte-level BPE vocabularies, so tokenizers need no download."""

from __future__ import annotations

import json
from pathlib import Path

from pixelpool.pipelines.diffusion.clip_bytes import bytes_to_unicode

SPECIAL = ("<|startoftext|>", "<|endoftext|>")


def _merges_for(words: list[str]) -> list[tuple[str, str]]:
    """Left-to-right merges that build each whole word (with its end-of-word mark)."""
    merges: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    for word in words:
        symbols = [*list(word[:-1]), word[-1] + "</w>"]
        current = symbols[0]
        for nxt in symbols[1:]:
            pair = (current, nxt)
            if pair not in seen:
                seen.add(pair)
                merges.append(pair)
            current = current + nxt
    return merges


def write_clip_tokenizer_files(
    directory: Path, words: list[str], pad_token: str = "<|endoftext|>"
) -> int:
    """Write vocab.json, merges.txt and configs for a CLIP tokenizer; return vocab size."""
    directory.mkdir(parents=True, exist_ok=True)
    base = list(bytes_to_unicode().values())
    vocab_list = base + [c + "</w>" for c in base]
    merges = _merges_for(sorted(set(words)))
    vocab_list += ["".join(pair) for pair in merges]
    vocab_list += list(SPECIAL)
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(vocab_list))}
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    lines = ["#version: 0.2"] + [f"{a} {b}" for a, b in merges]
    (directory / "merges.txt").write_text("\n".join(lines) + "\n")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": 77,
        "bos_token": SPECIAL[0],
        "eos_token": SPECIAL[1],
        "unk_token": SPECIAL[1],
        "pad_token": pad_token,
        "do_lower_case": True,
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    special = {k: config[k] for k in ("bos_token", "eos_token", "unk_token", "pad_token")}
    (directory / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    return len(vocab)


def write_t5_tokenizer_files(directory: Path, words: list[str]) -> int:
    """Write a small T5-style (SentencePiece unigram) tokenizer; return its vocabulary size.

    Built with the `tokenizers` library in-process, so FLUX/SD3-style pipelines
    get a real T5TokenizerFast without downloading a sentencepiece model.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [("▁" + w, -1.0) for w in sorted(set(words))]
    pieces += [(c, -5.0) for c in "abcdefghijklmnopqrstuvwxyz0123456789.,:;!?'()-"]
    tokenizer = Tokenizer(models.Unigram(pieces, unk_id=2, byte_fallback=False))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(directory / "tokenizer.json"))
    config = {"tokenizer_class": "T5TokenizerFast", "pad_token": "<pad>", "eos_token": "</s>",
              "unk_token": "<unk>", "model_max_length": 512, "extra_ids": 0}  # fmt: skip
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return len(pieces)
