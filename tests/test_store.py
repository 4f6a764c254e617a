"""The store: safe class folders, atomic files, the manifest, and ImageFolder + HF metadata."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from synthset.classes import ClassInfo
from synthset.plan import WorkItem, image_relpath
from synthset.store.atomic import atomic_write_bytes, atomic_write_text, read_jsonl
from synthset.store.imagefolder import encode_image, write_image, write_metadata
from synthset.store.manifest import Manifest
from synthset.store.names import folder_names, safe_folder_name


@pytest.mark.parametrize(
    "name",
    [
        "../x",
        "a/b",
        "..",
        ".",
        "",
        "   ",
        "/etc/passwd",
        "..\\..\\win",
        "a\x00b",
        "~root",
        "-rf",
        "x" * 500,
        "café/../..",
        "日本/語",
        "\u202etxt.exe",
    ],
)
def test_no_class_name_leaves_the_folder(tmp_path: Path, name: str) -> None:
    folder = safe_folder_name(name)
    assert folder and folder not in (".", "..")
    assert "/" not in folder and "\\" not in folder and "\x00" not in folder
    assert not folder.startswith(".")
    assert len(folder) <= 80
    target = (tmp_path / folder / "img.png").resolve()
    assert target.is_relative_to(tmp_path.resolve())
    target.parent.mkdir(parents=True, exist_ok=True)  # really creatable
    target.write_bytes(b"x")


def test_unicode_kept_and_duplicates_made_unique() -> None:
    assert safe_folder_name("Göttingen café") == "Göttingen café"
    assert safe_folder_name("日本") == "日本"
    names = folder_names(["a/b", "a_b", "A_B", "", "", "cat"])
    assert len(set(n.lower() for n in names)) == len(names)
    # "a_b, a_b_2, A_B_3, class, class_2, cat" would not sort in class order: ids lead
    assert names == ["0_a_b", "1_a_b_2", "2_A_B_3", "3_class", "4_class_2", "5_cat"]
    assert folder_names(["a/b", "a_b", "cat"]) == ["a_b", "a_b_2", "cat"]  # sorted already


def test_folders_sort_in_class_order_so_imagefolder_agrees(tmp_path: Path) -> None:
    """torchvision's ImageFolder labels by sorted folder name; synthset by class order."""
    from torchvision.datasets import ImageFolder

    names = ["cat", "dog", "ship", "frog"]  # not alphabetical
    for label, folder in enumerate(folder_names(names)):
        (tmp_path / folder).mkdir()
        Image.new("L", (4, 4), label).save(tmp_path / folder / "x.png")
    loaded = ImageFolder(str(tmp_path))
    assert [loaded[i][1] for i in range(len(loaded))] == [0, 1, 2, 3]
    assert [loaded.loader(p).getpixel((0, 0))[0] for p, _ in loaded.samples] == [0, 1, 2, 3]


def test_atomic_write_leaves_no_temp_files(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "f.bin"
    atomic_write_bytes(path, b"one")
    atomic_write_bytes(path, b"two")
    assert path.read_bytes() == b"two"
    assert [p.name for p in path.parent.iterdir()] == ["f.bin"]


def test_atomic_files_get_the_usual_permissions(tmp_path: Path) -> None:
    import os

    mask = os.umask(0o022)
    os.umask(mask)
    atomic_write_text(tmp_path / "report.html", "<html></html>")
    assert (tmp_path / "report.html").stat().st_mode & 0o777 == 0o666 & ~mask


def test_manifest_survives_a_torn_last_line(tmp_path: Path) -> None:
    manifest = Manifest(tmp_path / "manifest.jsonl")
    manifest.append({"item_id": "a", "seed": 1})
    manifest.append({"item_id": "b", "seed": 2})
    with open(manifest.path, "ab") as fh:  # a kill in the middle of an append
        fh.write(b'{"item_id": "c", "se')
    assert set(manifest.entries()) == {"a", "b"}
    manifest.repair()
    manifest.append({"item_id": "c", "seed": 3})
    assert set(manifest.entries()) == {"a", "b", "c"}
    assert len(read_jsonl(manifest.path)) == 3


def _store(tmp_path: Path, classes: list[ClassInfo], per_class: int = 3) -> Path:
    images = tmp_path / "images"
    entries = []
    for cls in classes:
        for k in range(per_class):
            item = WorkItem(
                f"{cls.id:04d}-{k:06d}", cls.id, cls.name, cls.folder, f"a {cls.name}", 7 + k
            )
            rel = image_relpath(item, "png")
            img = Image.new("RGB", (8, 8), (40 * cls.id, 10 * k, 0))
            write_image(images, rel, encode_image(img, "png"))
            entries.append({**item.to_dict(), "file_name": rel})
    write_metadata(images, entries)
    return images


CLASSES = [
    ClassInfo(0, "cat", "cat"),
    ClassInfo(1, "dog", "dog"),
    ClassInfo(2, "red fox", "red fox"),
]


def test_torchvision_imagefolder_reads_the_store(tmp_path: Path) -> None:
    from torchvision.datasets import ImageFolder

    images = _store(tmp_path, CLASSES)
    ds = ImageFolder(str(images))
    assert len(ds) == 9
    assert ds.classes == ["cat", "dog", "red fox"]


def test_hf_imagefolder_reads_labels_prompts_and_seeds(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    images = _store(tmp_path, CLASSES)
    ds = datasets.load_dataset("imagefolder", data_dir=str(images), split="train")
    assert len(ds) == 9
    rows = sorted(zip(ds["item_id"], ds["label"], ds["prompt"], ds["seed"], strict=True))
    assert rows[0] == ("0000-000000", 0, "a cat", 7)
    assert {r[1] for r in rows} == {0, 1, 2}
    assert all(isinstance(r[1], int) for r in rows)
    assert ds[0]["image"].size == (8, 8)


def test_png_encoding_is_deterministic() -> None:
    img = Image.new("L", (8, 8), 99)
    assert encode_image(img, "png") == encode_image(img.copy(), "png")
    assert encode_image(img, "png") != encode_image(Image.new("L", (8, 8), 98), "png")
    assert encode_image(img, "jpeg")[:2] == b"\xff\xd8"


def test_stale_temp_files_of_unfinished_items_are_removed(tmp_path: Path) -> None:
    from synthset.store.imagefolder import remove_stale_temp_files

    folder = tmp_path / "cat"
    folder.mkdir()
    mine = folder / ".0000-000001.png.k3j_x9.tmp"
    other_shard = folder / ".0000-000002.png.q8w2er.tmp"
    finished = folder / "0000-000003.png"
    for p in (mine, other_shard, finished):
        p.write_bytes(b"x")
    removed = remove_stale_temp_files(tmp_path, ["cat/0000-000001.png", "dog/0000-000009.png"])
    assert removed == 1
    assert not mine.exists() and other_shard.exists() and finished.exists()
