"""Class-name sources: a list, a text file, an ImageFolder's sub-folders, or a known dataset."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from functools import cache
from importlib.resources import files
from pathlib import Path

from synthset.errors import SynthsetError
from synthset.recipe import ClassesSpec
from synthset.store.atomic import atomic_write_json
from synthset.store.names import folder_names

_BUILTIN_LISTS: dict[str, list[str]] = {"digits": [str(i) for i in range(10)]}

# Other spellings users type for a known list (compared lower-case, letters and digits only).
DATASET_ALIASES: dict[str, str] = {
    "imagenet1k": "imagenet", "in1k": "imagenet", "ilsvrc": "imagenet",
    "ilsvrc2012": "imagenet", "imagenet2012": "imagenet",
    "pets": "oxford_pets", "oxfordpets": "oxford_pets", "oxfordiiitpet": "oxford_pets",
    "oxfordiiitpets": "oxford_pets", "oxfordpet": "oxford_pets",
    "flowers": "flowers102", "oxfordflowers": "flowers102", "oxfordflowers102": "flowers102",
    "oxford102flowers": "flowers102",
    "aircraft": "fgvc_aircraft", "fgvcaircraft": "fgvc_aircraft",
    "cars": "stanford_cars", "stanfordcars": "stanford_cars", "cars196": "stanford_cars",
    "textures": "dtd", "describabletextures": "dtd",
    "mscoco": "coco", "pascalvoc": "voc", "voc2007": "voc", "voc2012": "voc",
    "mnist": "digits",
}  # fmt: skip


def _list_dir() -> Path:
    return Path(str(files("synthset") / "class_lists"))


class _KnownClassLists(Mapping[str, list[str]]):
    """Known datasets' class lists by canonical name, read lazily from ``class_lists/*.txt``."""

    def _names(self) -> list[str]:
        shipped = [p.stem for p in _list_dir().glob("*.txt")]
        return sorted({*_BUILTIN_LISTS, *shipped})

    def __getitem__(self, key: str) -> list[str]:
        if key in _BUILTIN_LISTS:
            return list(_BUILTIN_LISTS[key])
        path = _list_dir() / f"{key}.txt"
        if not path.is_file():
            raise KeyError(key)
        return list(_read_list(path))

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())


@cache
def _read_list(path: Path) -> tuple[str, ...]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return tuple(ln.strip() for ln in lines if ln.strip())


KNOWN_CLASS_LISTS: Mapping[str, list[str]] = _KnownClassLists()


def canonical_dataset(name: str) -> str:
    """The canonical known-list name for ``name`` (case, ``-``/``_``/space and aliases ignored)."""
    key = re.sub(r"[^a-z0-9]", "", name.lower())
    by_key = {re.sub(r"[^a-z0-9]", "", k): k for k in KNOWN_CLASS_LISTS}
    if key in by_key:
        return by_key[key]
    if key in DATASET_ALIASES:
        return DATASET_ALIASES[key]
    known = ", ".join(KNOWN_CLASS_LISTS)
    raise SynthsetError(
        f"classes.dataset: unknown dataset {name!r}; known: {known} "
        "(or give classes.names / classes.file)"
    )


def known_class_list(name: str) -> list[str]:
    """The class names of a known dataset, in its official label order."""
    return KNOWN_CLASS_LISTS[canonical_dataset(name)]


@dataclass(frozen=True)
class ClassInfo:
    """A class: its integer label, its name (used in prompts) and its safe folder name."""

    id: int
    name: str
    folder: str


def class_names_from(spec: ClassesSpec) -> list[str]:
    """The class names a spec points at, in label order."""
    if spec.names is not None:
        names = [str(n) for n in spec.names]
    elif spec.file is not None:
        if not spec.file.is_file():
            raise SynthsetError(f"classes.file: {spec.file} not found (one class name per line)")
        lines = spec.file.read_text(encoding="utf-8").splitlines()
        names = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    elif spec.imagefolder is not None:
        if not spec.imagefolder.is_dir():
            raise SynthsetError(f"classes.imagefolder: {spec.imagefolder} is not a folder")
        names = sorted(p.name for p in spec.imagefolder.iterdir() if p.is_dir())
    else:
        names = known_class_list(spec.dataset or "")
    if not names:
        raise SynthsetError("classes: the class list is empty; give at least one class name")
    if any(not n.strip() for n in names):
        raise SynthsetError("classes: a class name is empty; remove it or give it a name")
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise SynthsetError(
            f"classes: class name {dup!r} appears twice; class names must be unique"
        )
    return names


def resolve_classes(spec: ClassesSpec) -> list[ClassInfo]:
    """Class ids, names and safe folder names for a spec."""
    names = class_names_from(spec)
    return [
        ClassInfo(i, n, f) for i, (n, f) in enumerate(zip(names, folder_names(names), strict=True))
    ]


def write_classes(path: Path, classes: list[ClassInfo]) -> None:
    """Save the class table (ids and names stay paired in every file)."""
    atomic_write_json(path, [asdict(c) for c in classes])


def read_classes(path: Path) -> list[ClassInfo]:
    """Load the class table written by :func:`write_classes`."""
    import json

    return [ClassInfo(**row) for row in json.loads(path.read_text(encoding="utf-8"))]


DEFAULT_SYNONYMS: dict[str, dict[str, list[str]]] = {
    "cifar10": {"automobile": ["car"], "airplane": ["plane", "aeroplane", "aircraft"]},
    "stl10": {"airplane": ["plane", "aeroplane", "aircraft"], "car": ["automobile"]},
    "voc": {"aeroplane": ["airplane", "plane"], "motorbike": ["motorcycle"], "tv monitor": ["tv"]},
    "pacs": {"person": ["man", "woman", "child"]},
}


def default_synonyms(spec: ClassesSpec) -> dict[str, list[str]]:
    """Synonyms shipped for a known dataset's classes (empty for other sources)."""
    if not spec.dataset:
        return {}
    table = DEFAULT_SYNONYMS.get(canonical_dataset(spec.dataset), {})
    return {k: list(v) for k, v in table.items()}
