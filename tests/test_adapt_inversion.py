"""Diffusion inversion and the class encoder (adapt.method diffusion_inversion / class_encoder),
offline on tiny pipelines: what they learn, sharded inversion groups that assemble the same
artifact, the inversion sampler's knobs (noise, interpolation) and its manifest provenance, and
the class encoder's contexts fed as prompt embeddings with its own unconditional input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file
from test_adapt_pipelines import _data, _log, _spec

from synthset.adapt.base import AdaptData
from synthset.adapt.class_encoder import EMBEDS_FILE, ENCODER_FILE, ClassEncoderAdapter
from synthset.adapt.diffusion_inversion import (
    DiffusionInversionAdapter,
    empty_context,
    groups_dir,
)
from synthset.adapt.sd_parts import PipelineParts
from synthset.classes import ClassInfo
from synthset.errors import SynthsetError
from synthset.recipe import AdaptSpec
from synthset.recipe.load import load_recipe
from synthset.store.conditioning import EMBEDDINGS_FILE, INDEX_FILE, UNCONDITIONAL

DIGITS = [ClassInfo(0, "zero", "zero"), ClassInfo(1, "one", "one")]


def _digits(digits_images: list[tuple[Path, int]], per_class: int = 5) -> AdaptData:
    """``per_class`` train images of the digits 0 and 1 (the rest of them as val)."""
    train = [s for c in (0, 1) for s in [x for x in digits_images if x[1] == c][:per_class]]
    val = [s for c in (0, 1) for s in [x for x in digits_images if x[1] == c][30:40]]
    return AdaptData(train, DIGITS, val=val)


def _digits_spec(method: str, base: Path, **kw: Any) -> AdaptSpec:
    settings: dict[str, Any] = {
        "method": method,
        "base": str(base),
        "steps": 60,
        "batch_size": 10,
        "lr": 5e-2,
        "warmup_steps": 0,
        "checkpoint_every": 20,
    }
    return AdaptSpec(**(settings | kw))


def test_inversion_learns_one_context_per_image_and_lowers_its_loss(
    digits_base: Path, digits_images: list, tmp_path: Path
) -> None:
    out = tmp_path / "inv"
    data = _digits(digits_images)
    spec = _digits_spec("diffusion_inversion", digits_base, num_tokens=3, group_size=10, lr=0.2)
    assert DiffusionInversionAdapter(spec).fit(data, out, seed=0, progress=False)
    table = load_file(out / EMBEDDINGS_FILE)["embeddings"]
    width = json.loads((digits_base / "unet" / "config.json").read_text())["cross_attention_dim"]
    assert table.shape == (10, 3, width)
    assert not torch.allclose(table[0], table[1])  # each image has its own context
    rows = json.loads((out / INDEX_FILE).read_text())
    assert [r["label"] for r in rows] == [0] * 5 + [1] * 5
    assert rows[0]["class_name"] == "zero" and Path(rows[0]["image"]).is_file()
    # the learned contexts denoise their own images better than the start (the empty prompt's
    # states), on the same noise at a mid noise level, where the conditioning matters most
    parts = PipelineParts(str(digits_base), torch.device("cpu"))
    latents = parts.latents(parts.pixels(data.train, "test"))
    start, _ = empty_context(parts, 3)

    def loss(contexts: torch.Tensor) -> float:
        gen = torch.Generator().manual_seed(1)
        t = torch.full((len(latents),), 600)
        total = 0.0
        with torch.no_grad():
            for _ in range(4):
                noise = torch.randn(latents.shape, generator=gen)
                noisy = parts.noise_scheduler.add_noise(latents, noise, t)
                pred = parts.predict(noisy, t, contexts, None)
                target = parts.target(latents, noise, t)
                total += float(torch.nn.functional.mse_loss(pred, target))
        return total

    assert loss(table) < 0.99 * loss(start.repeat(10, 1, 1))


def test_sharded_inversion_assembles_the_same_artifact(
    tiny_sd_path: Path, real_folder: Path, tmp_path: Path
) -> None:
    """Groups of 3 images (3 groups) split over 2 shards: the first shard alone leaves the
    artifact unassembled, the second completes it, and the result equals one unsharded run."""
    data = _data(real_folder)
    spec = _spec("diffusion_inversion", tiny_sd_path, group_size=3, steps=8)
    whole = tmp_path / "whole"
    assert DiffusionInversionAdapter(spec).fit(data, whole, 0, False)
    sharded = tmp_path / "sharded"
    assert not DiffusionInversionAdapter(spec).fit(data, sharded, 0, False, shard=(0, 2))
    assert not sharded.exists()
    assert sorted(p.name for p in groups_dir(sharded).glob("group-?????")) == [
        "group-00000",
        "group-00002",
    ]
    assert DiffusionInversionAdapter(spec).fit(data, sharded, 0, False, shard=(1, 2))
    a = load_file(whole / EMBEDDINGS_FILE)["embeddings"]
    b = load_file(sharded / EMBEDDINGS_FILE)["embeddings"]
    assert torch.equal(a, b)


def _digits_folder(digits_images: list[tuple[Path, int]], root: Path) -> Path:
    """An ImageFolder (zero/, one/) of ten digits each."""
    import shutil

    for path, label in _digits(digits_images, per_class=10).train:
        dest = root / DIGITS[label].name / path.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dest)
    return root


def _inversion_recipe(
    tmp_path: Path, digits_images: list, base: Path, name: str, **generator: Any
) -> Any:
    data = {
        "name": name,
        "seed": 0,
        "output_dir": str(tmp_path / name),
        "classes": {"names": ["zero", "one"]},
        "real": {
            "source": "imagefolder",
            "path": str(_digits_folder(digits_images, tmp_path / "digits")),
            "val_fraction": 0.2,
            "test_fraction": 0.2,
        },
        "adapt": {
            "method": "diffusion_inversion",
            "num_tokens": 3,
            "steps": 60,
            "batch_size": 10,
            "lr": 5e-2,
            "warmup_steps": 0,
        },
        "generate": {
            "images_per_class": 18,
            "batch_size": 12,
            "generator": {
                "kind": "inversion",
                "model": str(base),
                "steps": 10,
                "scheduler": "ddim",
                "guidance_scale": 2.0,
                **generator,
            },
        },
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_recipe(path)


def _pixels(rows: list[dict[str, Any]]) -> np.ndarray:
    return np.stack([np.asarray(Image.open(r["path"]), dtype=float) for r in rows])


def test_inversion_samples_record_their_source_and_noise_raises_diversity(
    digits_base: Path, digits_images: list, tmp_path: Path
) -> None:
    """adapt → plan → generate: every image names its source and partner image (same class)
    and λ; with noise 0 and λ 0 an image depends only on its source's context and its seed;
    emb_noise > 0 spreads the samples of one source further apart."""
    from synthset.pipeline import run_all
    from synthset.store.imagefolder import read_rows

    plain = run_all(_inversion_recipe(tmp_path, digits_images, digits_base, "plain"), False)
    rows = sorted(read_rows(plain.images), key=lambda r: r["item_id"])
    index = {r["image"]: r for r in json.loads((plain.adapt / INDEX_FILE).read_text())}
    meta = [
        json.loads(line)
        for line in (plain.images / "metadata.jsonl").read_text().split("\n")
        if line
    ]
    assert len(meta) == 36
    for m in meta:
        source = index[str(plain.root / m["source_image"])]
        partner = index[str(plain.root / m["partner_image"])]
        assert source["label"] == partner["label"] == m["label"]  # the source's class
        assert source is not partner and m["lambda"] == 0.0
    # a class's items take its inverted images round robin
    n = sum(r["label"] == 0 for r in index.values())
    assert 2 <= n < 10
    assert meta[0]["source_image"] == meta[n]["source_image"] != meta[1]["source_image"]

    noisy = run_all(
        _inversion_recipe(tmp_path, digits_images, digits_base, "noisy", emb_noise=3.0), False
    )
    noisy_rows = sorted(read_rows(noisy.images), key=lambda r: r["item_id"])
    # same seeds, same sources: only the conditioning noise differs
    assert [r["seed"] for r in noisy_rows] == [r["seed"] for r in rows]
    assert _within_source_spread(noisy_rows) > 1.05 * _within_source_spread(rows)


def _within_source_spread(rows: list[dict[str, Any]]) -> float:
    """Mean over source images of the pixel std of the samples drawn from that source."""
    by_source: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_source.setdefault(row["source_image"], []).append(row)
    groups = [g for g in by_source.values() if len(g) > 1]
    assert groups
    return float(np.mean([_pixels(g).std(axis=0).mean() for g in groups]))


def test_interpolation_moves_the_conditioning_towards_the_partner(
    digits_base: Path, digits_images: list, tmp_path: Path
) -> None:
    from synthset.generators.inversion import InversionGenerator
    from synthset.pipeline import stage_adapt, stage_plan
    from synthset.plan import load_plan
    from synthset.stages import adapted_spec
    from synthset.store.run_folder import RunFolder

    recipe = _inversion_recipe(
        tmp_path, digits_images, digits_base, "lerp", interpolation_strength=0.5
    )
    run = RunFolder(recipe.output_dir)
    stage_adapt(recipe, run, progress=False)
    stage_plan(recipe, run)
    items = load_plan(run.plan)
    assert {it.params["lambda"] for it in items} == {0.5}
    assert recipe.generate is not None
    gen = InversionGenerator(adapted_spec(recipe.generate.generator, recipe, run.adapt))
    item = items[0]
    e, _ = gen.conditioning(item)
    src, partner = gen.table[item.params["source_row"]], gen.table[item.params["partner_row"]]
    assert torch.allclose(e, (src + partner) / 2, atol=1e-6)


def test_class_encoder_contexts_drive_generation_with_their_own_unconditional_input(
    digits_base: Path, digits_images: list, tmp_path: Path
) -> None:
    """Stage 1 (encoder) then stage 2 (LoRA on the UNet, encoder fixed): the val loss falls in
    stage 1, the contexts file holds one [tokens, width] per class plus the null class, and
    the generator conditions on them (different classes → different images)."""
    from diffusers import StableDiffusionPipeline

    from synthset.generators.embeddings import PromptEmbeddings

    out = tmp_path / "ce"
    spec = _digits_spec(
        "class_encoder",
        digits_base,
        num_tokens=2,
        lr=1e-2,
        validate_every=60,
        finetune="lora",
        finetune_steps=6,
        rank=4,
    )
    adapter = ClassEncoderAdapter(spec)
    assert adapter.fit(_digits(digits_images), out, seed=0, progress=False)
    stage1 = out.parent / "ce.stage1"
    log = _log(stage1)
    assert log[-1]["val_loss"] < log[0]["val_loss"]
    assert (stage1 / ENCODER_FILE).is_file() and (
        out / "pytorch_lora_weights.safetensors"
    ).is_file()
    embeds = load_file(out / EMBEDS_FILE)
    assert set(embeds) == {"zero", "one", UNCONDITIONAL}
    assert embeds["zero"].shape[0] == 2
    inputs = adapter.generator_inputs(out)
    assert inputs["prompt_embeds"] == out / EMBEDS_FILE and inputs["lora"]

    pipe = StableDiffusionPipeline.from_pretrained(digits_base, safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    table = PromptEmbeddings(out / EMBEDS_FILE)
    assert table.has_unconditional

    class Item:
        def __init__(self, name: str) -> None:
            self.class_name = name

    images = []
    for name in ("zero", "one"):
        kwargs = table.kwargs([Item(name)], torch.device("cpu"), torch.float32)  # type: ignore[list-item]
        gen = torch.Generator().manual_seed(0)
        out_img = pipe(
            **kwargs, num_inference_steps=3, guidance_scale=2.0, generator=[gen], output_type="np"
        )
        images.append(out_img.images[0])
    assert np.abs(images[0] - images[1]).max() > 1e-3


def test_class_encoder_resumes_stage_two_without_retraining_stage_one(
    tiny_sd_path: Path, real_folder: Path, tmp_path: Path
) -> None:
    out = tmp_path / "ce"
    spec = _spec("class_encoder", tiny_sd_path, finetune="full", finetune_steps=8, steps=6)
    adapter = ClassEncoderAdapter(spec)
    # stage 1 (6 steps) finishes, stage 2 (8 steps) stops after 6, as a kill would leave it
    assert not adapter.fit(_data(real_folder), out, 0, False, stop_after=6)
    stage1 = out.parent / "ce.stage1"
    stamp = (stage1 / ENCODER_FILE).stat().st_mtime_ns
    assert adapter.fit(_data(real_folder), out, 0, False)
    assert (stage1 / ENCODER_FILE).stat().st_mtime_ns == stamp  # stage 1 was reused
    assert (out / "pipeline" / "unet" / "config.json").is_file()
    assert adapter.generator_inputs(out)["model"] == str(out / "pipeline")


@pytest.mark.parametrize(
    ("adapt", "generator", "fragment"),
    [
        (
            {"method": "diffusion_inversion", "num_tokens": 0},
            {"kind": "inversion", "model": "m"},
            "adapt.num_tokens",
        ),
        (
            {"method": "lora", "group_size": 10},
            {"kind": "text2image", "model": "m"},
            "adapt.group_size: method lora ignores it",
        ),
        (
            {"method": "class_encoder", "finetune": "half"},
            {"kind": "text2image", "model": "m"},
            "adapt.finetune",
        ),
        (
            {"method": "diffusion_inversion"},
            {"kind": "text2image", "model": "m", "emb_noise": 0.1},
            "generate.generator.emb_noise: text2image ignores it",
        ),
        (
            {"method": "diffusion_inversion"},
            {"kind": "inversion", "model": "m", "interpolation_strength": 2},
            "generate.generator.interpolation_strength",
        ),
    ],
)
def test_bad_inversion_and_encoder_settings_are_one_line_errors(
    tmp_path: Path, adapt: dict[str, Any], generator: dict[str, Any], fragment: str
) -> None:
    data = {
        "name": "t",
        "output_dir": str(tmp_path / "run"),
        "classes": {"names": ["a", "b"]},
        "real": {"source": "imagefolder", "path": str(tmp_path)},
        "adapt": adapt,
        "generate": {"images_per_class": 1, "generator": generator},
    }
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(SynthsetError) as info:
        load_recipe(path)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_inversion_without_its_artifact_is_a_one_line_error(tmp_path: Path) -> None:
    from synthset.store.conditioning import read_inversion_index

    with pytest.raises(SynthsetError, match="run 'synthset adapt' with method diffusion_inver"):
        read_inversion_index(tmp_path)


@pytest.mark.slow  # CI time: run with pytest -m slow
def test_adapt_shards_from_the_cli_finish_the_stage_once_every_group_is_done(
    tiny_sd_path: Path, real_folder: Path, tmp_path: Path
) -> None:
    """synthset data, then one `synthset adapt --shard i/2` per shard (as SLURM tasks would run
    them): the first leaves the stage incomplete, the second assembles it and marks it done, so
    `synthset adapt` has nothing left to do; a method without groups refuses --shard."""
    from test_cli import synthset

    data = {
        "name": "shards",
        "seed": 0,
        "output_dir": str(tmp_path / "run"),
        "classes": {"names": ["red", "blue"]},
        "real": {"source": "imagefolder", "path": str(real_folder / "images")},
        "adapt": {
            "method": "diffusion_inversion",
            "group_size": 2,
            "steps": 2,
            "resolution": 16,
            "batch_size": 2,
        },
        "generate": {
            "images_per_class": 2,
            "generator": {"kind": "inversion", "model": str(tiny_sd_path), "steps": 2},
        },
    }
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(data))
    early = synthset("adapt", str(recipe), "--shard", "0/2", "-q")
    assert early.returncode != 0 and "run 'synthset data' once" in early.stderr
    assert synthset("data", str(recipe)).returncode == 0
    first = synthset("adapt", str(recipe), "--shard", "0/2", "-q")
    assert first.returncode == 0, first.stderr
    assert "artifact is incomplete" in first.stderr
    second = synthset("adapt", str(recipe), "--shard", "1/2", "-q")
    assert "artifact is complete" in second.stderr
    assert (tmp_path / "run" / "adapt" / INDEX_FILE).is_file()
    again = synthset("adapt", str(recipe), "-q")
    assert "nothing to do" in again.stderr

    data["adapt"] = {"method": "lora", "resolution": 16}
    data["generate"]["generator"]["kind"] = "text2image"
    recipe.write_text(yaml.safe_dump(data))
    refused = synthset("adapt", str(recipe), "--shard", "0/2", "-q")
    assert refused.returncode != 0 and "only adapt.method diffusion_inversion" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("fuse", [False, True])
def test_a_trained_lora_reloads_to_exactly_the_trained_unet(
    digits_base: Path, digits_images: list, tmp_path: Path, fuse: bool
) -> None:
    """The LoRA file written after training, loaded by diffusers' load_lora_weights (and fused,
    as the generators do), gives the UNet outputs of the trained model itself. The digits base
    has an attention-pooled text embedding whose LoRA diffusers restores wrongly: the method
    must not train modules that do not come back."""
    from diffusers import StableDiffusionPipeline

    from synthset.adapt.lora import WEIGHT_NAME, LoraTask
    from synthset.adapt.sd_parts import PipelineParts

    data = _digits(digits_images)
    data = AdaptData(data.train, data.classes, prompts={0: ["a zero"], 1: ["a one"]})
    spec = _digits_spec("lora", digits_base, rank=4).resolved()
    parts = PipelineParts(str(digits_base), torch.device("cpu"))
    task = LoraTask(spec, parts, data)
    torch.manual_seed(0)
    with torch.no_grad():  # as if trained: every LoRA layer changes the output
        for p in task.parameters():
            p.normal_(0, 0.1)
    ids = parts.token_ids(["a zero"])
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([500])
    with torch.no_grad():
        context, _ = parts.encode(ids)
        trained = parts.unet(x, t, encoder_hidden_states=context).sample
    out = tmp_path / "lora"
    out.mkdir()
    task.save(out)

    pipe = StableDiffusionPipeline.from_pretrained(digits_base, safety_checker=None)
    with torch.no_grad():
        plain = pipe.unet(x, t, encoder_hidden_states=context).sample
    pipe.load_lora_weights(out, weight_name=WEIGHT_NAME)
    if fuse:
        pipe.fuse_lora()
        pipe.unload_lora_weights()
    with torch.no_grad():
        loaded = pipe.unet(x, t, encoder_hidden_states=context).sample
    assert (trained - plain).abs().max() > 1e-2  # the LoRA matters
    assert torch.allclose(loaded, trained, atol=1e-5)


def test_tune_searches_the_inversion_sampler_on_the_inverted_images(
    digits_base: Path, digits_images: list, tmp_path: Path
) -> None:
    """A study over emb_noise: every trial samples the artifact the adapt stage inverted (its
    items name inverted source images) and is scored on the real val split."""
    from synthset.pipeline import open_run, stage_tune
    from synthset.plan import load_plan

    recipe = _inversion_recipe(tmp_path, digits_images, digits_base, "tuned")
    data = recipe.model_dump(mode="json")
    data["evaluate"] = {"classifier": "small_cnn", "batch_size": 16, "device": "cpu"}
    data["tune"] = {
        "space": {"generate.generator.emb_noise": {"choices": [0.0, 2.0]}},
        "n_trials": 2,
        "images_per_class": 4,
        "proxy_epochs": 1,
    }
    path = tmp_path / "tuned.yaml"
    path.write_text(yaml.safe_dump(data))
    tuned = load_recipe(path)
    best = stage_tune(tuned, open_run(tuned), progress=False)
    assert best is not None and "generate.generator.emb_noise" in best["params"]
    run = open_run(tuned)
    index = {r["image"] for r in json.loads((run.adapt / INDEX_FILE).read_text())}
    plans = sorted(run.tune.rglob("plan.jsonl"))
    assert plans
    for plan in plans:
        assert all(str(run.root / it.params["source_image"]) in index for it in load_plan(plan))
