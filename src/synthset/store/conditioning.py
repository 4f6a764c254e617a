"""Files of learned conditionings, shared by the adapters that write them and the plan and
generators that read them.

- Per-class prompt embeddings (``generate.generator.prompt_embeds``; a class encoder writes
  them): one tensor [tokens, dim] per class name, ``<class>.pooled`` [dim] for pipelines with a
  pooled text embedding, and the unconditional input as ``__unconditional__``.
- A diffusion-inversion artifact (``adapt.method: diffusion_inversion``):
  ``embeddings.safetensors`` (``embeddings`` [N, tokens, width], and ``pooled`` [N, dim] for
  SDXL) and ``index.json`` (per row: image, label, class name)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from synthset.errors import SynthsetError

POOLED = ".pooled"
UNCONDITIONAL = "__unconditional__"
EMBEDDINGS_FILE = "embeddings.safetensors"
INDEX_FILE = "index.json"
_FIELD = "generate.generator.inversion_dir"


def read_inversion_index(folder: Path | None) -> list[dict[str, Any]]:
    """The rows of an inversion artifact, one line of error when ``folder`` is not one."""
    if folder is None:
        raise SynthsetError(
            f"{_FIELD}: kind inversion needs the folder adapt.method diffusion_inversion "
            "writes; add an adapt section with that method or set inversion_dir"
        )
    folder = Path(folder)
    if not (folder / INDEX_FILE).is_file() or not (folder / EMBEDDINGS_FILE).is_file():
        raise SynthsetError(
            f"{_FIELD}: {str(folder)!r} has no {INDEX_FILE} and {EMBEDDINGS_FILE}; run "
            "'synthset adapt' with method diffusion_inversion first"
        )
    return list(json.loads((folder / INDEX_FILE).read_text(encoding="utf-8")))
