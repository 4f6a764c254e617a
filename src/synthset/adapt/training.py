"""The one training loop every adaptation method runs.

A method describes *what* is trained as a :class:`TrainingTask` (its trainable parameters, a
loss drawn from a seeded generator, a validation loss, how to save the result); this module does
*how*: AdamW with linear warm-up, gradient accumulation, gradient clipping, mixed precision, an
EMA of the trainable weights, a progress bar with the loss, a validation loss on the real val
split every N steps, the training curve (``training_log.jsonl`` in the artifact), resumable
state, optional kept checkpoints, and an atomic final folder.

Resuming is exact: every ``checkpoint_every`` steps the whole state (trainable weights, EMA,
optimizer, step, the batch generator and torch's RNG, the log) is written atomically to
``<out_dir>.state.pt``; a rerun with the same task fingerprint continues from it and ends with
the weights of an uninterrupted run. A state whose fingerprint differs is ignored.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from tqdm.auto import tqdm

from synthset.errors import SynthsetError
from synthset.recipe import AdaptSpec

LOG_FILE = "training_log.jsonl"
LOG_EVERY = 25  # steps per training-curve point (mean loss over them)


@dataclass(frozen=True)
class LoopSettings:
    """How long and how to optimise; the method decides what."""

    steps: int
    lr: float
    warmup_steps: int = 0
    weight_decay: float = 0.0
    grad_accum: int = 1
    grad_clip: float | None = 1.0
    ema_decay: float = 0.0  # 0: no EMA, the final weights are saved
    mixed_precision: str = "no"  # no | bf16 | fp16 (fp16 on CUDA only)
    checkpoint_every: int = 250
    keep_checkpoints: bool = False  # also save the artifact at every checkpoint
    validate_every: int = 0  # 0: no validation loss
    desc: str = "adapt"
    image_size: int = 0  # > 0: tiny images on a CPU train on one thread (devices.cpu_threads)

    def lr_at(self, step: int) -> float:
        """Linear warm-up, then constant (a function of the step only, so resuming is exact)."""
        if self.warmup_steps <= 0:
            return self.lr
        return self.lr * min(1.0, (step + 1) / self.warmup_steps)


def loop_settings(spec: AdaptSpec, latent_size: int = 0) -> LoopSettings:
    """The shared loop's settings from a resolved ``adapt`` spec (``latent_size`` > 0: the
    training images' size, for the one-thread rule on a CPU)."""
    assert spec.lr is not None and spec.ema_decay is not None and spec.validate_every is not None
    return LoopSettings(
        steps=spec.steps,
        lr=spec.lr,
        warmup_steps=spec.warmup_steps,
        grad_accum=spec.grad_accum,
        ema_decay=spec.ema_decay,
        mixed_precision=spec.mixed_precision,
        checkpoint_every=spec.checkpoint_every,
        keep_checkpoints=spec.keep_checkpoints,
        validate_every=spec.validate_every,
        desc=f"adapt ({spec.method})",
        image_size=latent_size,
    )


class TrainingTask(Protocol):
    """What one method trains. ``loss`` draws all its randomness from ``gen`` (batch, noise,
    timesteps, dropout), so a resumed run draws the same batches."""

    device: torch.device

    def parameters(self) -> list[torch.nn.Parameter]:
        """The trainable parameters, in a fixed order (EMA and checkpoints follow it)."""
        ...

    def loss(self, gen: torch.Generator) -> torch.Tensor:
        """The loss of one micro-batch."""
        ...

    def validation_loss(self) -> float | None:
        """The loss on held-out real images (deterministic), or None when there are none."""
        ...

    def save(self, out_dir: Path) -> None:
        """Write the artifact from the current weights into the (empty, existing) ``out_dir``."""
        ...


# ----------------------------------------------------------------------------- state files


def state_path(out_dir: Path) -> Path:
    """Where the resumable training state of ``out_dir`` lives."""
    return out_dir.parent / (out_dir.name + ".state.pt")


def checkpoints_dir(out_dir: Path) -> Path:
    """Where kept checkpoints go: ``<out_dir>.checkpoints/step-000500``, ..."""
    return out_dir.parent / (out_dir.name + ".checkpoints")


def kept_checkpoint_dir(out_dir: Path, step: int) -> Path:
    """Where the artifact kept at ``step`` goes (``keep_checkpoints``)."""
    return checkpoints_dir(out_dir) / f"step-{step:06d}"


def save_torch_atomic(path: Path, obj: Any) -> None:
    """``torch.save`` to a temp file next to ``path``, then rename it over ``path``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_state(path: Path, fingerprint: str) -> dict[str, Any] | None:
    """The saved state if it belongs to this training, else ``None`` (it is then overwritten)."""
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a corrupt state is no worse than none: start over
        return None
    return state if state.get("fingerprint") == fingerprint else None


def remove_leftovers(out_dir: Path) -> None:
    """Delete temp files and folders a killed run left next to ``out_dir``."""
    for tmp in out_dir.parent.glob(f".{out_dir.name}.*"):
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


def write_folder_atomic(out_dir: Path, fill: Callable[[Path], None]) -> None:
    """Create ``out_dir`` whole: ``fill`` writes into a temp folder that is renamed over it."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.", suffix=".tmp"))
    tmp.chmod(0o755)  # mkdtemp makes it private; the artifact is an ordinary output folder
    try:
        fill(tmp)
        if out_dir.exists():
            old = out_dir.parent / f".{out_dir.name}.old"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out_dir, old)
            shutil.rmtree(old, ignore_errors=True)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# ----------------------------------------------------------------------------- EMA


@torch.no_grad()
def ema_update(
    ema: list[torch.Tensor], params: list[torch.Tensor], decay: float, step: int
) -> None:
    """EMA of the weights with a warm-up: the effective decay grows from 0.1 towards ``decay``."""
    d = min(decay, (1.0 + step) / (10.0 + step))
    torch._foreach_lerp_(ema, [p.detach() for p in params], 1.0 - d)


@contextlib.contextmanager
def swapped_in(
    params: list[torch.nn.Parameter], values: list[torch.Tensor] | None
) -> Iterator[None]:
    """Temporarily give ``params`` the ``values`` (the EMA weights) — for saving or sampling."""
    if values is None:
        yield
        return
    backup = [p.detach().clone() for p in params]
    with torch.no_grad():
        for p, v in zip(params, values, strict=True):
            p.copy_(v)
    try:
        yield
    finally:
        with torch.no_grad():
            for p, b in zip(params, backup, strict=True):
                p.copy_(b)


# ----------------------------------------------------------------------------- the loop


def check_precision(mode: str, device: torch.device) -> None:
    """fp16 autocast needs CUDA (its gradient scaler too); bf16 runs anywhere."""
    if mode == "fp16" and device.type != "cuda":
        raise SynthsetError(
            f"adapt.mixed_precision: fp16 needs a CUDA GPU (device is {device}); use bf16 or no"
        )


def autocast(task: TrainingTask, mode: str) -> contextlib.AbstractContextManager[Any]:
    """Mixed-precision context for the forward pass (``no``: full precision)."""
    if mode == "no":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if mode == "bf16" else torch.float16
    return torch.autocast(device_type=task.device.type, dtype=dtype)


def train(
    task: TrainingTask,
    settings: LoopSettings,
    out_dir: Path,
    fingerprint: str,
    seed: int,
    progress: bool = True,
    stop_after: int | None = None,
) -> bool:
    """Train ``task`` for ``settings.steps`` steps, then save it to ``out_dir`` atomically.

    ``stop_after`` ends the run after that step, leaving only the resumable state behind (as a
    kill would; for time-boxed jobs and tests). Returns True when the artifact was written.
    """
    from synthset.devices import cpu_threads

    check_precision(settings.mixed_precision, task.device)
    threads = (
        cpu_threads(task.device, settings.image_size)
        if settings.image_size > 0
        else contextlib.nullcontext()
    )
    with threads:  # tiny images on a CPU: one thread, restored on return
        out_dir = Path(out_dir)
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        remove_leftovers(out_dir)
        params = task.parameters()
        ema = [p.detach().clone() for p in params] if settings.ema_decay > 0 else None
        optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
        scaler = torch.amp.GradScaler(enabled=settings.mixed_precision == "fp16")
        gen = torch.Generator(device="cpu").manual_seed(seed)
        log: list[dict[str, Any]] = []
        window: list[float] = []  # losses since the last curve point
        step = 0
        spath = state_path(out_dir)
        state = load_state(spath, fingerprint)
        if state is not None and int(state["step"]) <= settings.steps:
            with torch.no_grad():
                for p, v in zip(params, state["params"], strict=True):
                    p.copy_(v)
            if ema is not None:
                ema = [t.to(task.device) for t in state["ema"]]
            optimizer.load_state_dict(state["optimizer"])
            gen.set_state(state["generator"])
            torch.set_rng_state(state["torch_rng"])
            log = json.loads(state["log"])
            window = json.loads(state["window"])
            step = int(state["step"])

        end = settings.steps if stop_after is None else min(settings.steps, stop_after)
        bar = tqdm(
            total=settings.steps,
            initial=step,
            desc=settings.desc,
            disable=not progress,
            leave=False,
        )
        if step == 0 and settings.validate_every:
            val = task.validation_loss()  # the starting point of the curve
            if val is not None:
                log.append({"step": 0, "val_loss": val})
        while step < end:
            loss = _step(task, settings, optimizer, scaler, params, gen, step)
            step += 1
            window.append(loss)
            if ema is not None:
                ema_update(ema, params, settings.ema_decay, step)
            bar.update(1)
            validate = bool(settings.validate_every) and (
                step % settings.validate_every == 0 or step == settings.steps
            )
            if validate or step % LOG_EVERY == 0 or step == settings.steps:
                point: dict[str, Any] = {"step": step, "loss": sum(window) / len(window)}
                point["lr"] = settings.lr_at(step - 1)
                window = []
                if validate:
                    with swapped_in(params, ema):
                        val = task.validation_loss()
                    if val is not None:
                        point["val_loss"] = val
                log.append(point)
                bar.set_postfix(loss=f"{point['loss']:.4f}")
            if step < settings.steps and (step % settings.checkpoint_every == 0 or step == end):
                save_torch_atomic(
                    spath,
                    {
                        "fingerprint": fingerprint,
                        "step": step,
                        "params": [p.detach().cpu() for p in params],
                        "ema": [t.cpu() for t in ema] if ema is not None else [],
                        "optimizer": optimizer.state_dict(),
                        "generator": gen.get_state(),
                        "torch_rng": torch.get_rng_state(),
                        "log": json.dumps(log),
                        "window": json.dumps(window),
                    },
                )
                if settings.keep_checkpoints:
                    _save(task, params, ema, log, kept_checkpoint_dir(out_dir, step))
        bar.close()
        if step < settings.steps:
            return False
        _save(task, params, ema, log, out_dir)
        spath.unlink(missing_ok=True)
        return True


def _step(
    task: TrainingTask,
    settings: LoopSettings,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    params: list[torch.nn.Parameter],
    gen: torch.Generator,
    step: int,
) -> float:
    """One optimiser step over ``grad_accum`` micro-batches; returns the mean loss."""
    optimizer.zero_grad(set_to_none=True)
    total = 0.0
    for _ in range(settings.grad_accum):
        with autocast(task, settings.mixed_precision):
            loss = task.loss(gen)
        if settings.grad_accum > 1:
            loss = loss / settings.grad_accum
        scaler.scale(loss).backward()
        total += float(loss.detach())
    for group in optimizer.param_groups:
        group["lr"] = settings.lr_at(step)
    if settings.grad_clip:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(params, settings.grad_clip)
    scaler.step(optimizer)
    scaler.update()
    return total


def _save(
    task: TrainingTask,
    params: list[torch.nn.Parameter],
    ema: list[torch.Tensor] | None,
    log: list[dict[str, Any]],
    out_dir: Path,
) -> None:
    """The artifact with the EMA weights (if any) and the training curve, written atomically."""

    def fill(tmp: Path) -> None:
        with swapped_in(params, ema):
            task.save(tmp)
        lines = "".join(json.dumps(point) + "\n" for point in log)
        (tmp / LOG_FILE).write_text(lines, encoding="utf-8")

    write_folder_atomic(out_dir, fill)
