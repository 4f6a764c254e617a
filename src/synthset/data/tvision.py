"""Real images from a torchvision dataset whose files are already on disk (``download=False``
always: synthset never downloads datasets)."""

from __future__ import annotations

import inspect
from typing import Any

from synthset.data.sources import Source, SourceSplit
from synthset.errors import SynthsetError, first_line
from synthset.recipe import RealDataSpec

EXAMPLES = "CIFAR10, CIFAR100, MNIST, FashionMNIST, KMNIST, SVHN, STL10, Flowers102, DTD"


def _dataset_class(name: str) -> Any:
    import torchvision.datasets as tvd
    from torchvision.datasets import VisionDataset

    cls = getattr(tvd, name, None)
    if not (inspect.isclass(cls) and issubclass(cls, VisionDataset)):
        raise SynthsetError(
            f"real.name: {name!r} is not a torchvision dataset; use one of e.g. {EXAMPLES}"
        )
    return cls


def _open_split(cls: Any, spec: RealDataSpec, split: str) -> Any:
    params = inspect.signature(cls.__init__).parameters
    if "train" in params:
        if split not in ("train", "test"):
            raise SynthsetError(
                f"real.splits: torchvision {spec.name} has only the splits train and test "
                f"(got {split!r})"
            )
        kwargs: dict[str, Any] = {"train": split == "train"}
    elif "split" in params:
        kwargs = {"split": split}
    else:
        raise SynthsetError(
            f"real.name: torchvision {spec.name} has no train/test split argument; export its "
            "images to class folders and use real.source: imagefolder"
        )
    try:
        return cls(root=str(spec.root), download=False, **kwargs)
    except (RuntimeError, FileNotFoundError, OSError) as exc:
        detail = first_line(exc)
        raise SynthsetError(
            f"real.root: torchvision {spec.name} {split} files not found under {spec.root} "
            f"({detail}); synthset never downloads: put them there in torchvision's layout "
            f"(e.g. run torchvision.datasets.{spec.name}(root, download=True) where there is "
            "network and copy the folder)"
        ) from None
    except ValueError as exc:  # e.g. an unknown split name
        raise SynthsetError(f"real.splits: torchvision {spec.name}: {exc}") from None


def _labels(ds: Any) -> list[int]:
    for attr in ("targets", "labels", "_labels"):
        values = getattr(ds, attr, None)
        if values is not None and len(values) == len(ds):
            return [int(v) for v in values]
    return [int(ds[i][1]) for i in range(len(ds))]


def open_torchvision(spec: RealDataSpec) -> Source:
    """The dataset's splits (default: train and test) and class names (``classes``)."""
    assert spec.name is not None
    cls = _dataset_class(spec.name)
    wanted = dict(spec.splits) if spec.splits is not None else {"train": "train", "test": "test"}
    splits = {}
    names = None
    for ours, theirs in wanted.items():
        ds = _open_split(cls, spec, theirs)
        names = names or (list(ds.classes) if getattr(ds, "classes", None) else None)
        splits[ours] = SourceSplit(theirs, _labels(ds), lambda i, ds=ds: ds[i][0])
    return Source(splits, names, f"torchvision {spec.name}")
