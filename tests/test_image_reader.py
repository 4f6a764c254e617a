"""One image reader for every stage: 16-bit images scaled (not clipped) the same way in adapt and
evaluate, the format taken from the most common image (not the first), and unreadable files a
one-line error naming the file and the fix in adapt, the real-image generators and evaluate."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from synthset.adapt.tiny_diffusion import load_images
from synthset.errors import SynthsetError
from synthset.evaluate.tensors import infer_format, load_tensors
from synthset.generators.realimages import folder_mask, load_real_image
from synthset.plan import WorkItem


def adapt_pixels(path: Path, size: int) -> np.ndarray:
    """adapt's training tensor of one image, back in 0..255 (``C×H×W``)."""
    data = load_images([(path, 0)], size)
    return ((data.images[0] + 1.0) * 127.5).round().to(torch.uint8).numpy()


def evaluate_pixels(path: Path, size: int, channels: int) -> np.ndarray:
    """evaluate's decoded tensor of one image (``C×H×W`` uint8)."""
    return load_tensors([(path, 0)], size, channels, "x").images[0].numpy()


def item(path: Path) -> WorkItem:
    return WorkItem("0000-000000", 0, "a", "a", "a", 1, "img2img", {"image": str(path)})


def test_16bit_png_is_scaled_not_clipped_and_reads_the_same_in_adapt_and_evaluate(
    tmp_path: Path,
) -> None:
    arr = np.full((8, 8), 32768, np.uint16)
    arr[0] = np.linspace(0, 32768, 8).astype(np.uint16)  # a ramp to mid-grey: nothing brighter
    path = tmp_path / "grey16.png"
    Image.fromarray(arr).save(path)
    with Image.open(path) as img:
        assert img.mode.startswith("I")  # a real 16-bit PNG
    expected = np.round(arr.astype(np.float64) * 255 / 65535).astype(np.uint8)
    adapt = adapt_pixels(path, 8)
    evaluate = evaluate_pixels(path, 8, 1)
    assert adapt.shape == evaluate.shape == (1, 8, 8)
    assert int(adapt[0, 4, 4]) == 128  # mid-grey, not white (adapt used to clip it to 255)
    np.testing.assert_array_equal(adapt[0], expected)
    np.testing.assert_array_equal(evaluate[0], expected)  # evaluate stretched its max to 255
    assert infer_format([(path, 0)]) == (8, 1)


def test_open_image_gives_8bit_l_or_rgb_for_every_mode(tmp_path: Path) -> None:
    from synthset.data.images import open_image

    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[..., 0] = 204  # in the web palette, so "P" keeps it exactly
    cases: dict[str, tuple[Image.Image, str, int]] = {
        "1": (Image.fromarray(np.full((4, 4), 255, np.uint8)).convert("1"), "L", 255),
        "L": (Image.fromarray(np.full((4, 4), 77, np.uint8)), "L", 77),
        "P": (Image.fromarray(rgb).convert("P"), "RGB", 204),
        "LA": (Image.fromarray(np.full((4, 4, 2), (90, 255), np.uint8), "LA"), "L", 90),
        "RGBA": (Image.fromarray(np.dstack([rgb, np.full((4, 4), 255, np.uint8)])), "RGB", 204),
        "I;16": (Image.fromarray(np.full((4, 4), 65535, np.uint16)), "L", 255),
        "I": (Image.fromarray(np.full((4, 4), 32768, np.int32)), "L", 128),
        "F": (Image.fromarray(np.full((4, 4), 0.5, np.float32)), "L", 128),
        "CMYK": (Image.fromarray(rgb).convert("CMYK"), "RGB", 204),
    }
    for name, (img, mode, value) in cases.items():
        ext = "tiff" if name in ("I", "F", "CMYK") else "png"
        path = tmp_path / f"{name.replace(';', '')}.{ext}"
        img.save(path)
        out = open_image(path)
        assert (out.mode, out.size) == (mode, (4, 4)), name
        assert int(np.asarray(out).reshape(-1)[0]) == value, name
        assert open_image(path, "RGB").mode == "RGB" and open_image(path, "L").mode == "L"
    transparent = np.zeros((4, 4, 4), np.uint8)
    transparent[..., :3] = 255  # white under full transparency → black, in every stage
    Image.fromarray(transparent, "RGBA").save(tmp_path / "clear.png")
    assert int(np.asarray(open_image(tmp_path / "clear.png")).max()) == 0


@pytest.fixture
def one_tiny_first(tmp_path: Path) -> list[tuple[Path, int]]:
    """Eight 8×8 grey images and one 1×1 RGB image whose name sorts first."""
    rng = np.random.default_rng(0)
    tiny = tmp_path / "a_tiny.png"
    Image.fromarray(np.full((1, 1, 3), 9, np.uint8)).save(tiny)
    paths = [tiny]
    for i in range(8):
        path = tmp_path / f"b{i}.png"
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(path)
        paths.append(path)
    return [(p, i % 2) for i, p in enumerate(sorted(paths))]


def test_a_tiny_image_sorting_first_does_not_set_evaluates_format(
    one_tiny_first: list[tuple[Path, int]], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        assert infer_format(one_tiny_first) == (8, 1)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "1 of 9" in warned[0] and "8x8" in warned[0], warned
    assert "a_tiny.png" in warned[0] and "\n" not in warned[0]


def test_a_tiny_image_sorting_first_does_not_set_adapts_format(
    one_tiny_first: list[tuple[Path, int]], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        data = load_images(one_tiny_first, 8)
    assert data.native_size == (8, 8) and data.channels == 1
    assert data.images.shape == (9, 1, 8, 8)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "1 of 9" in warned[0], warned


def _zero_byte(path: Path) -> Path:
    path = path.with_suffix(".png")
    path.write_bytes(b"")
    return path


def _truncated_png(path: Path) -> Path:
    path = path.with_suffix(".png")
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(path)
    path.write_bytes(path.read_bytes()[:2000])
    return path


def _truncated_jpeg(path: Path) -> Path:
    path = path.with_suffix(".jpg")
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(path, quality=95)
    path.write_bytes(path.read_bytes()[:3000])
    return path


def _text_as_jpg(path: Path) -> Path:
    path = path.with_suffix(".jpg")
    path.write_text("this is not an image\nsecond line\n")
    return path


BROKEN: dict[str, Callable[[Path], Path]] = {
    "zero-byte": _zero_byte,
    "truncated-png": _truncated_png,
    "truncated-jpeg": _truncated_jpeg,
    "text-as-jpg": _text_as_jpg,
}
READERS: dict[str, Callable[[Path], object]] = {
    "adapt": lambda p: load_images([(p, 0)], 8),
    "generators": lambda p: load_real_image(item(p), None),
    "generators-mask": lambda p: folder_mask(
        WorkItem("0000-000000", 0, "a", "a", "a", 1, "inpaint", {"mask": str(p)}), None, (8, 8)
    ),
    "evaluate": lambda p: load_tensors([(p, 0)], 8, 1, "real train"),
}


@pytest.mark.parametrize("reader", sorted(READERS))
@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_unreadable_image_is_one_line_error_naming_file_and_fix(
    tmp_path: Path, kind: str, reader: str
) -> None:
    path = BROKEN[kind](tmp_path / f"broken-{kind}")
    with pytest.raises(SynthsetError) as exc:
        READERS[reader](path)
    msg = str(exc.value)
    assert "\n" not in msg and str(path) in msg, msg
    assert "replace or delete" in msg, msg
