"""Class-name sources: a list, a text file, an ImageFolder's sub-folders, or a known dataset."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
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


def class_infos(names: list[str]) -> list[ClassInfo]:
    """Ids and safe folder names for class names in label order (what ``classes.json`` holds)."""
    return [
        ClassInfo(i, n, f) for i, (n, f) in enumerate(zip(names, folder_names(names), strict=True))
    ]


def resolve_classes(spec: ClassesSpec) -> list[ClassInfo]:
    """Class ids, names and safe folder names for a spec."""
    return class_infos(class_names_from(spec))


class ClassResolver:
    """Which class each name found in the data means: an ImageFolder's sub-folders, or a
    dataset's class names. One rule, applied to a whole listing at once:

    1. every entry that names a class is a safe folder from ``classes.json``: read as folders;
    2. else every such entry is an exact class name: read as names;
    3. else each entry alone: the class whose folder or name it is exactly, else the class whose
       folder or name it is ignoring case.

    An entry that could be two classes (at step 3), or two entries that are one class, is a
    one-line error; entries that name no class are left out, for the caller to report.
    """

    def __init__(self, classes: Sequence[ClassInfo]) -> None:
        self.classes = list(classes)
        self._folder = {c.folder: c.id for c in self.classes}
        self._name = {c.name: c.id for c in self.classes}
        self._loose: dict[str, set[int]] = {}
        for c in self.classes:
            for key in (c.folder, c.name):
                self._loose.setdefault(key.lower(), set()).add(c.id)

    def _candidates(self, entry: str) -> set[int]:
        exact = {t[entry] for t in (self._folder, self._name) if entry in t}
        return exact or self._loose.get(entry.lower(), set())

    def resolve(self, entries: Iterable[str], what: str, noun: str = "folder") -> dict[str, int]:
        """Class id of every entry that names a class (``what`` and ``noun`` word the errors)."""
        found = sorted({e for e in entries if self._candidates(e)})
        if all(e in self._folder for e in found):
            return {e: self._folder[e] for e in found}
        if all(e in self._name for e in found):
            return {e: self._name[e] for e in found}
        result: dict[str, int] = {}
        for entry in found:
            ids = sorted(self._candidates(entry))
            if len(ids) > 1:
                a, b = (self.classes[i] for i in ids[:2])
                raise SynthsetError(
                    f"{what}: {noun} {entry!r} is ambiguous: it could be class {a.name!r} or "
                    f"class {b.name!r}; rename it to exactly one class's folder from "
                    f"classes.json ({a.folder!r} or {b.folder!r})"
                )
            result[entry] = ids[0]
        by_class: dict[int, str] = {}
        for entry, cid in result.items():
            if cid in by_class:
                c = self.classes[cid]
                raise SynthsetError(
                    f"{what}: {noun}s {by_class[cid]!r} and {entry!r} both mean class "
                    f"{c.name!r}; keep one (its folder in classes.json is {c.folder!r})"
                )
            by_class[cid] = entry
        return result

    def choices(self, limit: int = 8) -> str:
        """The classes' folders, for messages (the first ``limit``)."""
        folders = [repr(c.folder) for c in self.classes]
        more = f", ... ({len(folders)} classes)" if len(folders) > limit else ""
        return ", ".join(folders[:limit]) + more


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
