"""``synthset pretrain-tiny``: a tiny text-conditional Stable Diffusion pipeline pretrained on the
recipe's real train split, loadable by diffusers and by synthset's generators, cached."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from test_cli import synthset


def _recipe(tmp_path: Path) -> Path:
    data = {
        "name": "pt",
        "seed": 0,
        "output_dir": str(tmp_path / "run"),
        "classes": {"dataset": "digits"},
        "real": {"source": "digits", "val_fraction": 0.15, "test_fraction": 0.25},
    }
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_pretrain_tiny_builds_a_stable_diffusion_pipeline_once(tmp_path: Path) -> None:
    import json

    import torch
    from diffusers import AutoPipelineForText2Image, StableDiffusionPipeline

    recipe = _recipe(tmp_path)
    args = ["pretrain-tiny", str(recipe), "--captions", "class", "--classes", "0-4", "-q"]
    done = synthset(*args, "--steps", "4", "--vae-steps", "4")
    assert done.returncode == 0, done.stderr
    base = tmp_path / "run" / "base-class-0_1_2_3_4"
    assert str(base) in done.stdout
    meta = json.loads((base / "synthset_base.json").read_text())
    assert meta["classes_seen"] == ["0", "1", "2", "3", "4"]
    assert "a handwritten digit 0" in meta["caption_examples"]
    pipe = AutoPipelineForText2Image.from_pretrained(base)
    assert isinstance(pipe, StableDiffusionPipeline) and pipe.vae_scale_factor == 1
    gen = torch.Generator().manual_seed(0)
    image = pipe(["a handwritten digit 3"], num_inference_steps=2, generator=[gen]).images[0]
    assert image.size == (8, 8)
    stamp = (base / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns
    again = synthset(*args, "--steps", "4", "--vae-steps", "4")
    assert again.returncode == 0, again.stderr
    assert (base / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns == stamp
    assert not (tmp_path / "run" / "base-class-0_1_2_3_4.parts").exists()


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--classes", "0-12"], "--classes: class id 10 is out of range 0..9"),
        (["--classes", "cat"], "--classes: 'cat' is neither a class id"),
        (["--captions", "labels"], "--captions: 'labels'; choose generic or class"),
    ],
)
def test_pretrain_tiny_bad_options_are_one_line_errors(
    tmp_path: Path, extra: list[str], fragment: str
) -> None:
    done = synthset("pretrain-tiny", str(_recipe(tmp_path)), *extra)
    assert done.returncode != 0
    assert fragment in done.stderr and "Traceback" not in done.stderr


def test_given_captions_replace_the_generated_ones_and_must_match_the_images(
    tmp_path: Path, digits_images: list
) -> None:
    import json

    from synthset.adapt.tiny_base import BaseSettings, pretrain_tiny_base
    from synthset.errors import SynthsetError

    images = digits_images[:6]
    names = [str(c) for c in range(10)]
    settings = BaseSettings("class", (0, 1, 2, 3, 4), steps=2, vae_steps=2, batch_size=4)
    with pytest.raises(SynthsetError, match="5 captions for 6 images") as err:
        pretrain_tiny_base(images, names, settings, tmp_path / "b", False, ["x"] * 5)
    assert "\n" not in str(err.value)
    given = [f"image number {i}" for i in range(len(images))]
    base = pretrain_tiny_base(images, names, settings, tmp_path / "b", False, given)
    meta = json.loads((base / "synthset_base.json").read_text())
    kept = [given[i] for i, (_, lbl) in enumerate(images) if lbl in settings.class_ids]
    assert kept and meta["caption_examples"] == kept[:5]
    assert "a handwritten digit" not in " ".join(meta["caption_examples"])


def test_a_text_encoder_without_layers_keeps_the_class_at_its_word(
    tmp_path: Path, digits_images: list
) -> None:
    """text_layers=0: two captions that differ only in the class word give the same context
    at every other token, so the UNet can only learn the class where the word is; with CLIP's
    causal layers the end token and padding carry it too."""
    import torch
    from transformers import CLIPTextModel, CLIPTokenizer

    from synthset.adapt.tiny_base import BaseSettings, pretrain_tiny_base

    names = [str(c) for c in range(10)]
    contexts = {}
    for layers in (0, 3):
        settings = BaseSettings(
            "class", None, steps=2, vae_steps=2, batch_size=4, text_layers=layers
        )
        base = pretrain_tiny_base(
            digits_images[:6], names, settings, tmp_path / f"b{layers}", False
        )
        tokenizer = CLIPTokenizer.from_pretrained(base / "tokenizer")
        encoder = CLIPTextModel.from_pretrained(base / "text_encoder")
        assert encoder.config.num_hidden_layers == layers
        ids = tokenizer(
            ["a handwritten digit 3", "a handwritten digit 7"],
            padding="max_length",
            max_length=tokenizer.model_max_length,
            return_tensors="pt",
        ).input_ids
        word = [int(k) for k in torch.nonzero(ids[0] != ids[1])]
        with torch.no_grad():
            out = encoder(ids)[0]
        differs = (out[0] - out[1]).abs().amax(-1) > 1e-6
        contexts[layers] = (word, [int(k) for k in torch.nonzero(differs)])
    word, differs = contexts[0]
    assert len(word) == 1 and differs == word
    word, differs = contexts[3]
    assert len(differs) > 10 and differs[0] == word[0]


def test_generic_captions_say_part_of_the_class_in_shape_words(tmp_path: Path) -> None:
    """Setting A's captions name no class, vary with the image, and (benchmarks/
    caption_information.py, one seed) a caption -> class lookup learned on train gets well above
    chance on test but far below a classifier on the pixels: the ceiling of what a learned
    prompt can say to a base pretrained on them."""
    import sys

    from synthset.adapt.tiny_base import INK, WIDTH, generic_captions
    from synthset.data.splits import load_splits

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import caption_information as bench
    from adapt_digits import WORDS, digits_split

    splits_file = digits_split(0, tmp_path / "split")
    train = load_splits(splits_file, names=("train",))["train"][:200]
    captions = generic_captions(train)
    assert len(captions) == 200 and len(set(captions)) > 50
    for caption in captions:
        assert not any(ch.isdigit() for ch in caption)
        assert not any(w in caption.split() for w in WORDS)
        assert sum(w in caption for w in INK) == 1 and sum(w in caption for w in WIDTH) == 1
    result = bench.caption_accuracy(splits_file)
    assert 0.3 < result["test_accuracy"] < 0.75, result
    assert 0.3 < result["logistic_test_accuracy"] < 0.75, result

    # the richer vocabulary (adapt_digits --base-captions detailed): no class word either, fits
    # the text encoder, and says much more of the class
    from adapt_digits import detailed_captions

    from synthset.adapt.tiny_base import MAX_TOKENS
    from synthset.adapt.tiny_tokenizer import build_tiny_clip_tokenizer

    tokenizer = build_tiny_clip_tokenizer(tmp_path / "tok", max_length=MAX_TOKENS)
    for caption in detailed_captions(train):
        assert not any(w in caption.split() for w in WORDS) and ", map " in caption
        assert len(tokenizer(caption).input_ids) <= MAX_TOKENS
    detailed = bench.caption_accuracy(splits_file, "detailed")
    assert detailed["logistic_test_accuracy"] > result["logistic_test_accuracy"] + 0.15
