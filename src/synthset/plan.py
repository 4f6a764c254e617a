"""The plan: work items with fixed seeds, the contract between stages.

``seed = hash(recipe seed, item id)``, so whoever runs an item (any process, shard or retry)
makes the same image. Items are run in fixed *chunks* of the plan (``batch_size`` consecutive
items), so a resumed or sharded run feeds the model exactly the same batches.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from synthset.classes import ClassInfo
from synthset.errors import SynthsetError
from synthset.recipe import Recipe
from synthset.store.atomic import read_jsonl, write_jsonl


@dataclass(frozen=True)
class WorkItem:
    """One image to make."""

    item_id: str
    class_id: int
    class_name: str
    folder: str
    prompt: str
    seed: int
    mode: str = "text2image"
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def item_seed(recipe_seed: int, item_id: str) -> int:
    """A 63-bit seed from the recipe seed and the item id (stable across machines and runs)."""
    digest = hashlib.sha256(f"{recipe_seed}:{item_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & ((1 << 63) - 1)


def build_plan(
    recipe: Recipe, classes: list[ClassInfo], prompts: dict[int, list[str]] | None = None
) -> list[WorkItem]:
    """``images_per_class`` items per class; item ``k`` of a class takes the class's prompt
    ``k mod n``. Ids are ``<class id>-<index>`` so growing the plan keeps every existing item
    (and its image) unchanged. Without ``prompts``, the recipe's single template is used."""
    if recipe.generate is None:
        return []
    mode = recipe.generate.generator.kind
    items = []
    for cls in classes:
        texts = (prompts or {}).get(cls.id) or [
            recipe.prompts.template.replace("{class}", cls.name)
        ]
        for k in range(recipe.generate.images_per_class):
            prompt = texts[k % len(texts)]
            item_id = f"{cls.id:04d}-{k:06d}"
            items.append(
                WorkItem(
                    item_id=item_id,
                    class_id=cls.id,
                    class_name=cls.name,
                    folder=cls.folder,
                    prompt=prompt,
                    seed=item_seed(recipe.seed, item_id),
                    mode=mode,
                )
            )
    return items


def save_plan(path: Path, items: list[WorkItem]) -> None:
    write_jsonl(path, [it.to_dict() for it in items])


def load_plan(path: Path) -> list[WorkItem]:
    if not path.exists():
        raise SynthsetError(f"no plan at {path}: run 'synthset plan' (or 'synthset run') first")
    return [WorkItem(**row) for row in read_jsonl(path)]


def chunks(items: list[WorkItem], size: int) -> list[list[WorkItem]]:
    """Consecutive fixed-size chunks of the plan: the batches every run feeds the model."""
    return [items[i : i + size] for i in range(0, len(items), size)]


def parse_shard(text: str | None) -> tuple[int, int]:
    """``"i/n"`` → ``(i, n)`` with ``0 <= i < n``; ``None`` → ``(0, 1)``."""
    if text is None:
        return 0, 1
    try:
        index, count = (int(p) for p in text.split("/"))
    except ValueError:
        raise SynthsetError(f"--shard {text!r}: write it as i/n, e.g. 0/4") from None
    if count < 1 or not 0 <= index < count:
        raise SynthsetError(f"--shard {text!r}: need 0 <= i < n, e.g. 0/4 … 3/4")
    return index, count


def shard_chunks(chunk_list: list[list[WorkItem]], index: int, count: int) -> list[list[WorkItem]]:
    """The chunks shard ``index`` of ``count`` runs (round robin; shards never overlap)."""
    return chunk_list[index::count]
