"""Loading a diffusers text-to-image pipeline the way users do (``AutoPipelineForText2Image.
from_pretrained`` from a hub id, its local cache or a folder), with one-line errors naming the
recipe field and no safety checker: shared by the generators and the adapt methods."""

from __future__ import annotations

import inspect
import os
import re
from pathlib import Path
from typing import Any

from synthset.errors import SynthsetError, first_line

_FIELD = "generate.generator.model"
_HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")


def load_pipeline(
    model: str, dtype: Any = None, variant: str | None = None, field: str = _FIELD
) -> Any:
    """``AutoPipelineForText2Image.from_pretrained`` with one-line errors (naming the recipe
    ``field``) and no safety checker. A missing folder is reported before diffusers is
    imported (importing it can print library warnings)."""
    config = _pipeline_config(model, field)
    from diffusers import AutoPipelineForText2Image

    kwargs = {**_null_components(config), **_no_safety_checker(config), "dtype": dtype}
    if variant:
        kwargs["variant"] = variant
    try:
        return AutoPipelineForText2Image.from_pretrained(model, **kwargs)
    except (OSError, ValueError) as exc:
        raise SynthsetError(f"{field}: cannot load {model!r}: {first_line(exc)}") from None


def is_local_path(model: str) -> bool:
    """Whether ``model`` names a local path rather than a hub id (``name`` or ``org/name``)."""
    if Path(model).expanduser().exists():
        return True
    return model.startswith((".", "/", "~", "\\")) or not _HUB_ID.match(model)


def _pipeline_config(model: str, field: str) -> dict[str, Any]:
    """The pipeline's ``model_index.json`` as a dict, with a helpful error when there is none."""
    if is_local_path(model):
        return _local_config(Path(model).expanduser(), field)
    from diffusers import DiffusionPipeline

    try:
        return dict(DiffusionPipeline.load_config(model))
    except (OSError, ValueError) as exc:
        raise SynthsetError(_hub_error(model, exc, field)) from None


def _local_config(path: Path, field: str) -> dict[str, Any]:
    if not path.exists():
        raise SynthsetError(
            f"{field}: no such folder {str(path)!r}; give a diffusers pipeline folder or a hub id"
        )
    if not path.is_dir():
        raise SynthsetError(
            f"{field}: {str(path)!r} is a file; give a diffusers pipeline folder (with "
            "model_index.json), e.g. one saved with pipe.save_pretrained(folder)"
        )
    if not (path / "model_index.json").is_file():
        raise SynthsetError(
            f"{field}: {str(path)!r} is not a diffusers pipeline folder (no model_index.json); "
            "save one with pipe.save_pretrained(folder) or give a hub id"
        )
    from diffusers import DiffusionPipeline

    try:
        return dict(DiffusionPipeline.load_config(str(path)))
    except (OSError, ValueError) as exc:
        raise SynthsetError(
            f"{field}: {path / 'model_index.json'} is unreadable: {first_line(exc)}"
        ) from None


def _hub_error(model: str, exc: Exception, field: str) -> str:
    from huggingface_hub import constants

    offline = constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
    text = str(exc)
    if offline or "couldn't connect" in text.lower() or "connection" in text.lower():
        return (
            f"{field}: {model!r} is not found locally and the hub is unreachable; download it "
            f"first with `hf download {model}` or give a local folder"
        )
    return (
        f"{field}: {model!r} is not found locally or on the hub ({first_line(exc)}); check "
        f"the id (gated models need `hf auth login`), download it with `hf download {model}`, "
        "or give a local folder"
    )


def _null_components(config: dict[str, Any]) -> dict[str, None]:
    """Components saved as absent (``[null, null]`` in ``model_index.json``, e.g. SD3 without
    its T5 encoder): diffusers loads such a folder only when they are passed as ``None``."""
    return {
        name: None
        for name, value in config.items()
        if not name.startswith("_")
        and isinstance(value, list | tuple)
        and list(value)[:1] == [None]
    }


def _no_safety_checker(config: dict[str, Any]) -> dict[str, Any]:
    """Loading kwargs that skip the safety checker, for pipelines that have one."""
    import diffusers

    cls = getattr(diffusers, str(config.get("_class_name", "")), None)
    params = set(inspect.signature(cls.__init__).parameters) if isinstance(cls, type) else set()
    kwargs: dict[str, Any] = {}
    if "safety_checker" in config or "safety_checker" in params:
        kwargs["safety_checker"] = None
    if "requires_safety_checker" in config or "requires_safety_checker" in params:
        kwargs["requires_safety_checker"] = False
    return kwargs
