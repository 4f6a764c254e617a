"""The plan: work items with fixed seeds, the contract between stages.

``seed = hash(recipe seed, item id)``, so whoever runs an item (any process, shard or retry)
makes the same image. Items are run in fixed *chunks* of the plan (``batch_size`` consecutive
items), so a resumed or sharded run feeds the model exactly the same batches.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from synthset.classes import ClassInfo
from synthset.data.splits import Samples
from synthset.errors import SynthsetError
from synthset.recipe import GeneratorSpec, Recipe
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


#: File extension of each ``generate.image_format``.
EXTENSIONS = {"png": ".png", "jpeg": ".jpg", "webp": ".webp"}


def image_relpath(item: WorkItem, image_format: str) -> str:
    """The item's image path relative to the images folder (always forward slashes)."""
    return f"{item.folder}/{item.item_id}{EXTENSIONS[image_format]}"


def item_seed(recipe_seed: int, item_id: str) -> int:
    """A 63-bit seed from the recipe seed and the item id (stable across machines and runs)."""
    digest = hashlib.sha256(f"{recipe_seed}:{item_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & ((1 << 63) - 1)


def build_plan(
    recipe: Recipe,
    classes: list[ClassInfo],
    prompts: dict[int, list[str]] | None = None,
    real: Samples | None = None,
    root: Path | None = None,
    inverted: list[dict[str, Any]] | None = None,
) -> list[WorkItem]:
    """``images_per_class`` items per class; item ``k`` of a class takes the class's prompt
    ``k mod n``. Ids are ``<class id>-<index>`` so growing the plan keeps every existing item
    (and its image) unchanged. Without ``prompts``, the recipe's single template is used.

    Real-image modes (img2img, inpaint) get one item per (real image, variant) instead, from
    ``real`` (any list of (path, label)); image paths are stored relative to ``root`` when
    inside it. An ensemble assigns each item to one member (see :func:`pick_member`).

    The inversion mode draws its items from ``inverted`` (the rows of a diffusion-inversion
    artifact), see :func:`_inversion_items`."""
    if recipe.generate is None:
        return []
    members = recipe.generate.members
    if members[0].uses_real_images:
        if real is None:
            raise SynthsetError(
                "generate: img2img/inpaint start from real images: add a 'real' section"
            )
        items = _real_items(recipe, classes, prompts or {}, real, root)
    elif members[0].uses_inversion:
        if inverted is None:
            raise SynthsetError(
                "generate: kind inversion samples inverted real images: run 'synthset adapt' "
                "with method diffusion_inversion first"
            )
        items = _inversion_items(recipe, classes, prompts or {}, inverted, root)
    else:
        items = _text_items(recipe, classes, prompts or {})
    if recipe.generate.generators is None:
        return items
    return [_assign(recipe, it, root) for it in items]


def _class_texts(recipe: Recipe, cls: ClassInfo, prompts: dict[int, list[str]]) -> list[str]:
    return prompts.get(cls.id) or [recipe.prompts.template.replace("{class}", cls.name)]


def _text_items(
    recipe: Recipe, classes: list[ClassInfo], prompts: dict[int, list[str]]
) -> list[WorkItem]:
    assert recipe.generate is not None
    mode = recipe.generate.members[0].kind
    items = []
    for cls in classes:
        texts = _class_texts(recipe, cls, prompts)
        for k in range(recipe.generate.planned_per_class):
            items.append(_item(recipe, cls, k, texts[k % len(texts)], mode))
    return items


def _item(
    recipe: Recipe,
    cls: ClassInfo,
    k: int,
    prompt: str,
    mode: str,
    params: dict[str, Any] | None = None,
) -> WorkItem:
    """Item ``k`` of class ``cls``: id ``<class id>-<k>`` and the seed that id fixes."""
    item_id = f"{cls.id:04d}-{k:06d}"
    return WorkItem(
        item_id=item_id,
        class_id=cls.id,
        class_name=cls.name,
        folder=cls.folder,
        prompt=prompt,
        seed=item_seed(recipe.seed, item_id),
        mode=mode,
        params=params or {},
    )


def _real_items(
    recipe: Recipe,
    classes: list[ClassInfo],
    prompts: dict[int, list[str]],
    real: Samples,
    root: Path | None,
) -> list[WorkItem]:
    """Item ``k = j * variants + v`` of a class is variant ``v`` of the class's ``j``-th real
    image; variant ``v`` uses strength ``v mod len``; prompts cycle as in text modes."""
    assert recipe.generate is not None
    spec = recipe.generate.members[0]
    strengths = spec.strengths or [1.0]
    variants = spec.variants_per_image or len(strengths)
    by_class: dict[int, list[Path]] = {}
    for path, label in real:
        by_class.setdefault(int(label), []).append(Path(path))
    items = []
    for cls in classes:
        texts = _class_texts(recipe, cls, prompts)
        images = by_class.get(cls.id, [])
        n = min(recipe.generate.planned_per_class, len(images) * variants)
        for k in range(n):
            j, v = divmod(k, variants)
            params: dict[str, Any] = {
                "image": _stored_path(images[j], root),
                "strength": strengths[v % len(strengths)],
                "variant": v,
            }
            if spec.masks_from_folder:
                params["mask"] = _stored_path(_mask_path(recipe, spec, images[j]), root)
            items.append(_item(recipe, cls, k, texts[k % len(texts)], spec.kind, params))
    return items


def _inversion_items(
    recipe: Recipe,
    classes: list[ClassInfo],
    prompts: dict[int, list[str]],
    inverted: list[dict[str, Any]],
    root: Path | None,
) -> list[WorkItem]:
    """Item ``k`` of a class samples the conditioning of the class's ``k mod n``-th inverted
    image (round robin), moved by λ towards a partner of the same class drawn from (seed, item
    id). A class gets ``images_per_class`` items, at most ``n × samples_per_embedding``."""
    assert recipe.generate is not None
    spec = recipe.generate.members[0]
    by_class: dict[str, list[dict[str, Any]]] = {}
    for row in inverted:
        by_class.setdefault(str(row["class_name"]), []).append(row)
    items = []
    for cls in classes:
        rows = by_class.get(cls.name)
        if not rows:
            raise SynthsetError(
                f"generate: class {cls.name!r} has no inverted images; rerun 'synthset adapt' "
                "(diffusion_inversion) with this class's real images"
            )
        texts = _class_texts(recipe, cls, prompts)
        n = recipe.generate.planned_per_class
        if spec.samples_per_embedding is not None:
            n = min(n, len(rows) * spec.samples_per_embedding)
        for k in range(n):
            src = rows[k % len(rows)]
            partner = src
            if len(rows) > 1:
                draw = item_seed(recipe.seed, f"partner:{cls.id:04d}-{k:06d}")
                others = [r for r in rows if r is not src]
                partner = others[draw % len(others)]
            params = {
                "source_image": _stored_path(Path(src["image"]), root),
                "source_row": int(src["row"]),
                "partner_image": _stored_path(Path(partner["image"]), root),
                "partner_row": int(partner["row"]),
                "lambda": spec.interpolation_strength,
            }
            items.append(_item(recipe, cls, k, texts[k % len(texts)], "inversion", params))
    return items


def _mask_path(recipe: Recipe, spec: GeneratorSpec, image: Path) -> Path:
    """The mask of a real image: same path relative to the real ImageFolder, under mask_dir."""
    assert recipe.real is not None
    mask_dir = spec.mask_dir
    assert mask_dir is not None
    base = recipe.real.path
    try:
        rel = image.resolve().relative_to(Path(base).resolve()) if base else None
    except ValueError:
        rel = None
    if rel is None:  # e.g. the bundled digits: <split>/<class>/<file>
        rel = Path(*image.parts[-2:])
    mask = Path(mask_dir) / rel.with_suffix(".png")
    if not mask.is_file():
        raise SynthsetError(
            f"generate.generator.mask_dir: no mask {mask} for real image {image}; masks must "
            "mirror the real ImageFolder (same relative path, .png)"
        )
    return mask


def _stored_path(path: Path, root: Path | None) -> str:
    if root is not None:
        try:
            return str(Path(path).resolve().relative_to(Path(root).resolve()))
        except ValueError:
            pass
    return str(Path(path).resolve())


def resolve_item_path(text: str, root: Path | None) -> Path:
    """A path stored in an item's params, back as a path (relative ones are under ``root``)."""
    path = Path(text)
    return path if path.is_absolute() or root is None else Path(root) / path


def pick_member(recipe_seed: int, item_id: str, weights: list[float]) -> int:
    """The ensemble member of an item: a uniform draw from (seed, item id) against the
    cumulative weights, so it never changes when the plan grows or is resharded."""
    u = item_seed(recipe_seed, f"generator:{item_id}") / float(1 << 63)
    total = sum(weights)
    acc = 0.0
    for i, w in enumerate(weights):
        acc += w / total
        if u < acc:
            return i
    return len(weights) - 1


def _assign(recipe: Recipe, item: WorkItem, root: Path | None) -> WorkItem:
    """The item with its ensemble member; real-image items take that member's strength and
    mask (the variant count comes from the first member)."""
    assert recipe.generate is not None and recipe.generate.generators is not None
    members = recipe.generate.generators
    member = members[pick_member(recipe.seed, item.item_id, [m.weight for m in members])]
    params = {**item.params, "generator": member.name}
    if "variant" in params:
        strengths = member.strengths or [1.0]
        params["strength"] = strengths[int(params["variant"]) % len(strengths)]
        params.pop("mask", None)
        if member.masks_from_folder:
            image = resolve_item_path(str(params["image"]), root)
            params["mask"] = _stored_path(_mask_path(recipe, member, image), root)
    return replace(item, mode=member.kind, params=params)


def save_plan(path: Path, items: list[WorkItem]) -> None:
    write_jsonl(path, [it.to_dict() for it in items])


def load_plan(path: Path) -> list[WorkItem]:
    if not path.exists():
        raise SynthsetError(f"no plan at {path}: run 'synthset plan' (or 'synthset run') first")
    return [WorkItem(**row) for row in read_jsonl(path)]


def chunks(items: list[WorkItem], size: int) -> list[list[WorkItem]]:
    """Consecutive fixed-size chunks of the plan: the batches every run feeds the model."""
    return [items[i : i + size] for i in range(0, len(items), size)]


def parse_shard(text: str | None, environ: Mapping[str, str] | None = None) -> tuple[int, int]:
    """``"i/n"`` → ``(i, n)`` with ``0 <= i < n``; ``"slurm"`` → this task's place in its SLURM
    job array (see :func:`slurm_array_shard`); ``None`` → the same inside a job array (a
    hand-written ``sbatch --array`` script needs no ``--shard``), else ``(0, 1)``."""
    environ = os.environ if environ is None else environ
    if text is None:
        if environ.get("SLURM_ARRAY_TASK_ID") and environ.get("SLURM_ARRAY_TASK_COUNT"):
            return slurm_array_shard(environ)
        return 0, 1
    if text.strip().lower() == "slurm":
        return slurm_array_shard(environ)
    try:
        index, count = (int(p) for p in text.split("/"))
    except ValueError:
        raise SynthsetError(f"--shard {text!r}: write it as i/n, e.g. 0/4") from None
    if count < 1 or not 0 <= index < count:
        raise SynthsetError(f"--shard {text!r}: need 0 <= i < n, e.g. 0/4 … 3/4")
    if count > MAX_SHARDS:
        raise SynthsetError(f"--shard {text!r}: at most {MAX_SHARDS} shards")
    return index, count


#: More shards than this is a typo, not a cluster (each shard is a manifest file of its own).
MAX_SHARDS = 100_000


def slurm_array_shard(environ: Mapping[str, str]) -> tuple[int, int]:
    """``(i, n)`` of this SLURM array task: arrays need not start at 0 or step by 1
    (``--array=1-8``, ``--array=0-30:10``), so ``i = (ID - MIN) / STEP``."""
    names = ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_COUNT")
    missing = [n for n in names if not environ.get(n)]
    if missing:
        raise SynthsetError(
            f"--shard slurm: {missing[0]} is not set; run it inside a SLURM job array "
            "(sbatch --array=...), or give --shard i/n"
        )
    try:
        task, low, count = (int(environ[n]) for n in names)
        step = int(environ.get("SLURM_ARRAY_TASK_STEP") or 1)
    except ValueError:
        raise SynthsetError(
            "--shard slurm: the SLURM_ARRAY_TASK_* variables are not integers"
        ) from None
    index, rest = divmod(task - low, step)
    if rest or not 0 <= index < count:
        raise SynthsetError(
            f"--shard slurm: task {task} is not in the array {low}..{low + (count - 1) * step} "
            f"(step {step}); give --shard i/n"
        )
    return index, count


def shard_chunks(chunk_list: list[list[WorkItem]], index: int, count: int) -> list[list[WorkItem]]:
    """The chunks shard ``index`` of ``count`` runs (round robin; shards never overlap)."""
    return chunk_list[index::count]
