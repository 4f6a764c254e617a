"""Adapting a pretrained diffusers pipeline (adapt.method lora / textual_inversion), offline on
tiny pipelines: what is trained, that the artifacts load with diffusers' own loaders, exact
resume after a kill, and one-line errors for bad settings."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from synthset.adapt.base import AdaptData
from synthset.adapt.lora import WEIGHT_NAME, LoraAdapter
from synthset.adapt.pipeline_task import META_FILE
from synthset.adapt.textual_inversion import TextualInversionAdapter
from synthset.adapt.training import LOG_FILE, state_path
from synthset.classes import ClassInfo
from synthset.data.splits import Samples
from synthset.errors import SynthsetError
from synthset.recipe import AdaptSpec
from synthset.recipe.load import load_recipe

CLASSES = [ClassInfo(0, "red square", "red_square"), ClassInfo(1, "blue square", "blue_square")]
PROMPTS = {0: ["a photo of a red square"], 1: ["a photo of a blue square", "a blue square"]}


def _samples(real_folder: Path) -> Samples:
    return [
        (p, c)
        for c, name in enumerate(["red", "blue"])
        for p in sorted((real_folder / "images" / name).glob("*.png"))
    ]


def _data(real_folder: Path) -> AdaptData:
    train = _samples(real_folder)
    return AdaptData(train, CLASSES, val=train, prompts=PROMPTS)


def _spec(method: str, base: Path, **kw: Any) -> AdaptSpec:
    settings: dict[str, Any] = {
        "method": method,
        "base": str(base),
        "resolution": 16,
        "steps": 30,
        "batch_size": 4,
        "lr": 1e-2,
        "warmup_steps": 0,
        "checkpoint_every": 10,
        "validate_every": 30,
    }
    return AdaptSpec(**(settings | kw))


def _log(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / LOG_FILE).read_text().splitlines()]


def _images(pipe: Any, prompt: str) -> np.ndarray:
    gen = torch.Generator().manual_seed(0)
    out = pipe(
        [prompt], num_inference_steps=3, generator=[gen], output_type="np", height=16, width=16
    )
    return out.images[0]


def test_lora_lowers_the_loss_and_loads_with_load_lora_weights(
    tiny_sd_path: Path, real_folder: Path, tmp_path: Path
) -> None:
    from diffusers import StableDiffusionPipeline

    out = tmp_path / "lora"
    adapter = LoraAdapter(_spec("lora", tiny_sd_path))
    assert adapter.fit(_data(real_folder), out, seed=0, progress=False)
    log = _log(out)
    assert log[0]["step"] == 0 and log[-1]["step"] == 30
    assert log[-1]["val_loss"] < log[0]["val_loss"]  # fitted the handful of images
    meta = json.loads((out / META_FILE).read_text())
    assert meta["method"] == "lora" and meta["classes"] == ["red square", "blue square"]
    weights = load_file(out / WEIGHT_NAME)
    assert weights and all(".lora" in k for k in weights)

    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd_path, safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    before = _images(pipe, "a photo of a red square")
    pipe.load_lora_weights(out, weight_name=WEIGHT_NAME)  # diffusers' own loader
    after = _images(pipe, "a photo of a red square")
    assert np.abs(after - before).max() > 1e-3
    inputs = adapter.generator_inputs(out)
    assert inputs["model"] == str(tiny_sd_path) and inputs["lora"][0].path == str(out)


@pytest.mark.parametrize("text_encoder", [False, True])
def test_what_lora_trains_is_what_load_lora_weights_restores(
    tiny_sd_path: Path, tmp_path: Path, text_encoder: bool
) -> None:
    """UNet (and text-encoder) LoRA layers with alpha != rank, set to random values, saved and
    loaded with diffusers' loader into a fresh pipeline: the same text conditioning and the same
    UNet output as the trained modules, scale included."""
    from diffusers import StableDiffusionPipeline

    from synthset.adapt.lora import add_text_encoder_lora, add_unet_lora, save_unet_lora
    from synthset.adapt.sd_parts import PipelineParts

    spec = _spec("lora", tiny_sd_path, rank=2, alpha=8.0, lora_text_encoder=text_encoder)
    parts = PipelineParts(str(tiny_sd_path), torch.device("cpu"))
    params = add_unet_lora(parts.unet, spec)
    if text_encoder:
        params += add_text_encoder_lora(parts.text_encoders[0], spec)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in params:  # LoRA's B starts at zero: give every layer an effect
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    parts.unet.eval()
    ids = parts.token_ids(["a photo of a red square"])
    latents = torch.randn(1, 4, 8, 8, generator=gen)
    t = torch.tensor([500])
    with torch.no_grad():
        trained_text = parts.encode(ids)[0]
        trained_out = parts.predict(latents, t, trained_text, None)
    save_unet_lora(parts, tmp_path, text_encoders=text_encoder, spec=spec)
    weights = load_file(tmp_path / WEIGHT_NAME)
    text_keys = [k for k in weights if k.startswith("text_encoder.")]
    assert bool(text_keys) == text_encoder and any(k.startswith("unet.") for k in weights)

    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd_path, safety_checker=None)
    with torch.no_grad():
        base_text = pipe.text_encoder(ids[0])[0]
        pipe.load_lora_weights(tmp_path, weight_name=WEIGHT_NAME)  # diffusers' own loader
        text = pipe.text_encoder(ids[0])[0]
        out = pipe.unet(latents, t, encoder_hidden_states=trained_text).sample
    torch.testing.assert_close(text, trained_text, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out, trained_out, atol=1e-5, rtol=1e-4)
    assert ((text - base_text).abs().max() > 1e-3) == text_encoder


def test_textual_inversion_file_loads_with_load_textual_inversion(
    tiny_sd_path: Path, real_folder: Path, tmp_path: Path
) -> None:
    from diffusers import StableDiffusionPipeline

    out = tmp_path / "ti"
    adapter = TextualInversionAdapter(_spec("textual_inversion", tiny_sd_path, num_tokens=2))
    assert adapter.fit(_data(real_folder), out, seed=0, progress=False)
    inputs = adapter.generator_inputs(out)
    assert inputs["class_tokens"] == {"red square": "<red_square>", "blue square": "<blue_square>"}
    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd_path, safety_checker=None)
    table = pipe.text_encoder.get_input_embeddings().weight.detach().clone()
    init = table[pipe.tokenizer("square", add_special_tokens=False).input_ids].mean(0)
    for ti in inputs["textual_inversion"]:
        pipe.load_textual_inversion(ti.path, token=ti.token)  # diffusers' own loader
    for name, token in inputs["class_tokens"].items():
        saved = load_file(out / f"{name.replace(' ', '_')}.safetensors")[token]
        assert saved.shape == (2, 32)
        ids = pipe.tokenizer.convert_tokens_to_ids([token, f"{token}_1"])
        loaded = pipe.text_encoder.get_input_embeddings().weight[ids]
        assert torch.equal(loaded, saved)  # what was trained is what diffusers loads
        assert (saved - init).abs().max() > 0.05  # moved away from its init word
    pipe.set_progress_bar_config(disable=True)
    red, blue = _images(pipe, "a photo of <red_square>"), _images(pipe, "a photo of <blue_square>")
    assert np.abs(red - blue).max() > 1e-4


@pytest.mark.parametrize("method", ["lora", "textual_inversion"])
def test_stopped_training_resumes_to_the_same_weights(
    method: str, tiny_sd_path: Path, real_folder: Path, tmp_path: Path
) -> None:
    adapter_cls = LoraAdapter if method == "lora" else TextualInversionAdapter
    spec = _spec(method, tiny_sd_path, steps=20, validate_every=0)
    straight = tmp_path / "straight"
    assert adapter_cls(spec).fit(_data(real_folder), straight, seed=3, progress=False)
    resumed = tmp_path / "resumed"
    assert not adapter_cls(spec).fit(_data(real_folder), resumed, 3, False, stop_after=10)
    assert not resumed.exists() and state_path(resumed).exists()
    assert adapter_cls(spec).fit(_data(real_folder), resumed, seed=3, progress=False)
    assert not state_path(resumed).exists()
    files = sorted(p.name for p in straight.glob("*.safetensors"))
    assert files == sorted(p.name for p in resumed.glob("*.safetensors"))
    for name in files:
        a, b = load_file(straight / name), load_file(resumed / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _log(straight) == _log(resumed)


_KILL_SCRIPT = """
import sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from test_adapt_pipelines import _data, _spec
from synthset.adapt.lora import LoraAdapter
LoraAdapter(_spec("lora", Path({base!r}), steps=40, checkpoint_every=5, validate_every=0)).fit(
    _data(Path({real!r})), Path({out!r}), seed=5, progress=False)
"""


def test_sigkilled_lora_training_resumes_to_the_same_weights(
    tiny_sd_path: Path, real_folder: Path, tmp_path: Path
) -> None:
    spec = _spec("lora", tiny_sd_path, steps=40, checkpoint_every=5, validate_every=0)
    straight = tmp_path / "straight"
    LoraAdapter(spec).fit(_data(real_folder), straight, seed=5, progress=False)
    out = tmp_path / "killed"
    script = _KILL_SCRIPT.format(
        tests=str(Path(__file__).parent),
        base=str(tiny_sd_path),
        real=str(real_folder),
        out=str(out),
    )
    proc = subprocess.Popen([sys.executable, "-c", script], env=os.environ.copy())
    deadline = time.monotonic() + 300
    while not state_path(out).exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert state_path(out).exists() and not out.exists()  # killed mid-training
    LoraAdapter(spec).fit(_data(real_folder), out, seed=5, progress=False)
    a, b = load_file(straight / WEIGHT_NAME), load_file(out / WEIGHT_NAME)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not list(tmp_path.glob(".killed.*"))  # no temp files left behind


def test_lora_on_sdxl_trains_with_the_pooled_text_and_time_ids(
    tiny_sdxl_path: Path, real_folder: Path, tmp_path: Path
) -> None:
    from diffusers import StableDiffusionXLPipeline

    out = tmp_path / "xl"
    LoraAdapter(_spec("lora", tiny_sdxl_path, steps=4)).fit(_data(real_folder), out, 0, False)
    pipe = StableDiffusionXLPipeline.from_pretrained(tiny_sdxl_path)
    pipe.load_lora_weights(out, weight_name=WEIGHT_NAME)
    assert pipe.get_active_adapters()  # the SDXL loader found UNet LoRA layers


def test_textual_inversion_refuses_sdxl_in_one_line(
    tiny_sdxl_path: Path, real_folder: Path, tmp_path: Path
) -> None:
    adapter = TextualInversionAdapter(_spec("textual_inversion", tiny_sdxl_path, steps=2))
    with pytest.raises(SynthsetError, match="SDXL") as info:
        adapter.fit(_data(real_folder), tmp_path / "ti", 0, False)
    assert "\n" not in str(info.value)


def test_a_class_without_prompts_is_a_one_line_error(
    tiny_sd_path: Path, real_folder: Path, tmp_path: Path
) -> None:
    data = AdaptData(_samples(real_folder), CLASSES, prompts={0: PROMPTS[0]})
    with pytest.raises(SynthsetError, match="class 'blue square' has no prompts"):
        LoraAdapter(_spec("lora", tiny_sd_path)).fit(data, tmp_path / "x", 0, False)


def _recipe(tmp_path: Path, adapt: dict[str, Any], generator: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "t",
        "output_dir": str(tmp_path / "run"),
        "classes": {"names": ["a", "b"]},
        "real": {"source": "imagefolder", "path": str(tmp_path)},
        "adapt": adapt,
        "generate": {"images_per_class": 1, "generator": generator},
    }


@pytest.mark.parametrize(
    ("adapt", "generator", "fragment"),
    [
        ({"method": "dreambooth"}, {"kind": "text2image", "model": "m"}, "adapt.method"),
        (
            {"method": "textual_inversion", "num_tokens": 0},
            {"kind": "text2image", "model": "m"},
            "adapt.num_tokens: Input should be greater than or equal to 1",
        ),
        (
            {"method": "textual_inversion", "rank": 8},
            {"kind": "text2image", "model": "m"},
            "adapt.rank: method textual_inversion ignores it",
        ),
        ({"method": "lora", "image_size": 16}, {"kind": "text2image", "model": "m"}, "ignores it"),
        ({"method": "tiny_diffusion", "base": "m"}, {"kind": "tiny"}, "adapt.base"),
        ({"method": "lora"}, {"kind": "tiny"}, "the tiny generator cannot load"),
        ({"method": "lora"}, {"kind": "text2image"}, "adapt.base: method lora needs the diffusers"),
    ],
)
def test_bad_adapt_settings_are_one_line_errors(
    tmp_path: Path, adapt: dict[str, Any], generator: dict[str, Any], fragment: str
) -> None:
    import yaml

    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(_recipe(tmp_path, adapt, generator)))
    with pytest.raises(SynthsetError) as info:
        load_recipe(path)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_adapt_base_defaults_to_the_generator_model(tmp_path: Path) -> None:
    import yaml

    path = tmp_path / "r.yaml"
    recipe = _recipe(tmp_path, {"method": "lora"}, {"kind": "text2image", "model": "some/model"})
    path.write_text(yaml.safe_dump(recipe))
    loaded = load_recipe(path)
    assert loaded.adapt is not None and loaded.adapt.base == "some/model"
    assert loaded.adapt.resolved().lr == 1e-4 and loaded.adapt.resolved().batch_size == 8


@pytest.mark.parametrize("method", ["lora", "textual_inversion"])
def test_recipe_adapts_then_generates_with_the_artifact(
    method: str, tiny_sd_path: Path, real_folder: Path, tmp_path: Path
) -> None:
    """adapt → generate through the stage table: the generator loads the artifact (the images
    differ from the base pipeline's for the same seeds) and textual inversion's prompts carry
    the class tokens."""
    import yaml

    from synthset.pipeline import run_all
    from synthset.store.imagefolder import read_rows

    def recipe(out: str, adapt: dict[str, Any] | None) -> Any:
        data = {
            "name": "t",
            "seed": 0,
            "output_dir": str(tmp_path / out),
            "classes": {"names": ["red", "blue"]},
            "real": {"source": "imagefolder", "path": str(real_folder / "images")},
            "prompts": {"template": "a photo of a {class} square", "per_class": 1},
            "generate": {
                "images_per_class": 2,
                "generator": {
                    "kind": "text2image",
                    "model": str(tiny_sd_path),
                    "steps": 3,
                    "height": 16,
                    "width": 16,
                },
            },
        }
        if adapt is not None:
            data["adapt"] = adapt
        path = tmp_path / f"{out}.yaml"
        path.write_text(yaml.safe_dump(data))
        return load_recipe(path)

    adapt = {"method": method, "resolution": 16, "steps": 6, "batch_size": 2, "lr": 5e-2}
    adapted = run_all(recipe("adapted", adapt), progress=False)
    plain = run_all(recipe("plain", None), progress=False)
    assert (adapted.adapt / META_FILE).is_file()
    rows = sorted(read_rows(adapted.images), key=lambda r: r["item_id"])
    base_rows = sorted(read_rows(plain.images), key=lambda r: r["item_id"])
    assert [r["seed"] for r in rows] == [r["seed"] for r in base_rows]
    for row, base_row in zip(rows, base_rows, strict=True):
        a = np.asarray(Image.open(row["path"]), dtype=float)
        b = np.asarray(Image.open(base_row["path"]), dtype=float)
        assert np.abs(a - b).max() > 0  # the artifact changed every image
    from synthset.pipeline import stage_report

    report = stage_report(recipe("adapted", adapt), adapted)
    assert report is not None
    html = report.read_text()
    assert 'id="adapt"' in html and 'alt="adapt loss curve"' in html and f"<td>{method}" in html


def test_a_retrained_local_base_reruns_adapt(tiny_sd_path: Path, tmp_path: Path) -> None:
    """The base folder is an input of the adapt stage: rewriting its weights changes the
    stage's fingerprint (same recipe text), so a stale adapter is never reused."""
    import shutil

    import yaml

    from synthset.pipeline import fingerprint, open_run, stage

    base = tmp_path / "base"
    shutil.copytree(tiny_sd_path, base)
    path = tmp_path / "r.yaml"
    recipe = _recipe(tmp_path, {"method": "lora"}, {"kind": "text2image", "model": str(base)})
    path.write_text(yaml.safe_dump(recipe))
    loaded = load_recipe(path)
    run = open_run(loaded)
    before = fingerprint(stage("adapt"), loaded, run)
    assert fingerprint(stage("adapt"), loaded, run) == before
    weights = next(base.glob("unet/*.safetensors"))
    weights.write_bytes(weights.read_bytes())  # retrained in place: new mtime
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    assert fingerprint(stage("adapt"), loaded, run) != before
