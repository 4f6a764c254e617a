"""A small byte-level CLIP BPE tokenizer that needs no download: every byte character (with
and without ``</w>``), a few merges, and CLIP's start/end tokens. The tiny text-conditional
pipelines (tests, ``synthset pretrain-tiny``) use it; captions tokenize almost per character,
which a small text encoder learns well."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

#: Size of the tiny text encoder's embedding table; the tokenizer's vocab must fit in it.
TINY_TEXT_VOCAB_SIZE = 1000

#: A few BPE merges so the tokenizer really merges (``photo`` → one token) instead of
#: only splitting into characters.
_TINY_MERGES: tuple[tuple[str, str], ...] = (
    ("p", "h"),
    ("o", "t"),
    ("ph", "ot"),
    ("phot", "o</w>"),
    ("o", "f</w>"),
    ("t", "h"),
    ("th", "e</w>"),
)
_BOS = "<|startoftext|>"
_EOS = "<|endoftext|>"


@lru_cache(maxsize=1)
def _byte_chars() -> list[str]:
    """The 256 printable characters byte-level BPE uses for the bytes 0..255 (GPT-2 / CLIP)."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars, extra = [], 0
    for b in range(256):
        if b in printable:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def tiny_clip_vocab() -> tuple[dict[str, int], list[str]]:
    """A small CLIP BPE vocabulary and its merges: every byte character with and without
    ``</w>``, the merged tokens, then ``<|startoftext|>`` and ``<|endoftext|>`` (highest ids,
    as in real CLIP, whose text model pools at the highest id)."""
    merges = list(_TINY_MERGES)
    tokens = list(_byte_chars()) + [c + "</w>" for c in _byte_chars()]
    tokens += [a + b for a, b in merges if a + b not in tokens]
    tokens += [_BOS, _EOS]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    assert len(vocab) <= TINY_TEXT_VOCAB_SIZE
    return vocab, [f"{a} {b}" for a, b in merges]


def build_tiny_clip_tokenizer(out_dir: Path, max_length: int = 77) -> Any:
    """Write ``vocab.json`` + ``merges.txt`` into ``out_dir`` and load a ``CLIPTokenizer``
    from them (``model_max_length``: ``max_length``)."""
    from transformers import CLIPTokenizer

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    vocab, merges = tiny_clip_vocab()
    (out_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    merges_text = "#version: 0.2\n" + "\n".join(merges) + "\n"
    (out_dir / "merges.txt").write_text(merges_text, encoding="utf-8")
    return CLIPTokenizer.from_pretrained(str(out_dir), model_max_length=max_length)
