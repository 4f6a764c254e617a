"""Research caption formats (read, write, round trip, errors) and the prompt-diversity report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from synthset.classes import resolve_classes
from synthset.errors import SynthsetError
from synthset.prompts.base import PromptRecord
from synthset.prompts.diversity import diversity_report
from synthset.prompts.formats import (
    match_captions,
    parse_caption_lines,
    parse_captions_json,
    read_captions,
    write_caption_lines,
    write_captions_json,
)
from synthset.recipe import ClassesSpec

CLASSES = resolve_classes(ClassesSpec(names=["cat", "dog", "sea lion"]))
RECORDS = [
    PromptRecord(0, "cat", "a cat on a windowsill, at dusk", "template", "template:0"),
    PromptRecord(0, "cat", 'a "tabby" cat => asleep', "template", "template:1"),
    PromptRecord(1, "dog", "a dog running on a beach", "fakeit", "fakeit:scene1"),
    PromptRecord(2, "sea lion", "a sea lion, in ünïcode light", "file", "file:line3"),
]


def pairs_from(path: Path) -> list[tuple[str, int]]:
    matched = match_captions(read_captions(path), CLASSES)
    assert not matched.unmatched
    return [
        (cap.caption, cid)
        for cid, caps in matched.by_class.items()
        for cap in caps  # class order, then file order
    ]


@pytest.mark.parametrize("writer", [write_caption_lines, write_captions_json])
def test_round_trip(tmp_path: Path, writer: object) -> None:
    path = tmp_path / ("out.json" if writer is write_captions_json else "out.txt")
    writer(path, RECORDS)  # type: ignore[operator]
    assert pairs_from(path) == [(r.prompt, r.class_id) for r in RECORDS]


def test_written_formats_look_like_the_research_formats(tmp_path: Path) -> None:
    write_caption_lines(tmp_path / "c.txt", RECORDS)
    lines = (tmp_path / "c.txt").read_text(encoding="utf-8").splitlines()
    assert lines[2] == "a dog running on a beach => dog"
    write_captions_json(tmp_path / "c.json", RECORDS)
    data = json.loads((tmp_path / "c.json").read_text(encoding="utf-8"))
    assert data["captions_single_labeled"][2] == ["a dog running on a beach", [1]]


def test_json_detected_without_json_suffix(tmp_path: Path) -> None:
    path = tmp_path / "captions.data"
    path.write_text('{"captions_single_labeled": [["a dog", ["dog"]]]}', encoding="utf-8")
    assert pairs_from(path) == [("a dog", 1)]


def test_label_names_match_case_and_punctuation_insensitively() -> None:
    caps = parse_caption_lines("a sea lion => Sea-Lion\na cat => CAT\na cow => cow\n")
    matched = match_captions(caps, CLASSES)
    assert [c.caption for c in matched.by_class[2]] == ["a sea lion"]
    assert [c.caption for c in matched.by_class[0]] == ["a cat"]
    assert dict(matched.unmatched) == {"cow": 1}
    assert matched.matched == 2


def test_malformed_line_names_its_number() -> None:
    with pytest.raises(SynthsetError, match="line 3"):
        parse_caption_lines("a cat => cat\n\na dog without a label\n", "c.txt")
    with pytest.raises(SynthsetError, match="line 1"):
        parse_caption_lines(" => cat\n")
    with pytest.raises(SynthsetError, match="line 2"):
        parse_caption_lines("a cat => cat\na dog =>\n")


def test_malformed_json_names_line_or_entry() -> None:
    with pytest.raises(SynthsetError, match="line 2"):
        parse_captions_json('{"captions_single_labeled": [\n ["a cat", [0]],,\n]}')
    with pytest.raises(SynthsetError, match="top-level"):
        parse_captions_json('{"captions": []}')
    with pytest.raises(SynthsetError, match="entry 1"):
        parse_captions_json('{"captions_single_labeled": [["a cat", [0]], ["a dog", 1]]}')
    with pytest.raises(SynthsetError, match="entry 0"):
        parse_captions_json('{"captions_single_labeled": [["a cat", [true]]]}')


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SynthsetError, match="not found"):
        read_captions(tmp_path / "nope.txt")


# ----------------------------------------------------------------------------- diversity


def rec(cls: str, prompt: str) -> PromptRecord:
    return PromptRecord(0, cls, prompt, "template", "t")


def test_token_overlap_report() -> None:
    records = [
        rec("cat", "a cat on a sofa"),
        rec("cat", "A cat, on a sofa!"),  # same words
        rec("cat", "a cat in the snow"),
        rec("dog", "a dog"),
        rec("fox", "a red fox at night"),
        rec("fox", "a red fox at night"),
    ]
    report = diversity_report(records)
    assert report["method"] == "token_jaccard"
    cat = report["per_class"]["cat"]
    assert cat["count"] == 3
    assert cat["unique_ratio"] == pytest.approx(2 / 3)
    # Jaccard: identical pair 1.0; {a,cat,on,sofa} vs {a,cat,in,the,snow}: 2/7 twice
    assert cat["mean_pairwise_similarity"] == pytest.approx((1 + 2 / 7 + 2 / 7) / 3)
    assert report["per_class"]["dog"]["mean_pairwise_similarity"] is None
    assert report["per_class"]["fox"]["mean_pairwise_similarity"] == 1.0
    overall = report["overall"]
    assert overall["count"] == 6 and overall["classes"] == 3
    assert overall["unique_ratio"] == pytest.approx((2 / 3 + 1 + 0.5) / 3)
    assert overall["mean_pairwise_similarity"] == pytest.approx(((1 + 4 / 7) / 3 + 1) / 2)


def test_more_varied_prompts_score_lower() -> None:
    same = [rec("a", f"a photo of a cat number {i}") for i in range(5)]
    varied = [rec("b", p) for p in ("cat", "a tabby asleep", "kitten in snow", "feline on roof")]
    report = diversity_report(same + varied)
    sims = {k: v["mean_pairwise_similarity"] for k, v in report["per_class"].items()}
    assert sims["b"] < sims["a"]


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BERT with a WordPiece vocab.txt written here (no downloads)."""
    import torch
    from transformers import BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny-bert")
    words = "[PAD] [UNK] [CLS] [SEP] [MASK] a photo of the cat dog in on park beach snow ##s , ."
    vocab = words.split()
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(folder)
    return folder


def test_embedding_report_with_local_model(tiny_bert: Path) -> None:
    records = [
        rec("cat", "a photo of a cat in the park"),
        rec("cat", "a photo of a cat in the park"),
        rec("dog", "a dog on the beach"),
        rec("dog", "snow, dogs."),
        rec("dog", "the park"),
    ]
    report = diversity_report(records, str(tiny_bert))
    assert report["method"] == f"embedding_cosine:{tiny_bert}"
    assert report["per_class"]["cat"]["mean_pairwise_similarity"] == pytest.approx(1.0, abs=1e-5)
    dog = report["per_class"]["dog"]["mean_pairwise_similarity"]
    assert -1.0 <= dog < 0.999
    again = diversity_report(records, str(tiny_bert))
    assert again["per_class"]["dog"]["mean_pairwise_similarity"] == pytest.approx(dog)


def test_embedding_model_that_cannot_load(tmp_path: Path) -> None:
    with pytest.raises(SynthsetError, match="prompts.diversity_model"):
        diversity_report([rec("cat", "a cat"), rec("cat", "two cats")], str(tmp_path / "none"))
