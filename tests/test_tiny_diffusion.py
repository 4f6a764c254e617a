"""The embedded tiny diffusion model: training artifact, exact resume, deterministic sampling."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from synthset.adapt.tiny_diffusion import META_FILE, train_tiny_diffusion
from synthset.adapt.training import state_path
from synthset.data.splits import Samples
from synthset.generators.tiny import TinyDiffusionGenerator
from synthset.plan import WorkItem
from synthset.recipe import AdaptSpec, GeneratorSpec

NUM_CLASSES = 3


def tiny_spec(**kw: object) -> AdaptSpec:
    base = dict(
        image_size=8,
        channels=[8, 16],
        steps=6,
        batch_size=8,
        lr=1e-3,
        warmup_steps=2,
        num_train_timesteps=50,
        checkpoint_every=2,
        device="cpu",
    )
    return AdaptSpec(**(base | kw))


def write_images(root: Path, mode: str = "L", size: int = 6, n: int = 40) -> Samples:
    """``n`` small images: class k is a bright bar at a class-specific place, plus noise."""
    rng = np.random.default_rng(0)
    samples: Samples = []
    for i in range(n):
        label = i % NUM_CLASSES
        arr = rng.integers(0, 40, (size, size), dtype=np.uint8)
        arr[:, 2 * label : 2 * label + 2] = 230
        if mode == "RGB":
            arr = np.stack([arr, arr // 2, 255 - arr], axis=-1)
        path = root / str(label) / f"img{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(path)
        samples.append((path, label))
    return samples


def items(seeds: list[int], classes: list[int]) -> list[WorkItem]:
    return [
        WorkItem(f"{c:04d}-{i:06d}", c, str(c), str(c), str(c), s, "tiny")
        for i, (s, c) in enumerate(zip(seeds, classes, strict=True))
    ]


def unet_weights(model_dir: Path) -> dict[str, torch.Tensor]:
    from diffusers import UNet2DModel

    return UNet2DModel.from_pretrained(model_dir / "unet").state_dict()


@pytest.fixture(scope="module")
def gray_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    train = write_images(root / "data")
    return train_tiny_diffusion(
        tiny_spec(), train, NUM_CLASSES, root / "model", seed=0, progress=False
    )


def test_training_writes_loadable_checkpoint(gray_model: Path) -> None:
    from diffusers import DDPMScheduler, UNet2DModel

    unet = UNet2DModel.from_pretrained(gray_model / "unet")
    assert unet.config.num_class_embeds == NUM_CLASSES + 1
    assert unet.config.sample_size == 8 and list(unet.config.block_out_channels) == [8, 16]
    assert (gray_model / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert DDPMScheduler.from_pretrained(gray_model / "scheduler").config.num_train_timesteps == 50
    meta = json.loads((gray_model / META_FILE).read_text())
    assert meta == {
        "num_classes": 3,
        "null_class": 3,
        "channels": 1,
        "native_size": [6, 6],
        "image_size": 8,
    }
    assert not state_path(gray_model).exists()
    assert not [p for p in gray_model.parent.iterdir() if p.name.startswith(".")]


def test_resume_gives_same_weights_as_uninterrupted(tmp_path: Path) -> None:
    train = write_images(tmp_path / "data")
    straight = train_tiny_diffusion(
        tiny_spec(), train, NUM_CLASSES, tmp_path / "a", 1, progress=False
    )
    out = tmp_path / "b"
    train_tiny_diffusion(tiny_spec(), train, NUM_CLASSES, out, 1, progress=False, stop_after=3)
    assert not out.exists()
    state = torch.load(state_path(out), weights_only=True)
    assert state["step"] == 3
    train_tiny_diffusion(tiny_spec(), train, NUM_CLASSES, out, 1, progress=False)
    assert not state_path(out).exists()
    a, b = unet_weights(straight), unet_weights(out)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_more_steps_change_weights_and_seed_matters(tmp_path: Path) -> None:
    """The resume test above is only meaningful if training actually moves the weights."""
    train = write_images(tmp_path / "data")
    base = unet_weights(
        train_tiny_diffusion(
            tiny_spec(steps=3), train, NUM_CLASSES, tmp_path / "a", 1, progress=False
        )
    )
    longer = unet_weights(
        train_tiny_diffusion(
            tiny_spec(steps=6), train, NUM_CLASSES, tmp_path / "b", 1, progress=False
        )
    )
    other_seed = unet_weights(
        train_tiny_diffusion(
            tiny_spec(steps=3), train, NUM_CLASSES, tmp_path / "c", 2, progress=False
        )
    )
    assert any(not torch.equal(base[k], longer[k]) for k in base)
    assert any(not torch.equal(base[k], other_seed[k]) for k in base)


def test_leftovers_of_a_killed_run_are_removed(tmp_path: Path) -> None:
    train = write_images(tmp_path / "data")
    (tmp_path / ".m.state.pt.abc.tmp").write_bytes(b"torn")
    (tmp_path / ".m.xyz.tmp").mkdir()
    model = train_tiny_diffusion(
        tiny_spec(steps=1), train, NUM_CLASSES, tmp_path / "m", 0, progress=False
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", model.name]


def test_stale_state_of_another_training_is_ignored(tmp_path: Path) -> None:
    train = write_images(tmp_path / "data")
    out = tmp_path / "m"
    train_tiny_diffusion(
        tiny_spec(lr=5e-3), train, NUM_CLASSES, out, 1, progress=False, stop_after=2
    )
    train_tiny_diffusion(tiny_spec(), train, NUM_CLASSES, out, 1, progress=False)
    fresh = train_tiny_diffusion(tiny_spec(), train, NUM_CLASSES, tmp_path / "f", 1, progress=False)
    a, b = unet_weights(out), unet_weights(fresh)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_generator_count_mode_size_and_determinism(gray_model: Path) -> None:
    spec = GeneratorSpec(model=str(gray_model), steps=4, scheduler="ddim", device="cpu")
    gen = TinyDiffusionGenerator(spec)
    assert gen.name == "tiny:model"
    batch = items([11, 12, 13, 11], [0, 1, 2, 0])
    first = gen.generate(batch)
    assert len(first) == 4
    assert all(im.mode == "L" and im.size == (6, 6) for im in first)
    again = gen.generate(batch)
    assert [im.tobytes() for im in first] == [im.tobytes() for im in again]
    assert first[0].tobytes() == first[3].tobytes()  # same seed and class in one batch
    assert first[0].tobytes() != first[1].tobytes()
    other = gen.generate(items([99, 12, 13, 11], [0, 1, 2, 0]))
    assert other[0].tobytes() != first[0].tobytes()


def test_generator_stochastic_scheduler_and_sizes(gray_model: Path) -> None:
    spec = GeneratorSpec(
        model=str(gray_model),
        steps=3,
        scheduler="ddpm",
        guidance_scale=3.0,
        height=10,
        width=12,
        device="cpu",
    )
    gen = TinyDiffusionGenerator(spec)
    batch = items([5, 6], [1, 1])
    a, b = gen.generate(batch), gen.generate(batch)
    assert all(im.size == (12, 10) for im in a)
    assert [im.tobytes() for im in a] == [im.tobytes() for im in b]
    assert a[0].tobytes() != a[1].tobytes()
    assert gen.generate([]) == []


def test_rgb_training_and_generation(tmp_path: Path) -> None:
    train = write_images(tmp_path / "data", mode="RGB", size=8)
    model = train_tiny_diffusion(
        tiny_spec(steps=2), train, NUM_CLASSES, tmp_path / "rgb", 0, progress=False
    )
    assert json.loads((model / META_FILE).read_text())["channels"] == 3
    spec = GeneratorSpec(model=str(model), steps=2, device="cpu")
    images = TinyDiffusionGenerator(spec).generate(items([1, 2], [0, 2]))
    assert [(im.mode, im.size) for im in images] == [("RGB", (8, 8))] * 2
