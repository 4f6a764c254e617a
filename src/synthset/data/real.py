"""The data stage: real images split into train / val / test (stratified, fixed seed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.model_selection import train_test_split

from synthset.classes import ClassInfo
from synthset.data.splits import SPLITS, Samples, save_splits, scan_imagefolder
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


def prepare_real_data(
    spec: RealDataSpec, classes: list[ClassInfo], out_dir: Path, seed: int
) -> dict[str, Samples]:
    """Write ``out_dir/splits.json`` (and, for digits, the PNGs) and return the splits."""
    if spec.source == "digits":
        _need_test_fraction(spec, "the bundled digits have")
        splits = _digits_splits(spec, classes, out_dir, seed)
    elif spec.source == "imagefolder":
        splits = _imagefolder_splits(spec, classes, seed)
    else:
        from synthset.data.sources import materialize_source

        if spec.source == "hf":
            from synthset.data.hf import open_hf

            source = open_hf(spec)
        else:
            from synthset.data.tvision import open_torchvision

            source = open_torchvision(spec)
        splits = materialize_source(source, spec, classes, out_dir, seed)
    for name in SPLITS:
        if not splits.get(name):
            raise SynthsetError(f"real: the {name} split is empty; add images or change fractions")
    save_splits(out_dir / "splits.json", splits)
    return splits


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
) -> dict[str, Samples]:
    assert spec.path is not None
    root = spec.path
    lookup = {c.folder: c.id for c in classes} | {c.name: c.id for c in classes}
    if (root / "train").is_dir() and (root / "test").is_dir():
        train = scan_imagefolder(root / "train", lookup, "real.path train/")
        test = scan_imagefolder(root / "test", lookup, "real.path test/")
        if (root / "val").is_dir():
            val = scan_imagefolder(root / "val", lookup, "real.path val/")
        else:
            labels = np.array([lbl for _, lbl in train])
            frac = spec.val_fraction
            idx = stratified_split(labels, frac, frac, seed)  # carve val out of train only
            keep = np.sort(np.concatenate([idx["train"], idx["test"]]))
            val = [train[i] for i in idx["val"]]
            train = [train[i] for i in keep]
        return {"train": train, "val": val, "test": test}
    if (root / "train").is_dir():
        raise SynthsetError(
            f"real.path: {root} has train/ but no test/; a real test split is required "
            "(add test/<class>/ images, or point path at class folders to split automatically)"
        )
    _need_test_fraction(spec, f"real.path {root} (class folders without train/ test/) has")
    samples = scan_imagefolder(root, lookup, "real.path")
    labels = np.array([lbl for _, lbl in samples])
    index = stratified_split(labels, spec.val_fraction, spec.test_fraction, seed)
    return {name: [samples[i] for i in idx] for name, idx in index.items()}
