"""The data stage: real images split into train / val / test (stratified, fixed seed)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.model_selection import train_test_split

from synthset.classes import ClassInfo, ClassResolver
from synthset.data.splits import SPLITS, Samples, class_folders, save_splits, scan_imagefolder
from synthset.errors import SynthsetError
from synthset.recipe import RealDataSpec
from synthset.store.atomic import atomic_write


def stratified_split(
    labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int
) -> dict[str, np.ndarray]:
    """Indices of a stratified train / val / test split."""
    idx = np.arange(len(labels))
    try:
        rest, test = train_test_split(
            idx, test_size=test_fraction, stratify=labels, random_state=seed
        )
        val_share = val_fraction / (1.0 - test_fraction)
        train, val = train_test_split(
            rest, test_size=val_share, stratify=labels[rest], random_state=seed
        )
    except ValueError as exc:
        raise SynthsetError(
            f"real: cannot split {len(labels)} images into train/val/test by class ({exc}); "
            "every class needs several images"
        ) from None
    return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8×8 digits as uint8 images (0–255) and integer labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.clip(np.round(digits.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    return images, digits.target.astype(np.int64)


#: Where a class's images of a split come from (split, class → text), for the error when there
#: are none.
Where = Callable[[str, ClassInfo], str]


def _same_for_all(text: str) -> Where:
    return lambda split, cls: text


def prepare_real_data(
    spec: RealDataSpec, classes: list[ClassInfo], out_dir: Path, seed: int
) -> dict[str, Samples]:
    """Write ``out_dir/splits.json`` (and, for digits, the PNGs) and return the splits."""
    if spec.source == "digits":
        _need_test_fraction(spec, "the bundled digits have")
        splits = _digits_splits(spec, classes, out_dir, seed)
        where = _same_for_all("the bundled digits")
    elif spec.source == "imagefolder":
        splits, where = _imagefolder_splits(spec, classes, seed)
    else:
        from synthset.data.sources import materialize_source

        if spec.source == "hf":
            from synthset.data.hf import open_hf

            source = open_hf(spec)
        else:
            from synthset.data.tvision import open_torchvision

            source = open_torchvision(spec)
        splits = materialize_source(source, spec, classes, out_dir, seed)
        where = _same_for_all(f"none in {source.what}")
    for name in SPLITS:
        if not splits.get(name):
            raise SynthsetError(f"real: the {name} split is empty; add images or change fractions")
    _need_every_class(spec, splits, classes, where)
    save_splits(out_dir / "splits.json", splits)
    return splits


def _need_every_class(
    spec: RealDataSpec, splits: dict[str, Samples], classes: list[ClassInfo], where: Where
) -> None:
    """Every class needs real train images (else the classifiers never see its label) and real
    test images (else CAS cannot score it): one line naming the class and where to add them."""
    field = "real.path" if spec.source in ("imagefolder", "hf") else "real"
    for split, why in (("train", ""), ("test", ", so CAS cannot score it")):
        present = {lbl for _, lbl in splits[split]}
        empty = [c for c in classes if c.id not in present]
        if empty:
            more = f" (and {len(empty) - 1} more)" if len(empty) > 1 else ""
            raise SynthsetError(
                f"{field}: class {empty[0].name!r}{more} has no {split} images "
                f"({where(split, empty[0])}){why}; add images or remove the class"
            )


def _need_test_fraction(spec: RealDataSpec, what: str) -> None:
    if spec.test_fraction == 0:
        raise SynthsetError(
            f"real.test_fraction is 0 but {what} no test split; a real test split is required: "
            "set test_fraction > 0 (e.g. 0.25)"
        )


def _digits_splits(
    spec: RealDataSpec, classes: list[ClassInfo], out_dir: Path, seed: int
) -> dict[str, Samples]:
    if len(classes) != 10 or [c.name for c in classes] != [str(i) for i in range(10)]:
        raise SynthsetError(
            "real.source 'digits' needs the ten digit classes: set classes.dataset: digits"
        )
    images, labels = digits_arrays()
    index = stratified_split(labels, spec.val_fraction, spec.test_fraction, seed)
    splits: dict[str, Samples] = {}
    for name, idx in index.items():
        samples: Samples = []
        for i in idx:
            path = out_dir / name / classes[labels[i]].folder / f"digit-{i:04d}.png"
            if not path.exists():
                img = Image.fromarray(images[i], mode="L")
                atomic_write(path, lambda fh, img=img: img.save(fh, format="PNG"))
            samples.append((path, int(labels[i])))
        splits[name] = samples
    return splits


def _imagefolder_splits(
    spec: RealDataSpec, classes: list[ClassInfo], seed: int
) -> tuple[dict[str, Samples], Where]:
    assert spec.path is not None
    root = spec.path
    resolver = ClassResolver(classes)
    if (root / "train").is_dir() and (root / "test").is_dir():
        parts = [p for p in SPLITS if (root / p).is_dir()]
        listing = [f.name for p in parts for f in class_folders(root / p, f"real.path {p}/")]
        read = {p: scan_imagefolder(root / p, resolver, f"real.path {p}/", listing) for p in parts}
        train, test = read["train"], read["test"]
        if "val" in read:
            val = read["val"]
        else:
            labels = np.array([lbl for _, lbl in train])
            frac = spec.val_fraction
            idx = stratified_split(labels, frac, frac, seed)  # carve val out of train only
            keep = np.sort(np.concatenate([idx["train"], idx["test"]]))
            val = [train[i] for i in idx["val"]]
            train = [train[i] for i in keep]
        on_disk = _folder_of(resolver, listing)

        def where(split: str, cls: ClassInfo) -> str:
            folder = root / split / on_disk.get(cls.id, cls.folder)
            return _state(folder, read.get(split, read["train"]), cls)

        return {"train": train, "val": val, "test": test}, where
    if (root / "train").is_dir():
        raise SynthsetError(
            f"real.path: {root} has train/ but no test/; a real test split is required "
            "(add test/<class>/ images, or point path at class folders to split automatically)"
        )
    _need_test_fraction(spec, f"real.path {root} (class folders without train/ test/) has")
    samples = scan_imagefolder(root, resolver, "real.path")
    labels = np.array([lbl for _, lbl in samples])
    index = stratified_split(labels, spec.val_fraction, spec.test_fraction, seed)
    on_disk = _folder_of(resolver, [f.name for f in class_folders(root, "real.path")])

    def where_flat(split: str, cls: ClassInfo) -> str:
        return _state(root / on_disk.get(cls.id, cls.folder), samples, cls)

    return {name: [samples[i] for i in idx] for name, idx in index.items()}, where_flat


def _state(folder: Path, read: Samples, cls: ClassInfo) -> str:
    """``folder/ is empty or missing``, or how few images of ``cls`` it held."""
    n = sum(lbl == cls.id for _, lbl in read)
    return f"{folder}/ " + (f"holds only {n}, too few to split" if n else "is empty or missing")


def _folder_of(resolver: ClassResolver, listing: list[str]) -> dict[int, str]:
    """Class id → the folder on disk that holds it (for messages)."""
    return {cid: name for name, cid in resolver.resolve(listing, "real.path").items()}
