"""Class sources: known lists (exact counts, order, aliases), files, ImageFolders, pairing."""

from __future__ import annotations

from pathlib import Path

import pytest

from synthset.classes import (
    KNOWN_CLASS_LISTS,
    canonical_dataset,
    class_names_from,
    default_synonyms,
    known_class_list,
    read_classes,
    resolve_classes,
    write_classes,
)
from synthset.errors import SynthsetError
from synthset.recipe import ClassesSpec

EXPECTED_COUNTS = {
    "digits": 10,
    "cifar10": 10,
    "cifar100": 100,
    "stl10": 10,
    "imagenette": 10,
    "oxford_pets": 37,
    "flowers102": 102,
    "fgvc_aircraft": 100,
    "stanford_cars": 196,
    "dtd": 47,
    "eurosat": 10,
    "pacs": 7,
    "imagenet": 1000,
    "coco": 80,
    "voc": 20,
}


def test_every_shipped_list_is_expected() -> None:
    assert sorted(KNOWN_CLASS_LISTS) == sorted(EXPECTED_COUNTS)


@pytest.mark.parametrize(("name", "count"), sorted(EXPECTED_COUNTS.items()))
def test_known_list_count_and_no_duplicates(name: str, count: int) -> None:
    names = known_class_list(name)
    assert len(names) == count
    assert len(set(names)) == count
    lower = [n.lower() for n in names]
    clashes = sorted({n for n in lower if lower.count(n) > 1})
    # ImageNet's "Cardigan" (the corgi) and "cardigan" (the sweater) differ only in case
    assert clashes == (["cardigan"] if name == "imagenet" else [])
    assert all(n == n.strip() and n for n in names)


@pytest.mark.parametrize(
    ("name", "first", "last"),
    [
        ("cifar10", "airplane", "truck"),
        ("cifar100", "apple", "worm"),
        ("stl10", "airplane", "truck"),
        ("imagenette", "tench", "parachute"),
        ("oxford_pets", "Abyssinian", "Yorkshire Terrier"),
        ("flowers102", "pink primrose", "blackberry lily"),
        ("fgvc_aircraft", "707-320", "Yak-42"),
        ("stanford_cars", "AM General Hummer SUV 2000", "smart fortwo Convertible 2012"),
        ("dtd", "banded", "zigzagged"),
        ("eurosat", "annual crop", "sea or lake"),
        ("pacs", "dog", "person"),
        ("imagenet", "tench", "toilet tissue"),
    ],
)
def test_known_list_first_and_last(name: str, first: str, last: str) -> None:
    names = known_class_list(name)
    assert (names[0], names[-1]) == (first, last)


def test_spot_checks_inside_lists() -> None:
    assert known_class_list("imagenette") == [
        "tench", "English springer", "cassette player", "chain saw", "church",
        "French horn", "garbage truck", "gas pump", "golf ball", "parachute",
    ]  # fmt: skip
    assert known_class_list("cifar100")[1] == "aquarium fish"
    assert known_class_list("imagenet")[207] == "golden retriever"
    assert known_class_list("oxford_pets")[12] == "English Cocker Spaniel"
    assert known_class_list("fgvc_aircraft")[73] == "F/A-18"
    assert known_class_list("dtd")[30] == "polka-dotted"


def test_official_orders_are_alphabetical_where_the_dataset_is() -> None:
    for name in ("dtd", "pacs"):
        names = known_class_list(name)
        assert names == sorted(names)
    pets = known_class_list("oxford_pets")
    assert pets == sorted(pets, key=str.lower)
    # CIFAR-100's fine labels are alphabetical in their underscore form
    c100 = [n.replace(" ", "_") for n in known_class_list("cifar100")]
    assert c100 == sorted(c100)


@pytest.mark.parametrize(
    ("alias", "canonical"),
    [
        ("imagenet", "imagenet"),
        ("ImageNet-1k", "imagenet"),
        ("imagenet1k", "imagenet"),
        ("oxford_pets", "oxford_pets"),
        ("Oxford-IIIT-Pet", "oxford_pets"),
        ("pets", "oxford_pets"),
        ("fgvc_aircraft", "fgvc_aircraft"),
        ("FGVC Aircraft", "fgvc_aircraft"),
        ("stanford-cars", "stanford_cars"),
        ("CIFAR100", "cifar100"),
        ("flowers", "flowers102"),
    ],
)
def test_aliases_are_case_insensitive(alias: str, canonical: str) -> None:
    assert canonical_dataset(alias) == canonical
    assert class_names_from(ClassesSpec(dataset=alias)) == known_class_list(canonical)


def test_unknown_dataset_lists_the_known_names() -> None:
    with pytest.raises(SynthsetError, match="classes.dataset: unknown dataset 'cifar1000'") as e:
        class_names_from(ClassesSpec(dataset="cifar1000"))
    assert "imagenet" in str(e.value) and "oxford_pets" in str(e.value)
    assert "\n" not in str(e.value)


def test_names_and_ids_stay_paired(tmp_path: Path) -> None:
    classes = resolve_classes(ClassesSpec(dataset="cifar100"))
    names = known_class_list("cifar100")
    assert [c.id for c in classes] == list(range(100))
    assert all(names[c.id] == c.name for c in classes)
    write_classes(tmp_path / "classes.json", classes)
    assert read_classes(tmp_path / "classes.json") == classes


def test_unsafe_names_get_safe_unique_folders() -> None:
    classes = resolve_classes(ClassesSpec(dataset="fgvc_aircraft"))
    folders = [c.folder for c in classes]
    assert len({f.lower() for f in folders}) == 100
    assert all("/" not in f for f in folders)
    assert classes[73].name == "F/A-18" and classes[73].id == 73


def test_file_and_imagefolder_sources(tmp_path: Path) -> None:
    f = tmp_path / "classes.txt"
    f.write_text("# comment\nzebra\n\n  yak \naardvark\n", encoding="utf-8")
    assert class_names_from(ClassesSpec(file=f)) == ["zebra", "yak", "aardvark"]
    for name in ("b", "a", "c"):
        (tmp_path / "imgs" / name).mkdir(parents=True)
    (tmp_path / "imgs" / "notes.txt").write_text("x", encoding="utf-8")
    assert class_names_from(ClassesSpec(imagefolder=tmp_path / "imgs")) == ["a", "b", "c"]


def test_default_synonyms_follow_aliases() -> None:
    assert "car" in default_synonyms(ClassesSpec(dataset="CIFAR-10"))["automobile"]
    assert default_synonyms(ClassesSpec(names=["automobile"])) == {}
    assert default_synonyms(ClassesSpec(dataset="dtd")) == {}
    # every shipped synonym belongs to a class of its list
    from synthset.classes import DEFAULT_SYNONYMS

    for dataset, table in DEFAULT_SYNONYMS.items():
        assert set(table) <= set(known_class_list(dataset)), dataset
