"""Loading extras and speed switches on a real (tiny, offline) diffusers pipeline: LoRA,
textual inversion, prompt embeddings, a tiny autoencoder (TAESD), channels-last, attention
slicing, torch.compile and CPU offload, each from the generator's recipe part."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from synthset.errors import SynthsetError
from synthset.generators.text2image import Text2ImageGenerator
from synthset.plan import WorkItem
from synthset.recipe import GeneratorSpec, recipe_from_dict
from synthset.testing import build_tiny_taesd, write_tiny_lora, write_tiny_textual_inversion


def spec(model: Path, **kw: Any) -> GeneratorSpec:
    base: dict[str, Any] = dict(
        kind="text2image",
        model=str(model),
        steps=3,
        guidance_scale=2.0,
        height=32,
        width=32,
        device="cpu",
    )
    return GeneratorSpec(**{**base, **kw})


def items(prompt: str = "a photo of a cat", n: int = 2, class_name: str = "cat") -> list[WorkItem]:
    return [WorkItem(f"0000-{i:06d}", 0, class_name, class_name, prompt, 100 + i) for i in range(n)]


def arrays(gen: Text2ImageGenerator, batch: list[WorkItem]) -> list[np.ndarray]:
    return [np.asarray(img, dtype=np.float32) for img in gen.generate(batch)]


def mean_diff(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return float(np.mean([np.abs(x - y).mean() for x, y in zip(a, b, strict=True)]))


@pytest.fixture(scope="module")
def base_images(tiny_sd_path: Path) -> list[np.ndarray]:
    return arrays(Text2ImageGenerator(spec(tiny_sd_path)), items())


# ----------------------------------------------------------------------------- LoRA


def test_lora_changes_images_and_scale_zero_does_not(
    tiny_sd_path: Path, base_images: list[np.ndarray], tmp_path: Path
) -> None:
    lora_file = write_tiny_lora(tiny_sd_path, tmp_path / "lora")
    on = Text2ImageGenerator(spec(tiny_sd_path, lora=[{"path": str(lora_file)}]))
    with_lora = arrays(on, items())
    assert mean_diff(with_lora, base_images) > 1.0
    # the LoRA is fused into the weights: no adapter layers remain at sampling time
    assert not any("lora" in name for name, _ in on.pipe.unet.named_parameters())
    # a folder + weight_name loads the same weights; scale 0 leaves the model as it was
    folder = spec(
        tiny_sd_path,
        lora=[{"path": str(lora_file.parent), "weight_name": lora_file.name, "scale": 0.0}],
    )
    assert mean_diff(arrays(Text2ImageGenerator(folder), items()), base_images) < 0.5
    half = spec(tiny_sd_path, lora=[{"path": str(lora_file), "scale": 0.5}])
    half_images = arrays(Text2ImageGenerator(half), items())
    assert 0.5 < mean_diff(half_images, base_images) < mean_diff(with_lora, base_images) + 1.0
    assert mean_diff(half_images, with_lora) > 0.5


def test_bad_lora_path_is_a_one_line_error(tiny_sd_path: Path, tmp_path: Path) -> None:
    with pytest.raises(SynthsetError, match=r"generate\.generator\.lora\[0\]\.path") as err:
        Text2ImageGenerator(spec(tiny_sd_path, lora=[{"path": str(tmp_path / "nope.safetensors")}]))
    assert "\n" not in str(err.value)


# ----------------------------------------------------------------------------- textual inversion


def test_textual_inversion_token_conditions_the_images(tiny_sd_path: Path, tmp_path: Path) -> None:
    token = "<glow-style>"
    prompt = f"a photo of a cat in {token}"
    first = write_tiny_textual_inversion(tmp_path / "a.safetensors", token, seed=0)
    other = write_tiny_textual_inversion(tmp_path / "b.safetensors", token, seed=1)
    gen_a = Text2ImageGenerator(spec(tiny_sd_path, textual_inversion=[{"path": str(first)}]))
    assert token in gen_a.pipe.tokenizer.get_vocab()
    token_id = gen_a.pipe.tokenizer.convert_tokens_to_ids(token)
    table = gen_a.pipe.text_encoder.get_input_embeddings().weight
    from safetensors.torch import load_file

    assert torch.allclose(table[token_id], load_file(str(first))[token][0])
    images_a = arrays(gen_a, items(prompt))
    named = spec(tiny_sd_path, textual_inversion=[{"path": str(other), "token": token}])
    gen_b = Text2ImageGenerator(named)
    # the embedding, not the token's text, conditions the prompt and so the image
    with torch.no_grad():
        cond_a, _ = gen_a.pipe.encode_prompt(prompt, torch.device("cpu"), 1, False)
        cond_b, _ = gen_b.pipe.encode_prompt(prompt, torch.device("cpu"), 1, False)
    assert (cond_a - cond_b).abs().mean() > 0.05
    images_b = arrays(gen_b, items(prompt))
    assert mean_diff(images_a, images_b) > 0.05
    assert mean_diff(images_a, arrays(gen_a, items(prompt))) == 0.0


def test_bad_textual_inversion_is_a_one_line_error(tiny_sd_path: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a tensor file")
    with pytest.raises(SynthsetError, match=r"textual_inversion\[0\]\.path") as err:
        Text2ImageGenerator(spec(tiny_sd_path, textual_inversion=[{"path": str(bad)}]))
    assert "\n" not in str(err.value)


# ----------------------------------------------------------------------------- prompt embeddings


def test_prompt_embeds_file_replaces_the_text_encoder(
    tiny_sd_path: Path, base_images: list[np.ndarray], tmp_path: Path
) -> None:
    from safetensors.torch import save_file

    plain = Text2ImageGenerator(spec(tiny_sd_path))
    with torch.no_grad():
        cat, _ = plain.pipe.encode_prompt("a photo of a cat", torch.device("cpu"), 1, False)
        dog, _ = plain.pipe.encode_prompt("a photo of a dog", torch.device("cpu"), 1, False)
    path = tmp_path / "embeds.safetensors"
    save_file({"cat": cat[0].contiguous(), "dog": dog[0].contiguous()}, str(path))
    gen = Text2ImageGenerator(spec(tiny_sd_path, prompt_embeds=str(path)))
    # the class's tensor conditions the image; the item's prompt text is not encoded
    assert mean_diff(arrays(gen, items("ignored text")), base_images) < 1e-6
    dogs = arrays(gen, items("ignored text", class_name="dog"))
    assert mean_diff(dogs, base_images) > 0.5
    with pytest.raises(SynthsetError, match=r"prompt_embeds: embeds\.safetensors has no emb"):
        gen.generate(items(class_name="frog"))


def test_prompt_embeds_bad_file_is_a_one_line_error(tiny_sd_path: Path, tmp_path: Path) -> None:
    with pytest.raises(SynthsetError, match="no such file"):
        Text2ImageGenerator(spec(tiny_sd_path, prompt_embeds=str(tmp_path / "missing.st")))
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 16)
    with pytest.raises(SynthsetError, match="is not a safetensors file"):
        Text2ImageGenerator(spec(tiny_sd_path, prompt_embeds=str(bad)))


# ----------------------------------------------------------------------------- speed switches


def test_tiny_vae_decodes_instead_of_the_pipeline_vae(
    tiny_sd_path: Path, base_images: list[np.ndarray], tmp_path: Path
) -> None:
    from diffusers import AutoencoderTiny

    taesd = build_tiny_taesd(tmp_path / "taesd")
    gen = Text2ImageGenerator(spec(tiny_sd_path, tiny_vae=str(taesd)))
    assert isinstance(gen.pipe.vae, AutoencoderTiny)
    images = arrays(gen, items())
    assert all(img.shape == (32, 32, 3) for img in images)
    assert mean_diff(images, base_images) > 1.0
    with pytest.raises(SynthsetError, match=r"generate\.generator\.tiny_vae: cannot load"):
        Text2ImageGenerator(spec(tiny_sd_path, tiny_vae=str(tmp_path / "no-such-taesd")))


def test_channels_last_and_attention_slicing_keep_the_images(
    tiny_sd_path: Path, base_images: list[np.ndarray]
) -> None:
    gen = Text2ImageGenerator(spec(tiny_sd_path, channels_last=True, attention_slicing=True))
    conv = gen.pipe.unet.conv_in.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert mean_diff(arrays(gen, items()), base_images) < 0.5


def test_compile_wraps_the_unet(tiny_sd_path: Path) -> None:
    gen = Text2ImageGenerator(spec(tiny_sd_path, compile=True))
    assert type(gen.pipe.unet).__name__ == "OptimizedModule"
    assert type(gen.pipe.unet._orig_mod).__name__ == "UNet2DConditionModel"


@pytest.mark.slow
def test_compiled_unet_gives_the_same_images(
    tiny_sd_path: Path, base_images: list[np.ndarray]
) -> None:
    gen = Text2ImageGenerator(spec(tiny_sd_path, compile=True))
    assert mean_diff(arrays(gen, items()), base_images) < 0.5


def test_cpu_offload_without_a_gpu_is_a_one_line_error(tiny_sd_path: Path) -> None:
    with pytest.raises(SynthsetError, match=r"cpu_offload: offloading needs a CUDA GPU"):
        Text2ImageGenerator(spec(tiny_sd_path, cpu_offload="model"))


def test_tiny_model_refuses_diffusers_only_options() -> None:
    with pytest.raises(SynthsetError, match=r"generate\.generator.*lora needs a diffusers"):
        recipe_from_dict(
            {
                "classes": {"names": ["a", "b"]},
                "generate": {"generator": {"kind": "tiny", "lora": [{"path": "x"}]}},
            }
        )
