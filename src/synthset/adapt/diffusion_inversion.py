"""``adapt.method: diffusion_inversion`` ("Training on Thin Air", Zhou et al. 2023): one learned
conditioning per real train image; UNet, VAE and text encoder stay frozen.

Image ``i`` gets a context of ``num_tokens`` × the UNet's cross-attention width (and, on SDXL, a
pooled vector) — the paper's bias-free linear map from a one-hot image id, which is a lookup
table. Each context starts as the first ``num_tokens`` states of the empty prompt's encoding (the
unconditional input, so step 0's loss is the unconditional loss) and learns to denoise its image
with the scheduler's own training target.

Images are inverted in groups of ``group_size`` (train order). A group is one run of the shared
loop with its own resumable state; groups are independent, so ``synthset adapt --shard i/n``
runs groups ``i, i+n, …`` on as many machines as there are shards (a group another process holds
is skipped, so extra processes on one machine share the groups too). The finished groups stay in
``<adapt>.groups/``; when every group is done the artifact is assembled (the files of
:mod:`synthset.store.conditioning`). The ``inversion`` generator samples from it.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock, Timeout

from synthset.adapt.base import AdaptData
from synthset.adapt.pipeline_task import (
    PipelineAdapter,
    check_inputs,
    meta_value,
    task_fingerprint,
    write_meta,
)
from synthset.adapt.sd_parts import PipelineParts
from synthset.adapt.training import loop_settings, train, write_folder_atomic
from synthset.data.splits import Samples
from synthset.errors import SynthsetError
from synthset.recipe import AdaptSpec
from synthset.store.conditioning import EMBEDDINGS_FILE, INDEX_FILE

MARKER_FILE = "fingerprint"


def groups_dir(out_dir: Path) -> Path:
    """Where the finished groups wait until every group is done: ``<adapt>.groups/``."""
    return out_dir.parent / f"{out_dir.name}.groups"


def group_ranges(n_images: int, group_size: int) -> list[range]:
    """The image rows of each group, in train order."""
    return [range(s, min(s + group_size, n_images)) for s in range(0, n_images, group_size)]


def empty_context(
    parts: PipelineParts, num_tokens: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The first ``num_tokens`` states of the empty prompt's encoding (and its pooled vector)."""
    with torch.no_grad():
        embeds, pooled = parts.encode(parts.token_ids([""]))
    if num_tokens > embeds.shape[1]:
        raise SynthsetError(
            f"adapt.num_tokens: {num_tokens} is more than the text encoder's {embeds.shape[1]} "
            "positions; lower it"
        )
    return embeds[0, :num_tokens].detach(), (pooled[0].detach() if pooled is not None else None)


class InversionTask:
    """Learns the contexts of one group of images (the frozen pipeline's denoising loss); a
    :class:`~synthset.adapt.training.TrainingTask`. The saved group carries ``marker``, the
    fingerprint that tells a finished group of this training from a stale one."""

    def __init__(self, spec: AdaptSpec, parts: PipelineParts, images: Samples, marker: str) -> None:
        self.spec, self.parts, self.marker = spec, parts, marker
        self.device = parts.device
        self.latents = parts.latents(parts.pixels(images, "adapt: real train"))
        start, start_pooled = empty_context(parts, spec.num_tokens)
        n = len(images)
        self.table = torch.nn.Parameter(start.repeat(n, 1, 1).to(parts.device))
        self.pooled = (
            torch.nn.Parameter(start_pooled.repeat(n, 1).to(parts.device))
            if start_pooled is not None
            else None
        )

    def parameters(self) -> list[torch.nn.Parameter]:
        return [self.table] + ([self.pooled] if self.pooled is not None else [])

    def loss(self, gen: torch.Generator) -> torch.Tensor:
        assert self.spec.batch_size is not None
        idx = torch.randint(0, len(self.latents), (self.spec.batch_size,), generator=gen)
        rows = idx.to(self.device)
        pooled = self.pooled[rows] if self.pooled is not None else None
        return self.parts.loss(self.latents[idx], self.table[rows], pooled, gen)

    def validation_loss(self) -> float | None:
        return None  # the val images have no contexts of their own

    def save(self, out_dir: Path) -> None:
        from safetensors.torch import save_file

        tensors = {"embeddings": self.table.detach().cpu().contiguous()}
        if self.pooled is not None:
            tensors["pooled"] = self.pooled.detach().cpu().contiguous()
        save_file(tensors, str(out_dir / EMBEDDINGS_FILE))
        (out_dir / MARKER_FILE).write_text(self.marker, encoding="utf-8")


class DiffusionInversionAdapter(PipelineAdapter):
    """Inverts every real train image of ``adapt.base``; the ``inversion`` generator samples
    from the learned contexts."""

    def fit(
        self,
        data: AdaptData,
        out_dir: Path,
        seed: int,
        progress: bool = True,
        stop_after: int | None = None,
        shard: tuple[int, int] = (0, 1),
    ) -> bool:
        """Invert this shard's unfinished groups; assemble the artifact once all are done.
        Returns True when the artifact is complete."""
        from synthset.devices import resolve_device

        spec = self.spec
        base = check_inputs(spec, data)
        out_dir = Path(out_dir)
        fingerprint = task_fingerprint(spec, data, seed)
        if meta_value(out_dir, "fingerprint") == fingerprint:
            return True
        folder = groups_dir(out_dir)
        ranges = group_ranges(len(data.train), spec.group_size)
        todo = [
            g
            for g, _ in enumerate(ranges)
            if g % shard[1] == shard[0] and not _group_done(folder, g, fingerprint)
        ]
        parts: PipelineParts | None = None
        folder.mkdir(parents=True, exist_ok=True)
        for g in todo:
            lock = FileLock(str(folder / f"{_group_name(g)}.lock"))
            try:
                lock.acquire(timeout=0)
            except Timeout:
                continue  # another process inverts this group now
            try:
                if _group_done(folder, g, fingerprint):
                    continue
                if parts is None:
                    parts = PipelineParts(base, resolve_device(spec.device), spec.resolution)
                marker = _marker(fingerprint, g)
                task = InversionTask(spec, parts, [data.train[i] for i in ranges[g]], marker)
                settings = loop_settings(spec, latent_size=parts.resolution // parts.vae_factor)
                settings = replace(settings, desc=f"invert group {g + 1}/{len(ranges)}")
                if not train(
                    task, settings, folder / _group_name(g), marker, seed, progress, stop_after
                ):
                    return False
            finally:
                lock.release()
        if not all(_group_done(folder, g, fingerprint) for g in range(len(ranges))):
            return False
        with FileLock(str(folder.parent / f"{folder.name}.lock")):
            if meta_value(out_dir, "fingerprint") != fingerprint:  # not assembled by another shard
                write_folder_atomic(
                    out_dir, lambda tmp: self._assemble(data, folder, len(ranges), fingerprint, tmp)
                )
        return True

    def _assemble(
        self, data: AdaptData, folder: Path, n_groups: int, fingerprint: str, tmp: Path
    ) -> None:
        from safetensors.torch import load_file, save_file

        parts = [load_file(str(folder / _group_name(g) / EMBEDDINGS_FILE)) for g in range(n_groups)]
        tensors = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
        save_file(tensors, str(tmp / EMBEDDINGS_FILE))
        names = {c.id: c.name for c in data.classes}
        rows = [
            {"row": i, "image": str(path), "label": int(lbl), "class_name": names[int(lbl)]}
            for i, (path, lbl) in enumerate(data.train)
        ]
        (tmp / INDEX_FILE).write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
        logs = [
            (folder / _group_name(g) / "training_log.jsonl").read_text(encoding="utf-8")
            for g in range(n_groups)
        ]
        (tmp / "training_log.jsonl").write_text(logs[0], encoding="utf-8")  # group 1's curve
        write_meta(
            tmp,
            self.spec,
            data.classes,
            num_tokens=self.spec.num_tokens,
            images=len(rows),
            groups=n_groups,
            fingerprint=fingerprint,
        )

    def generator_inputs(self, out_dir: Path) -> dict[str, Any]:
        return {"model": self.spec.base, "inversion_dir": Path(out_dir)}


def _group_name(g: int) -> str:
    return f"group-{g:05d}"


def _marker(fingerprint: str, g: int) -> str:
    return f"{fingerprint}:{g}"


def _group_done(folder: Path, g: int, fingerprint: str) -> bool:
    marker = folder / _group_name(g) / MARKER_FILE
    return marker.is_file() and marker.read_text(encoding="utf-8") == _marker(fingerprint, g)
