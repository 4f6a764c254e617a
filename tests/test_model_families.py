"""Every generation mode on three model families built offline and loaded with from_pretrained:
SD 1.x (UNet, one CLIP encoder), SDXL (UNet, two CLIP encoders, pooled text-time embedding)
and SD3 (MMDiT transformer, flow matching, no T5). Each run goes through the recipe, plan and
store: the planned number of labeled images, each with its recorded seed, the same item gives
the same image twice, and inpainting keeps the unmasked pixels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import REAL_SIZE
from PIL import Image

from synthset.pipeline import open_run, stage_generate, stage_plan
from synthset.recipe import recipe_from_dict
from synthset.store.atomic import read_jsonl

FAMILIES = {
    "sd1": ("tiny_sd_path", "StableDiffusion"),
    "sdxl": ("tiny_sdxl_path", "StableDiffusionXL"),
    "sd3": ("tiny_sd3_path", "StableDiffusion3"),
}
PIPELINE_SUFFIX = {
    "text2image": "Pipeline",
    "img2img": "Img2ImgPipeline",
    "inpaint": "InpaintPipeline",
}


def family_recipe(out: Path, model: Path, real: Path, kind: str) -> Any:
    generator: dict[str, Any] = {
        "kind": kind,
        "model": str(model),
        "steps": 4,
        "guidance_scale": 2.0,
        "height": REAL_SIZE,
        "width": REAL_SIZE,
        "device": "cpu",
    }
    if kind != "text2image":
        generator["strength"] = 0.75
    if kind == "inpaint":
        generator |= {"mask": "folder", "mask_dir": str(real / "masks")}
    return recipe_from_dict(
        {
            "seed": 5,
            "output_dir": str(out),
            "classes": {"names": ["red", "blue"]},
            "real": {
                "source": "imagefolder",
                "path": str(real / "images"),
                "val_fraction": 0.25,
                "test_fraction": 0.25,
            },
            "prompts": {"template": "a photo of a {class} square"},
            "generate": {"images_per_class": 2, "batch_size": 3, "generator": generator},
        }
    )


def generate(r: Any) -> tuple[Path, list[dict[str, Any]]]:
    run = open_run(r)
    result = stage_generate(r, run, progress=False)
    assert result["complete"] and result["generated"] == result["planned"]
    return run.root, read_jsonl(run.images / "metadata.jsonl")


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)


@pytest.mark.parametrize("kind", ["text2image", "img2img", "inpaint"])
@pytest.mark.parametrize("family", list(FAMILIES))
def test_mode_on_family(
    family: str, kind: str, real_folder: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    fixture, prefix = FAMILIES[family]
    model = request.getfixturevalue(fixture)
    r = family_recipe(tmp_path / "a", model, real_folder, kind)
    root, meta = generate(r)
    plan = stage_plan(r, open_run(r))
    assert len(meta) == len(plan) == 4
    assert sorted(m["label"] for m in meta) == [0, 0, 1, 1]
    seeds = {it.item_id: it.seed for it in plan}
    assert all(m["seed"] == seeds[m["item_id"]] for m in meta)
    assert len(set(seeds.values())) == len(seeds)
    for m in meta:
        with Image.open(root / "images" / m["file_name"]) as img:
            assert img.size == (REAL_SIZE, REAL_SIZE) and img.mode == "RGB"

    from synthset.pipeline import make_generator

    generator = make_generator(r, open_run(r))
    assert type(generator.pipe).__name__ == prefix + PIPELINE_SUFFIX[kind]
    # the same items in a fresh run folder give byte-identical files
    root2, meta2 = generate(family_recipe(tmp_path / "b", model, real_folder, kind))
    assert [m["file_name"] for m in meta] == [m["file_name"] for m in meta2]
    for m in meta:
        assert (root / "images" / m["file_name"]).read_bytes() == (
            root2 / "images" / m["file_name"]
        ).read_bytes()
    if kind == "inpaint":
        obj = np.zeros((REAL_SIZE, REAL_SIZE), dtype=bool)
        obj[8:24, 8:24] = True
        by_id = {it.item_id: it for it in plan}
        for m in meta:
            out = pixels(root / "images" / m["file_name"])
            src = pixels(root / by_id[m["item_id"]].params["image"])
            assert np.abs(out[obj] - src[obj]).mean() < 1.0  # the object is kept
            assert np.abs(out[~obj] - src[~obj]).mean() > 5.0  # the background is repainted
