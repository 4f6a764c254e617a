"""Text2ImageGenerator on tiny random pipelines, loaded through the real from_pretrained path."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from synthset.errors import SynthsetError
from synthset.generators.text2image import Text2ImageGenerator
from synthset.plan import WorkItem
from synthset.recipe import GeneratorSpec

PROMPTS = ["a photo of a cat", "a photo of a dog", "a photo of the ship", "a photo of a frog"]


def make_items(seeds: list[int], prompts: list[str] | None = None) -> list[WorkItem]:
    prompts = prompts or [PROMPTS[i % len(PROMPTS)] for i in range(len(seeds))]
    return [
        WorkItem(f"0000-{i:06d}", 0, "cat", "cat", prompt, seed)
        for i, (seed, prompt) in enumerate(zip(seeds, prompts, strict=True))
    ]


def spec(model: Path | str, **kw: Any) -> GeneratorSpec:
    base: dict[str, Any] = dict(
        kind="text2image",
        model=str(model),
        steps=2,
        guidance_scale=2.0,
        height=32,
        width=48,
        device="cpu",
    )
    return GeneratorSpec(**{**base, **kw})


def pixels(img: Any) -> np.ndarray:
    return np.asarray(img, dtype=np.int16)


@pytest.fixture(scope="module")
def gen(tiny_sd_path: Path) -> Text2ImageGenerator:
    return Text2ImageGenerator(spec(tiny_sd_path))


# ----------------------------------------------------------------------------- generation


def test_generates_one_image_per_item_with_requested_size(gen: Text2ImageGenerator) -> None:
    images = gen.generate(make_items([1, 2, 3]))
    assert len(images) == 3
    assert all(img.size == (48, 32) and img.mode == "RGB" for img in images)
    assert gen.name.startswith("text2image:")
    assert type(gen.pipe).__name__ == "StableDiffusionPipeline"
    assert gen.generate([]) == []


def test_same_items_give_identical_bytes(gen: Text2ImageGenerator, tiny_sd_path: Path) -> None:
    items = make_items([10, 11])
    first = [img.tobytes() for img in gen.generate(items)]
    again = [img.tobytes() for img in gen.generate(items)]
    reloaded = [img.tobytes() for img in Text2ImageGenerator(spec(tiny_sd_path)).generate(items)]
    assert first == again == reloaded


def test_seed_and_prompt_change_the_image(gen: Text2ImageGenerator) -> None:
    a, b = gen.generate(make_items([5, 6], [PROMPTS[0]] * 2))
    c, d = gen.generate(make_items([5, 5], [PROMPTS[0], PROMPTS[1]]))
    assert a.tobytes() != b.tobytes()  # different seeds
    assert a.tobytes() == c.tobytes()  # same seed and prompt
    assert c.tobytes() != d.tobytes()  # same seed, different prompt
    assert pixels(a).std() > 1  # not a flat image


def test_image_depends_on_its_own_item_not_its_batch(gen: Text2ImageGenerator) -> None:
    # Exactly equal on the CPU used to write this; allow ±2 levels for other BLAS kernels.
    # A generator shared across the batch (or seeds mixed up) would differ wildly.
    items = make_items([21, 22, 23, 24])
    batch = gen.generate(items)
    alone = gen.generate(items[2:3])[0]
    reordered = gen.generate([items[3], items[0]])
    assert np.abs(pixels(alone) - pixels(batch[2])).max() <= 2
    assert np.abs(pixels(reordered[0]) - pixels(batch[3])).max() <= 2
    assert np.abs(pixels(reordered[1]) - pixels(batch[0])).max() <= 2


def test_negative_prompt_is_used(gen: Text2ImageGenerator, tiny_sd_path: Path) -> None:
    items = make_items([7])
    with_neg = Text2ImageGenerator(spec(tiny_sd_path, negative_prompt="blurry, text"))
    assert with_neg.call_kwargs(items)["negative_prompt"] == ["blurry, text"]
    assert with_neg.generate(items)[0].tobytes() != gen.generate(items)[0].tobytes()


def test_turbo_style_guidance_zero(tiny_sd_path: Path) -> None:
    def image(guidance: float) -> bytes:
        turbo = spec(tiny_sd_path, steps=1, guidance_scale=guidance, height=None, width=None)
        (img,) = Text2ImageGenerator(turbo).generate(make_items([3]))
        assert img.size == (64, 64)  # the pipeline's default: unet sample_size 32 × VAE factor 2
        return img.tobytes()

    # guidance 0 (SD-Turbo's setting) means no classifier-free guidance: the image is the plain
    # conditional one (as with guidance 1), not the guided one
    assert image(0.0) == image(1.0)
    assert image(0.0) != image(5.0)


# ----------------------------------------------------------------------------- schedulers


@pytest.mark.parametrize(
    ("name", "cls"), [("euler", "EulerDiscreteScheduler"), ("dpm++", "DPMSolverMultistepScheduler")]
)
def test_scheduler_by_name(
    tiny_sd_path: Path, gen: Text2ImageGenerator, name: str, cls: str
) -> None:
    g = Text2ImageGenerator(spec(tiny_sd_path, scheduler=name))
    assert type(g.pipe.scheduler).__name__ == cls
    items = make_items([9])
    (img,) = g.generate(items)
    assert img.size == (48, 32)
    assert img.tobytes() != gen.generate(items)[0].tobytes()  # the DDIM default differs


def test_unknown_scheduler_is_a_one_line_error(tiny_sd_path: Path) -> None:
    with pytest.raises(SynthsetError, match="unknown scheduler 'warp-drive'") as info:
        Text2ImageGenerator(spec(tiny_sd_path, scheduler="warp-drive"))
    assert "\n" not in str(info.value)


# ----------------------------------------------------------------------------- loading errors


def _error(model: Path | str) -> str:
    with pytest.raises(SynthsetError) as info:
        Text2ImageGenerator(spec(model))
    message = str(info.value)
    assert "\n" not in message and message.startswith("generate.generator.model")
    return message


def test_missing_path(tmp_path: Path) -> None:
    assert "no such folder" in _error(tmp_path / "nowhere")


def test_folder_that_is_not_a_pipeline(tmp_path: Path) -> None:
    (tmp_path / "weights.bin").write_bytes(b"\0")
    message = _error(tmp_path)
    assert "not a diffusers pipeline folder" in message and "model_index.json" in message


def test_file_instead_of_folder(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"\0")
    assert "is a file" in _error(path)


def test_hub_id_offline_says_how_to_download() -> None:
    message = _error("synthset-tests/no-such-model")
    assert "hub is unreachable" in message
    assert "hf download synthset-tests/no-such-model" in message


def test_missing_weights_is_a_one_line_error(tiny_sd_path: Path, tmp_path: Path) -> None:
    broken = shutil.copytree(tiny_sd_path, tmp_path / "broken")
    shutil.rmtree(broken / "unet")
    assert "cannot load" in _error(broken)


def test_safety_checker_is_not_required(tiny_sd_path: Path, tmp_path: Path) -> None:
    # The folder declares a safety checker whose weights are absent: plain from_pretrained fails.
    folder = shutil.copytree(tiny_sd_path, tmp_path / "with-checker")
    index = json.loads((folder / "model_index.json").read_text())
    index["safety_checker"] = ["stable_diffusion", "StableDiffusionSafetyChecker"]
    index["requires_safety_checker"] = True
    (folder / "model_index.json").write_text(json.dumps(index))
    from diffusers import AutoPipelineForText2Image

    with pytest.raises(OSError):
        AutoPipelineForText2Image.from_pretrained(folder)
    g = Text2ImageGenerator(spec(folder, steps=1))
    assert g.pipe.safety_checker is None
    assert len(g.generate(make_items([1]))) == 1


# ----------------------------------------------------------------------------- other families


def test_pipeline_with_other_call_arguments(tmp_path: Path) -> None:
    """An LCM pipeline has no ``negative_prompt``: it is left out instead of failing."""
    from synthset.testing import build_tiny_lcm_pipeline

    folder = build_tiny_lcm_pipeline(tmp_path / "lcm")
    g = Text2ImageGenerator(spec(folder, negative_prompt="blurry", guidance_scale=1.5))
    assert type(g.pipe).__name__ == "LatentConsistencyModelPipeline"
    items = make_items([4, 5])
    assert "negative_prompt" not in g.call_kwargs(items)
    first = g.generate(items)
    assert [img.size for img in first] == [(48, 32)] * 2
    assert [img.tobytes() for img in first] == [img.tobytes() for img in g.generate(items)]


def test_inputs_the_pipeline_refuses_are_a_one_line_error(tiny_sd_path: Path) -> None:
    gen = Text2ImageGenerator(spec(tiny_sd_path, height=36, width=36))  # not a multiple of 8
    with pytest.raises(SynthsetError, match="StableDiffusionPipeline refused the batch") as err:
        gen.generate(make_items([1]))
    assert "divisible by 8" in str(err.value) and "\n" not in str(err.value)
