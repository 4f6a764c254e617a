"""Generation modes on real images (img2img, inpaint) and ensembles, with tiny offline SD
pipelines: planned labeled items, recorded seeds, determinism, strength and mask behaviour."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from synthset.errors import SynthsetError
from synthset.pipeline import generation_config, open_run, stage_generate, stage_plan
from synthset.plan import pick_member
from synthset.recipe import recipe_from_dict
from synthset.store.atomic import read_jsonl

SIZE = 32


def recipe(
    out: Path,
    real: Path,
    generator: dict[str, Any] | None = None,
    prompts: dict[str, Any] | None = None,
    **gen: Any,
) -> Any:
    """The test recipe on ``real``'s images; ``prompts`` updates its prompts section and ``gen``
    its generate section."""
    data: dict[str, Any] = {
        "seed": 3,
        "output_dir": str(out),
        "classes": {"names": ["red", "blue"]},
        "real": {
            "source": "imagefolder",
            "path": str(real / "images"),
            "val_fraction": 0.25,
            "test_fraction": 0.25,
        },
        "prompts": {"template": "a photo of a {class}", **(prompts or {})},
        "generate": {"images_per_class": 4, "batch_size": 4, **gen},
    }
    if generator is not None:
        data["generate"]["generator"] = generator
    return recipe_from_dict(data)


def sd(model: Path, **kw: Any) -> dict[str, Any]:
    return {
        "model": str(model),
        "steps": 4,
        "guidance_scale": 1.0,
        "height": SIZE,
        "width": SIZE,
        "device": "cpu",
        **kw,
    }


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)


def square_and_background_change(
    root: Path, meta: list[dict[str, Any]], plan: dict[str, Any]
) -> list[tuple[float, float]]:
    """For every generated image, the mean absolute pixel change from its real source image
    inside the square of ``real_folder`` ([8:24, 8:24]) and outside it (the background)."""
    square = np.zeros((SIZE, SIZE), dtype=bool)
    square[8:24, 8:24] = True
    changes = []
    for m in meta:
        out = pixels(root / "images" / m["file_name"])
        src = pixels(root / plan[m["item_id"]].params["image"])  # an absolute path replaces root
        changes.append(
            (np.abs(out[square] - src[square]).mean(), np.abs(out[~square] - src[~square]).mean())
        )
    return changes


def run_modes(r: Any) -> tuple[Path, list[dict[str, Any]]]:
    run = open_run(r)
    result = stage_generate(r, run, progress=False)
    assert result["complete"]
    return run.root, read_jsonl(run.images / "metadata.jsonl")


def test_img2img_plan_labels_seeds_and_determinism(
    tiny_sd_path: Path, real_folder: Path, tmp_path: Path
) -> None:
    r = recipe(tmp_path / "a", real_folder, sd(tiny_sd_path, kind="img2img", strength=[0.3, 0.9]))
    root, meta = run_modes(r)
    plan = stage_plan(r, open_run(r))
    # 2 train images per class (8 images, half train) x 2 variants, capped at 4 per class
    assert len(meta) == len(plan) == 8
    assert {m["label"] for m in meta} == {0, 1}
    for it in plan:
        src = Path(it.params["image"])
        src = src if src.is_absolute() else root / src
        assert src.parent.name == ["red", "blue"][it.class_id]  # label = real image's class
        assert it.params["strength"] == [0.3, 0.9][it.params["variant"]]
    by_id = {m["item_id"]: m for m in meta}
    assert all(by_id[it.item_id]["seed"] == it.seed for it in plan)
    # the same items again (fresh folder) give byte-identical images
    root2, _ = run_modes(
        recipe(tmp_path / "b", real_folder, sd(tiny_sd_path, kind="img2img", strength=[0.3, 0.9]))
    )
    for m in meta:
        assert (root / "images" / m["file_name"]).read_bytes() == (
            root2 / "images" / m["file_name"]
        ).read_bytes()
    # a re-run does nothing; a changed strength re-plans and regenerates every item
    assert stage_generate(r, open_run(r), progress=False)["generated"] == 0
    r_changed = recipe(
        tmp_path / "a", real_folder, sd(tiny_sd_path, kind="img2img", strength=[0.6, 0.9])
    )
    assert generation_config(r_changed) != generation_config(r)
    again = stage_generate(r_changed, open_run(r_changed), progress=False)
    assert again["generated"] == 8 and again["complete"]
    changed = [
        (root / "images" / m["file_name"]).read_bytes()
        != (root2 / "images" / m["file_name"]).read_bytes()
        for m in meta
    ]
    assert any(changed)
    assert {it.params["strength"] for it in stage_plan(r_changed, open_run(r_changed))} == {
        0.6,
        0.9,
    }


@pytest.fixture(scope="module")
def sharp_vae_sd(tiny_sd_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny SD pipeline with a (near) zero-variance VAE posterior: its random VAE otherwise
    samples latents dominated by noise, hiding what ``strength`` does."""
    import torch
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd_path)
    conv = pipe.vae.quant_conv
    half = conv.out_channels // 2
    with torch.no_grad():
        conv.weight[half:] = 0
        conv.bias[half:] = -30.0  # log-variance: std ~ 3e-7
    out = tmp_path_factory.mktemp("tiny-sd-sharp")
    pipe.save_pretrained(out)
    return out


def test_small_strength_stays_close_to_the_input(sharp_vae_sd: Path, real_folder: Path) -> None:
    """Distance to the VAE reconstruction of the input (the random tiny VAE cannot reproduce
    the input itself): small strength stays much closer than full strength."""
    import torch

    from synthset.generators.img2img import Img2ImgGenerator
    from synthset.plan import WorkItem
    from synthset.recipe import GeneratorSpec

    spec = GeneratorSpec(**sd(sharp_vae_sd, kind="img2img", strength=[0.1, 1.0], steps=10))
    gen = Img2ImgGenerator(spec)
    path = real_folder / "images" / "red" / "0.png"
    items = [
        WorkItem(
            f"0000-{k:06d}",
            0,
            "red",
            "red",
            "a photo of a red",
            k,
            "img2img",
            {"image": str(path), "strength": s},
        )
        for k, s in enumerate([0.1, 1.0, 0.1, 1.0])
    ]
    out = gen.generate(items)
    proc = gen.pipe.image_processor
    with torch.no_grad():
        latents = gen.pipe.vae.encode(proc.preprocess(Image.open(path).convert("RGB")))
        recon = proc.postprocess(gen.pipe.vae.decode(latents.latent_dist.mean).sample)[0]
    ref = np.asarray(recon, dtype=np.float32)
    dist = {0.1: [], 1.0: []}
    for it, img in zip(items, out, strict=True):
        dist[it.params["strength"]].append(np.abs(np.asarray(img, np.float32) - ref).mean())
    low, high = np.mean(dist[0.1]), np.mean(dist[1.0])
    assert low < 0.75 * high, (low, high)
    assert [np.asarray(i).tobytes() for i in gen.generate(items)] == [
        np.asarray(i).tobytes() for i in out
    ]


def test_tiny_model_img2img_small_strength_keeps_the_digit(tmp_path: Path) -> None:
    """The pixel-space tiny model: strength 0.1 stays close to the real image, 1.0 does not."""
    from synthset.adapt.tiny_diffusion import train_tiny_diffusion
    from synthset.generators.tiny import TinyDiffusionGenerator
    from synthset.plan import WorkItem
    from synthset.recipe import AdaptSpec, GeneratorSpec

    rng = np.random.default_rng(0)
    train = []
    for i in range(12):
        arr = rng.integers(0, 40, (8, 8), dtype=np.uint8)
        arr[:, 2 * (i % 2) : 2 * (i % 2) + 2] = 230
        path = tmp_path / "data" / str(i % 2) / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(path)
        train.append((path, i % 2))
    adapt = AdaptSpec(
        image_size=8,
        channels=[8, 16],
        steps=4,
        batch_size=8,
        warmup_steps=1,
        num_train_timesteps=50,
        checkpoint_every=4,
        device="cpu",
    )
    model = train_tiny_diffusion(adapt, train, 2, tmp_path / "model", seed=0, progress=False)
    gen = TinyDiffusionGenerator(
        GeneratorSpec(
            model=str(model),
            kind="tiny",
            steps=20,
            guidance_scale=1.0,
            scheduler="ddim",
            device="cpu",
            strength=[0.1, 1.0],
        ),
    )
    items = [
        WorkItem(
            f"0000-{k:06d}",
            lbl,
            str(lbl),
            str(lbl),
            str(lbl),
            k,
            "tiny",
            {"image": str(p), "strength": s},
        )
        for k, ((p, lbl), s) in enumerate(zip(train[:8], [0.1, 1.0] * 4, strict=True))
    ]
    out = gen.generate(items)
    dist: dict[float, list[float]] = {0.1: [], 1.0: []}
    for it, img in zip(items, out, strict=True):
        src = np.asarray(Image.open(it.params["image"]), np.float32)
        dist[it.params["strength"]].append(np.abs(np.asarray(img, np.float32) - src).mean())
    assert np.mean(dist[0.1]) < 0.5 * np.mean(dist[1.0]), dist
    again = gen.generate(items)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(out, again, strict=True))


def test_inpaint_keeps_unmasked_pixels(
    tiny_sd_path: Path, real_folder: Path, tmp_path: Path
) -> None:
    gen = sd(tiny_sd_path, kind="inpaint", mask="folder", mask_dir=str(real_folder / "masks"))
    r = recipe(tmp_path / "i", real_folder, gen, images_per_class=2)
    root, meta = run_modes(r)
    plan = {it.item_id: it for it in stage_plan(r, open_run(r))}
    for square, background in square_and_background_change(root, meta, plan):
        assert square < 1.0, square  # the object is pasted back from the real image
        assert background > 5 * max(square, 0.5), background  # the background was regenerated


def test_box_and_saliency_masks_find_the_square(real_folder: Path) -> None:
    from synthset.generators.realimages import box_mask, saliency_mask

    img = Image.open(real_folder / "images" / "red" / "0.png")
    sal = np.asarray(saliency_mask(img)) > 0
    box = np.asarray(box_mask(img.size, (0.25, 0.25, 0.75, 0.75))) > 0
    assert sal.sum() == box.sum() == 16 * 16
    assert (sal == box).all()


def test_inverted_box_keeps_background_and_prompts_vary_the_scene(
    tiny_sd_path: Path, real_folder: Path, tmp_path: Path
) -> None:
    gen = sd(
        tiny_sd_path,
        kind="inpaint",
        mask="box",
        mask_box=[0.25, 0.25, 0.75, 0.75],
        invert_mask=True,
        variants_per_image=2,
    )
    scenes = {
        "template": "a {class} square in {background}",
        "combine": "cross",
        "per_class": 2,
        "slots": {"background": ["a beach", "the snow"]},
    }
    r = recipe(tmp_path / "b", real_folder, gen, prompts=scenes, images_per_class=4)
    root, meta = run_modes(r)
    plan = {it.item_id: it for it in stage_plan(r, open_run(r))}
    for square, background in square_and_background_change(root, meta, plan):
        assert background < 1.0  # background kept
        assert square > 5.0  # object repainted
    # both variants of one real image get different scenes
    by_image: dict[str, set[str]] = {}
    for it in plan.values():
        by_image.setdefault(it.params["image"], set()).add(it.prompt)
    assert all(len(p) == 2 for p in by_image.values()), by_image


def test_missing_mask_file_fails_at_plan_time(
    tiny_sd_path: Path, real_folder: Path, tmp_path: Path
) -> None:
    masks = tmp_path / "masks"
    (masks / "red").mkdir(parents=True)  # no masks for 'blue'
    for p in (real_folder / "masks" / "red").glob("*.png"):
        (masks / "red" / p.name).write_bytes(p.read_bytes())
    gen = sd(tiny_sd_path, kind="inpaint", mask="folder", mask_dir=str(masks))
    r = recipe(tmp_path / "n", real_folder, gen)
    with pytest.raises(SynthsetError) as exc:
        stage_plan(r, open_run(r))
    assert "\n" not in str(exc.value) and "blue" in str(exc.value) and "mask_dir" in str(exc.value)


def test_wrong_size_mask_is_a_one_line_error(
    tiny_sd_path: Path, real_folder: Path, tmp_path: Path
) -> None:
    masks = tmp_path / "masks"
    for p in (real_folder / "masks").rglob("*.png"):
        (masks / p.parent.name).mkdir(parents=True, exist_ok=True)
        Image.open(p).resize((16, 16)).save(masks / p.parent.name / p.name)
    gen = sd(tiny_sd_path, kind="inpaint", mask="folder", mask_dir=str(masks))
    r = recipe(tmp_path / "w", real_folder, gen, images_per_class=2)
    with pytest.raises(SynthsetError) as exc:
        stage_generate(r, open_run(r), progress=False)
    msg = str(exc.value)
    assert "\n" not in msg and "16x16" in msg and "mask_dir" in msg


def test_missing_real_folder_and_missing_real_section(tiny_sd_path: Path, tmp_path: Path) -> None:
    r = recipe(tmp_path / "m", tmp_path / "nowhere", sd(tiny_sd_path, kind="img2img", strength=0.5))
    with pytest.raises(SynthsetError) as exc:
        stage_generate(r, open_run(r), progress=False)
    assert "\n" not in str(exc.value) and "nowhere" in str(exc.value)
    with pytest.raises(SynthsetError) as exc2:
        recipe_from_dict(
            {
                "classes": {"names": ["a"]},
                "generate": {"generator": sd(tiny_sd_path, kind="img2img")},
            }
        )
    assert "real" in str(exc2.value) and "\n" not in str(exc2.value)


@pytest.mark.parametrize(
    ("gens", "needle"),
    [
        ([{"name": "a", "weight": 0, "kind": "text2image", "model": "x"}], "weight"),
        ([{"name": "a", "kind": "bogus", "model": "x"}], "kind"),
        (
            [
                {"name": "a", "kind": "text2image", "model": "x"},
                {"name": "a", "kind": "text2image", "model": "y"},
            ],
            "unique",
        ),
    ],
)
def test_bad_ensembles_are_one_line_errors(gens: list[dict[str, Any]], needle: str) -> None:
    with pytest.raises(SynthsetError) as exc:
        recipe_from_dict({"classes": {"names": ["a"]}, "generate": {"generators": gens}})
    assert needle in str(exc.value) and "\n" not in str(exc.value)


def test_generator_and_generators_are_exclusive() -> None:
    with pytest.raises(SynthsetError, match="either"):
        recipe_from_dict(
            {
                "classes": {"names": ["a"]},
                "generate": {
                    "generator": {"kind": "text2image", "model": "x"},
                    "generators": [{"name": "a", "kind": "text2image", "model": "x"}],
                },
            }
        )


def test_pick_member_follows_weights() -> None:
    picks = [pick_member(0, f"0000-{k:06d}", [3.0, 1.0]) for k in range(4000)]
    share = picks.count(0) / len(picks)
    assert 0.72 < share < 0.78
    assert picks == [pick_member(0, f"0000-{k:06d}", [3.0, 1.0]) for k in range(4000)]


@pytest.fixture(scope="module")
def tiny_sd_other(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from synthset.testing import build_tiny_sd_pipeline

    return build_tiny_sd_pipeline(tmp_path_factory.mktemp("tiny-sd-1"), seed=1)


def test_ensemble_records_each_items_generator(
    tiny_sd_path: Path, tiny_sd_other: Path, tmp_path: Path
) -> None:
    members = [
        {"name": "first", "weight": 2, "kind": "text2image", **sd(tiny_sd_path)},
        {"name": "second", "weight": 1, "kind": "text2image", **sd(tiny_sd_other)},
    ]
    r = recipe_from_dict(
        {
            "seed": 1,
            "output_dir": str(tmp_path / "e"),
            "classes": {"names": ["cat", "dog"]},
            "generate": {"images_per_class": 6, "batch_size": 4, "generators": members},
        }
    )
    root, meta = run_modes(r)
    plan = stage_plan(r, open_run(r))
    assert len(meta) == 12
    expected = {it.item_id: it.params["generator"] for it in plan}
    assert {m["item_id"]: m["generator"] for m in meta} == expected
    assert set(expected.values()) == {"first", "second"}
    # each member's image equals what that member alone makes for the same item
    solo = recipe_from_dict(
        {
            "seed": 1,
            "output_dir": str(tmp_path / "solo"),
            "classes": {"names": ["cat", "dog"]},
            "generate": {
                "images_per_class": 6,
                "batch_size": 1,
                "generator": {"kind": "text2image", **sd(tiny_sd_other)},
            },
        }
    )
    solo_root, _ = run_modes(solo)

    def px(base: Path, m: dict[str, Any]) -> np.ndarray:
        return pixels(base / "images" / m["file_name"])

    for m in meta:
        same = np.abs(px(root, m) - px(solo_root, m)).max() < 2
        assert same == (m["generator"] == "second"), m
    # a changed member setting regenerates that member's items only
    before = {m["item_id"]: (root / "images" / m["file_name"]).read_bytes() for m in meta}
    members[1]["steps"] = 5
    r2 = recipe_from_dict(
        {
            **r.model_dump(mode="json"),
            "generate": {
                **r.generate.model_dump(mode="json", exclude={"generator"}),
                "generators": members,
            },
        }
    )
    assert generation_config(r2) != generation_config(r)
    result = stage_generate(r2, open_run(r2), progress=False)
    assert result["complete"] and result["generated"] == sum(
        m["generator"] == "second" for m in meta
    )
    for m in meta:
        now = (root / "images" / m["file_name"]).read_bytes()
        assert (now == before[m["item_id"]]) == (m["generator"] == "first"), m


def test_ensemble_of_real_image_modes(
    tiny_sd_path: Path, real_folder: Path, tmp_path: Path
) -> None:
    members = [
        {"name": "vary", "kind": "img2img", **sd(tiny_sd_path, strength=0.5, save_size=16)},
        {
            "name": "scene",
            "kind": "inpaint",
            **sd(tiny_sd_path, mask="box", mask_box=[0.25, 0.25, 0.75, 0.75]),
        },
    ]
    r = recipe(tmp_path / "er", real_folder, generators=members)
    root, meta = run_modes(r)
    plan = {it.item_id: it for it in stage_plan(r, open_run(r))}
    assert len(meta) == len(plan) == 4
    assert {m["generator"] for m in meta} == {"vary", "scene"}
    for m in meta:
        it = plan[m["item_id"]]
        assert m["generator"] == it.params["generator"]
        assert it.mode == {"vary": "img2img", "scene": "inpaint"}[m["generator"]]
        assert it.params["strength"] == {"vary": 0.5, "scene": 1.0}[m["generator"]]
        size = Image.open(root / "images" / m["file_name"]).size
        assert size == {"vary": (16, 16), "scene": (SIZE, SIZE)}[m["generator"]]
    from synthset.classes import read_classes
    from synthset.report.html import write_report

    run = open_run(r)
    html = write_report(run, r, read_classes(run.classes)).read_text()
    assert "vary img2img" in html and "scene inpaint" in html


def test_bad_mask_midway_keeps_finished_images(
    tiny_sd_path: Path, real_folder: Path, tmp_path: Path
) -> None:
    """A wrong-size mask of a later chunk stops the run; the earlier chunk's images stay
    recorded, and once the mask is fixed only the rest is generated."""
    masks = tmp_path / "masks"
    for p in (real_folder / "masks").rglob("*.png"):
        (masks / p.parent.name).mkdir(parents=True, exist_ok=True)
        img = Image.open(p)
        (img.resize((16, 16)) if p.parent.name == "blue" else img).save(
            masks / p.parent.name / p.name
        )
    gen = sd(tiny_sd_path, kind="inpaint", mask="folder", mask_dir=str(masks))
    r = recipe(tmp_path / "mid", real_folder, gen, images_per_class=2, batch_size=2)
    with pytest.raises(SynthsetError, match="16x16"):
        stage_generate(r, open_run(r), progress=False)
    rows = read_jsonl(tmp_path / "mid" / "manifest.jsonl")
    assert sorted(row["class_name"] for row in rows) == ["red", "red"]
    kept = {
        row["file_name"]: (tmp_path / "mid" / "images" / row["file_name"]).read_bytes()
        for row in rows
    }
    for p in (real_folder / "masks" / "blue").glob("*.png"):
        (masks / "blue" / p.name).write_bytes(p.read_bytes())
    result = stage_generate(r, open_run(r), progress=False)
    assert result["generated"] == 2 and result["complete"]
    for name, data in kept.items():
        assert (tmp_path / "mid" / "images" / name).read_bytes() == data
