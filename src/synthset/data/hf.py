"""Real images from a Hugging Face ``datasets`` dataset: a folder written by ``save_to_disk``, a
local data folder ``load_dataset`` understands (parquet, imagefolder, ...), or a hub id."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from synthset.data.sources import Source, SourceSplit
from synthset.errors import SynthsetError, first_line
from synthset.recipe import RealDataSpec

VAL_NAMES = ("validation", "val", "valid", "dev")


def _load(path: Path) -> Any:
    try:
        import datasets
    except ImportError:
        raise SynthsetError(
            "real.source 'hf' needs the datasets package: pip install 'synthset[hf]'"
        ) from None
    saved = any((path / f).is_file() for f in ("dataset_dict.json", "state.json"))
    try:
        if saved:
            return datasets.load_from_disk(str(path))
        return datasets.load_dataset(str(path))
    except Exception as exc:  # datasets raises many kinds (not found, offline, bad format)
        where = "folder" if path.exists() else "hub id (hub access needs network)"
        raise SynthsetError(
            f"real.path: cannot load the HF dataset {str(path)!r} as a {where}: "
            f"{first_line(exc)}; give a folder written by save_to_disk, a local data folder or a "
            "reachable hub id"
        ) from None


def _split_names(spec: RealDataSpec, available: list[str], what: str) -> dict[str, str]:
    """synthset split → source split name."""
    if spec.splits is not None:
        wanted = dict(spec.splits)
    else:
        wanted = {"train": "train"}
        if "train" not in available and len(available) == 1:
            wanted["train"] = available[0]
        val = next((n for n in VAL_NAMES if n in available), None)
        if val is not None:
            wanted["val"] = val
        if "test" in available:
            wanted["test"] = "test"
    for ours, theirs in wanted.items():
        if theirs not in available:
            raise SynthsetError(
                f"real.splits.{ours}: {what} has no split {theirs!r} (it has: "
                f"{', '.join(available)}); set real.splits, e.g. {{train: {available[0]}}}"
            )
    return wanted


def open_hf(spec: RealDataSpec) -> Source:
    """The dataset's splits and class names."""
    import datasets

    assert spec.path is not None
    what = f"hf dataset {spec.path}"
    loaded = _load(Path(spec.path))
    parts = dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {"train": loaded}
    names_of = _split_names(spec, list(parts), what)
    first = parts[names_of["train"]]
    for col in (spec.image_column, spec.label_column):
        if col not in first.column_names:
            field = "image_column" if col == spec.image_column else "label_column"
            raise SynthsetError(
                f"real.{field}: {what} has no column {col!r} (columns: "
                f"{', '.join(first.column_names)})"
            )
    feature = first.features[spec.label_column]
    names: list[str] | None = None
    if isinstance(feature, datasets.ClassLabel):
        names = list(feature.names)
    elif getattr(feature, "dtype", None) == "string":
        names = sorted({str(v) for p in names_of.values() for v in parts[p][spec.label_column]})
    splits = {}
    for ours, theirs in names_of.items():
        ds = parts[theirs]
        raw = list(ds[spec.label_column])
        if not raw:
            raise SynthsetError(f"real.splits.{ours}: split {theirs!r} of {what} is empty")
        labels = [names.index(str(v)) for v in raw] if names and isinstance(raw[0], str) else raw
        if any(not isinstance(v, int) or v < 0 for v in labels):
            raise SynthsetError(
                f"real.label_column: {what} split {theirs!r} has labels that are not class "
                "indices or names (e.g. -1 for unlabeled test images); map another split"
            )
        images = ds.select_columns([spec.image_column])
        splits[ours] = SourceSplit(
            theirs, labels, lambda i, images=images: images[i][spec.image_column]
        )
    return Source(splits, names, what)
