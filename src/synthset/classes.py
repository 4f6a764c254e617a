"""Class-name sources: a list, a text file, an ImageFolder's sub-folders, or a known dataset."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from synthset.errors import SynthsetError
from synthset.recipe import ClassesSpec
from synthset.store.atomic import atomic_write_json
from synthset.store.names import folder_names

KNOWN_CLASS_LISTS: dict[str, list[str]] = {
    "digits": [str(i) for i in range(10)],
    "cifar10": [
        "airplane", "automobile", "bird", "cat", "deer",
        "dog", "frog", "horse", "ship", "truck",
    ],
}  # fmt: skip


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
        key = (spec.dataset or "").lower()
        if key not in KNOWN_CLASS_LISTS:
            known = ", ".join(sorted(KNOWN_CLASS_LISTS))
            raise SynthsetError(
                f"classes.dataset: unknown dataset {spec.dataset!r}; known: {known}"
            )
        names = list(KNOWN_CLASS_LISTS[key])
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
