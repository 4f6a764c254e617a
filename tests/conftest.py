"""Shared fixtures: tiny offline models, built once per session. No downloads: HF_HUB_OFFLINE=1."""

from __future__ import annotations

import os
import sys
from collections import Counter

os.environ["HF_HUB_OFFLINE"] = "1"  # before anything imports huggingface_hub
# Bytecode caching on, for this process, the xdist workers and every process a test starts: with
# PYTHONDONTWRITEBYTECODE set (as on the CI machines) and an install without .pyc files (pip
# --no-compile), each CLI run would compile torch, diffusers and scikit-learn from source again
# (~20 s of CPU per process on 2 cores); now the first import writes __pycache__ and the rest
# read it.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
sys.dont_write_bytecode = False
# One torch (OpenMP / MKL) thread per test process, the xdist workers and every process a test
# starts: two workers on two cores each spinning two threads (OpenMP threads busy-wait) slowed
# the in-process demo training threefold (1,023 s against 361 s) whenever it ran beside another
# file; set before torch is imported.
os.environ["OMP_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

#: Side of the real test images (``real_folder``), in pixels.
REAL_SIZE = 32


@pytest.fixture(scope="session")
def tiny_sd_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Stable Diffusion 1.x pipeline folder (saved with save_pretrained)."""
    from synthset.testing import build_tiny_sd_pipeline

    return build_tiny_sd_pipeline(tmp_path_factory.mktemp("tiny-sd"))


@pytest.fixture(scope="session")
def tiny_sdxl_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random SDXL pipeline folder (two text encoders)."""
    from synthset.testing import build_tiny_sdxl_pipeline

    return build_tiny_sdxl_pipeline(tmp_path_factory.mktemp("tiny-sdxl"))


@pytest.fixture(scope="session")
def tiny_sd3_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Stable Diffusion 3 pipeline folder (MMDiT transformer, no T5)."""
    from synthset.testing import build_tiny_sd3_pipeline

    return build_tiny_sd3_pipeline(tmp_path_factory.mktemp("tiny-sd3"))


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny transformers CLIP that pairs bright images with 'white', dark ones with 'black'."""
    from synthset.testing import build_trained_tiny_clip

    return build_trained_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


@pytest.fixture(scope="session")
def real_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ImageFolder of 2 classes x 4 images: a coloured square on a grey background, plus a
    parallel mask folder (white = the square)."""
    import numpy as np
    from PIL import Image

    root = tmp_path_factory.mktemp("real")
    rng = np.random.default_rng(0)
    for c, name in enumerate(["red", "blue"]):
        for i in range(4):
            arr = np.full((REAL_SIZE, REAL_SIZE, 3), 128, dtype=np.uint8)
            arr += rng.integers(0, 8, arr.shape, dtype=np.uint8)
            arr[8:24, 8:24] = [220, 30, 30] if c == 0 else [30, 30, 220]
            (root / "images" / name).mkdir(parents=True, exist_ok=True)
            (root / "masks" / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(root / "images" / name / f"{i}.png")
            mask = np.zeros((REAL_SIZE, REAL_SIZE), dtype=np.uint8)
            mask[8:24, 8:24] = 255
            Image.fromarray(mask).save(root / "masks" / name / f"{i}.png")
    return root


@pytest.fixture(scope="session")
def digits_images(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Path, int]]:
    """40 of scikit-learn's 8×8 digits per class, as PNG files with their labels."""
    from PIL import Image

    from synthset.data.real import digits_arrays

    root = tmp_path_factory.mktemp("digits")
    images, labels = digits_arrays()
    samples: list[tuple[Path, int]] = []
    for c in range(10):
        for i in [int(k) for k in (labels == c).nonzero()[0][:40]]:
            path = root / str(c) / f"{i:04d}.png"
            path.parent.mkdir(exist_ok=True)
            Image.fromarray(images[i]).convert("RGB").save(path)
            samples.append((path, c))
    return samples


@pytest.fixture(scope="session")
def digits_base(tmp_path_factory: pytest.TempPathFactory, digits_images: list) -> Path:
    """A tiny text-conditional SD pipeline briefly pretrained on ``digits_images`` with generic
    (label-free) captions: a base that responds to its conditioning, for the adapt tests."""
    from synthset.adapt.tiny_base import BaseSettings, pretrain_tiny_base

    settings = BaseSettings("generic", None, vae_steps=150, steps=400, batch_size=32)
    names = [str(c) for c in range(10)]
    out = tmp_path_factory.mktemp("digits-base") / "base"
    return pretrain_tiny_base(digits_images, names, settings, out, progress=False)


@pytest.fixture(scope="session")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A toy digits run finished up to generate (tests copy it with ``helpers.copy_run``)."""
    from helpers import toy_digits

    from synthset.pipeline import run_stage
    from synthset.store.run_folder import RunFolder

    out = tmp_path_factory.mktemp("toy-digits") / "run"
    run_stage("generate", toy_digits(out), RunFolder(out), progress=False)
    return out


#: Test files handed out first, longest first (measured per-file seconds on 2 cores, one torch
#: thread per worker), in this order (``--no-loadscope-reorder`` in pyproject's addopts): the
#: reduced demo starts at once beside the other worker instead of running alone at the end, and
#: the short files fill both workers' last minutes. The rest follow, most tests first.
LONGEST_FIRST = (
    "test_demo.py",
    "test_adapt_inversion.py",
    "test_resume.py",
    "test_scale_out.py",
    "test_curate.py",
    "test_adapt_pipelines.py",
    "test_tune.py",
    "test_fidelity.py",
    "test_stage_fingerprints.py",
    "test_modes.py",
    "test_edge_inputs.py",
    "test_pretrain_tiny.py",
    "test_model_families.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files in :data:`LONGEST_FIRST` order, then by number of tests (most first); the order of
    tests within a file is kept (a stable sort)."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    tests_in = Counter(item.path.name for item in items)
    items.sort(key=lambda item: (rank.get(item.path.name, len(rank)), -tests_in[item.path.name]))
