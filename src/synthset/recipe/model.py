"""The whole Recipe: its cross-section rules, stage fingerprints, and the tune section."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from synthset.recipe.adapt import AdaptSpec
from synthset.recipe.base import Strict, _model_in
from synthset.recipe.curate import CurateSpec
from synthset.recipe.data import ClassesSpec, RealDataSpec
from synthset.recipe.evaluate import EvaluateSpec, ReportSpec
from synthset.recipe.export import ExportSpec
from synthset.recipe.generate import GenerateSpec
from synthset.recipe.labels import LabelsSpec
from synthset.recipe.prompts import PromptsSpec
from synthset.recipe.retrieve import RetrieveSpec
from synthset.recipe.scale import SlurmSpec

TUNABLE_SECTIONS = ("generate", "prompts", "adapt")


class TuneParam(Strict):
    """One knob of a tuning search space: a range (``low``, ``high``) or a list of ``choices``.

    Int fields (e.g. generate.generator.steps) are searched as integers, float fields as floats."""

    low: float | None = Field(None, description="Range start (inclusive).")
    high: float | None = Field(None, description="Range end (inclusive).")
    log: bool = Field(False, description="Search the range on a log scale.")
    step: float | None = Field(None, gt=0, description="Range step (int ranges default to 1).")
    choices: list[str | int | float | bool | None] | None = Field(
        None, min_length=1, description="Categorical values (instead of low/high)."
    )

    @model_validator(mode="after")
    def _range_or_choices(self) -> TuneParam:
        has_range = self.low is not None or self.high is not None
        if self.choices is not None:
            if has_range or self.log or self.step is not None:
                raise ValueError("give either choices or low/high (with log/step), not both")
            return self
        if self.low is None or self.high is None:
            raise ValueError("give low and high (a range) or choices (a list)")
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) is above high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        if self.log and self.step is not None:
            raise ValueError("log and step cannot be combined")
        return self


class TuneSpec(Strict):
    """``synthset tune``: an Optuna search over generation knobs that maximizes the validation
    accuracy of a short proxy classifier trained on the synthetic images only."""

    space: dict[str, TuneParam] = Field(
        {},
        description="Knobs by dotted recipe path, e.g. {generate.generator.guidance_scale: "
        "{low: 0.5, high: 3}, generate.generator.steps: {choices: [10, 20, 30]}}.",
    )
    stages: list[dict[str, TuneParam]] = Field(
        [],
        description="Several spaces searched one after another, each stage fixing the best "
        "values of the ones before (instead of 'space').",
    )
    n_trials: int = Field(8, ge=1, description="Finished trials per stage (a rerun tops up).")
    timeout: float | None = Field(
        None, gt=0, description="Stop starting new trials of a stage after this many seconds."
    )
    images_per_class: int = Field(
        20, ge=1, description="Synthetic images per class of each trial (smaller than a full run)."
    )
    proxy_epochs: int = Field(8, ge=1, description="Epochs of each trial's proxy classifier.")
    start_from_recipe: bool = Field(
        True,
        description="The first trial of a study tries the recipe's own values (those inside "
        "the space), so the best found is never worse than them on the proxy.",
    )
    sampler: Literal["tpe", "random"] = Field(
        "tpe", description="Optuna sampler, seeded with the recipe seed."
    )
    pruner: Literal["median", "hyperband", "none"] = Field(
        "median", description="Stop unpromising trials early on their per-epoch val accuracy."
    )
    pruner_startup_trials: int = Field(
        3, ge=0, description="median: trials that are never pruned, to collect a baseline."
    )
    pruner_warmup_epochs: int = Field(
        2, ge=0, description="median: epochs of every trial that are never pruned."
    )

    @field_validator("space")
    @classmethod
    def _space_paths(cls, v: dict[str, TuneParam]) -> dict[str, TuneParam]:
        for path in v:
            check_tune_path(path)
        return v

    @field_validator("stages")
    @classmethod
    def _stage_paths(cls, v: list[dict[str, TuneParam]]) -> list[dict[str, TuneParam]]:
        for i, stage in enumerate(v):
            if not stage:
                raise ValueError(f"stage {i + 1} is empty; give at least one knob")
            for path in stage:
                check_tune_path(path)
        return v

    @model_validator(mode="after")
    def _one_space(self) -> TuneSpec:
        if bool(self.space) == bool(self.stages):
            raise ValueError("give exactly one of 'space' (one search) or 'stages' (several)")
        return self

    def spaces(self) -> list[dict[str, TuneParam]]:
        """The search spaces in the order they are searched."""
        return list(self.stages) if self.stages else [dict(self.space)]


def tune_field(path: str) -> Any:
    """The pydantic ``FieldInfo`` a dotted recipe path names (see :func:`check_tune_path`)."""
    current: Any = Recipe
    field = None
    for part in path.split("."):
        field = current.model_fields[part]
        current = _model_in(field.annotation)
    return field


def check_tune_path(path: str) -> None:
    """Raise ValueError unless ``path`` names a tunable value of the recipe model."""
    parts = path.split(".")
    if parts[0] not in TUNABLE_SECTIONS:
        raise ValueError(
            f"{path!r}: only knobs under {', '.join(TUNABLE_SECTIONS)} can be tuned "
            "(real data, classes, seed and evaluation stay fixed)"
        )
    current: Any = Recipe
    for i, part in enumerate(parts):
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            raise ValueError(f"{path!r}: {'.'.join(parts[:i])} is a value, not a section")
        field = current.model_fields.get(part)
        if field is None:
            where = ".".join(parts[:i]) or "the recipe"
            raise ValueError(
                f"{path!r} is not a recipe field; {where} has: {', '.join(current.model_fields)}"
            )
        current = _model_in(field.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        raise ValueError(f"{path!r} is a section; name one of its values, e.g. {path}.steps")


class Recipe(Strict):
    """A whole synthset run."""

    name: str = "synthset-run"
    seed: int = Field(
        0,
        ge=0,
        le=2**32 - 1,
        description="Every image's seed derives from this and its item id (0 to 2^32 - 1).",
    )
    output_dir: Path = Path("runs/synthset-run")
    classes: ClassesSpec
    real: RealDataSpec | None = None
    adapt: AdaptSpec | None = None
    prompts: PromptsSpec = PromptsSpec()
    generate: GenerateSpec | None = Field(
        None,
        description="Omit to only evaluate an existing synthetic set (evaluate.synthetic_dir).",
    )
    curate: CurateSpec | None = Field(
        None,
        description="'synthset curate': score the synthetic images and keep the good ones "
        "(a view evaluation reads; nothing is deleted).",
    )
    labels: LabelsSpec | None = Field(
        None,
        description="'synthset label': masks, boxes and polygons of the objects in every "
        "synthetic image (for detection and segmentation exports).",
    )
    export: ExportSpec | None = Field(
        None, description="'synthset export': the synthetic set in other tools' formats."
    )
    retrieve: RetrieveSpec | None = Field(
        None,
        description="'synthset retrieve': real images retrieved per class from an unlabeled "
        "pool, the baseline to compare synthetic data with (evaluate.train_sets: retrieved).",
    )
    evaluate: EvaluateSpec | None = None
    report: ReportSpec = ReportSpec()
    tune: TuneSpec | None = Field(
        None, description="'synthset tune': an Optuna search over generation knobs."
    )
    slurm: SlurmSpec | None = Field(
        None, description="'synthset launch slurm': the SLURM job array that runs the plan."
    )

    @model_validator(mode="after")
    def _consistent(self) -> Recipe:
        if self.tune is not None and (self.generate is None or self.real is None):
            raise ValueError(
                "'tune' generates trial datasets and scores them on real validation images: "
                "it needs 'generate' and 'real' sections"
            )
        gspec = self.generate
        if (
            self.tune is not None
            and gspec is not None
            and (gspec.generators is not None or gspec.generator.uses_real_images)
        ):
            raise ValueError(
                "'tune' searches one text-conditioned generator's knobs: use "
                "'generate.generator' without real-image modes (img2img, inpaint, strength)"
            )
        if self.tune is not None and gspec is not None:
            gen = gspec.generator
            for path in (p for space in self.tune.spaces() for p in space):
                parts = path.split(".")
                if parts[:2] == ["generate", "generator"] and len(parts) == 3:
                    why = gen.ignored_by_kind(gen.kind, parts[2], gen.strength)
                    if why:
                        raise ValueError(f"tune.space {path}: {why}")
        adapted_base = self._pipeline_adapt_base()
        for gen in self.generate.members if self.generate is not None else []:
            if gen.kind == "tiny" and gen.model is None and self.adapt is None:
                raise ValueError(
                    "generate.generator.kind 'tiny' needs an 'adapt' section or generator.model"
                )
            if gen.kind in ("text2image", "img2img", "inpaint") and not (gen.model or adapted_base):
                raise ValueError(f"generate.generator.kind {gen.kind!r} needs generator.model")
            if gen.uses_real_images and self.real is None:
                raise ValueError(
                    f"generate.generator.kind {gen.kind!r} starts from real images: add a "
                    "'real' section (e.g. real: {source: imagefolder, path: data/train})"
                )
        if self.adapt is not None and self.real is None:
            raise ValueError("'adapt' trains on real images: add a 'real' section")
        if self.generate is not None and self.generate.overgenerate > 1 and self.curate is None:
            raise ValueError(
                "generate.overgenerate makes spare images for curation to choose from: add a "
                "'curate' section or remove overgenerate"
            )
        if self.labels is not None:
            self._check_labels()
        if self.retrieve is not None:
            self._check_retrieve()
        if self.export is not None and self.generate is None:
            raise ValueError("'export' writes the run's generated images: add a 'generate' section")
        if self.curate is not None:
            if self.generate is None or self.real is None:
                raise ValueError(
                    "'curate' scores the run's generated images against real ones: it needs "
                    "'generate' and 'real' sections"
                )
            if self.evaluate is not None and self.evaluate.synthetic_dir is not None:
                raise ValueError(
                    "'curate' selects from the run's own images: drop evaluate.synthetic_dir "
                    "or the curate section"
                )
            if self.generate.overgenerate > 1 and self.curate.rank_by not in self.curate.scorers:
                raise ValueError(
                    f"generate.overgenerate keeps the best images_per_class by curate.rank_by "
                    f"({self.curate.rank_by}): add it to curate.scorers"
                )
        if self.evaluate is not None:
            if self.real is None:
                raise ValueError("'evaluate' tests on real images: add a 'real' section")
            if "uncurated" in self.evaluate.train_sets and self.curate is None:
                raise ValueError(
                    "evaluate.train_sets 'uncurated' is the set before curation: add a 'curate' "
                    "section or drop it"
                )
            wants_retrieved = any(s.startswith("retrieved") for s in self.evaluate.train_sets)
            if wants_retrieved and self.retrieve is None:
                raise ValueError(
                    "evaluate.train_sets 'retrieved' trains on images retrieved from a pool: "
                    "add a 'retrieve' section (retrieve: {pool: <folder>, by: clip, ...})"
                )
            wants_synthetic = any("synthetic" in s for s in self.evaluate.train_sets)
            if wants_synthetic and self.generate is None and self.evaluate.synthetic_dir is None:
                raise ValueError(
                    "evaluate trains on synthetic images: add a 'generate' section or set "
                    "evaluate.synthetic_dir to an ImageFolder"
                )
        return self

    def _check_retrieve(self) -> None:
        """Retrieval checks pool images against the real splits and, by default, matches the
        synthetic set's counts."""
        spec = self.retrieve
        assert spec is not None
        if self.real is None:
            raise ValueError(
                "'retrieve' keeps pool images that do not copy the real val/test images (and "
                "prototypes come from real train): add a 'real' section"
            )
        has_synthetic = self.generate is not None or (
            self.evaluate is not None and self.evaluate.synthetic_dir is not None
        )
        if spec.per_class is None and not has_synthetic:
            raise ValueError(
                "retrieve.per_class: null matches the synthetic set's counts, but the recipe "
                "makes no synthetic images; set retrieve.per_class (images per class)"
            )

    def _check_labels(self) -> None:
        """Labels come from generation: the generator must be one that can record them."""
        labels = self.labels
        assert labels is not None
        if self.generate is None:
            raise ValueError("'labels' labels the run's generated images: add a 'generate' section")
        for gen in self.generate.members:
            if labels.method == "inpaint_mask" and gen.kind != "inpaint":
                raise ValueError(
                    f"labels.method inpaint_mask takes the inpaint mode's object mask, but "
                    f"generate.generator.kind is {gen.kind!r}: use kind inpaint or "
                    "method cross_attention"
                )
            if labels.method == "cross_attention" and (
                gen.kind not in ("text2image", "img2img", "inpaint") or gen.prompt_embeds
            ):
                raise ValueError(
                    f"labels.method cross_attention traces the class words of text prompts "
                    f"through a diffusers UNet; generator kind {gen.kind!r}"
                    f"{' with prompt_embeds' if gen.prompt_embeds else ''} has none: use "
                    "kind text2image (img2img, inpaint) with text prompts"
                )
            heat = labels.attention.heat if labels.attention is not None else None
            if heat == "guidance" and gen.guidance_scale <= 1:
                raise ValueError(
                    "labels.attention.heat guidance compares the conditional and unconditional "
                    f"predictions, but generate.generator.guidance_scale is {gen.guidance_scale} "
                    "(no unconditional pass): set it above 1 or use heat: attention"
                )

    def _pipeline_adapt_base(self) -> str | None:
        """For an adapt method that adapts a diffusers pipeline: its base, taken from the
        generator's model when ``adapt.base`` is unset (written into the spec); else None."""
        if self.adapt is None or not self.adapt.uses_pipeline:
            return None
        method = self.adapt.method
        members = self.generate.members if self.generate is not None else []
        if any(g.kind == "tiny" for g in members):
            raise ValueError(
                f"adapt.method {method} adapts a diffusers pipeline, which the tiny generator "
                "cannot load; set generate.generator.kind: text2image (or img2img, inpaint)"
            )
        if self.adapt.base is None:
            models = sorted({g.model for g in members if g.model})
            if len(models) != 1:
                raise ValueError(
                    f"adapt.base: method {method} needs the diffusers pipeline to adapt; set "
                    "adapt.base (hub id or folder) or generate.generator.model"
                )
            self.adapt.base = models[0]
        return self.adapt.base

    def fingerprint(self, *parts: str) -> str:
        """A short hash of the named recipe parts (sections, or dotted sub-sections such as
        ``evaluate.fidelity``) and the seed: what a stage's output depends on."""
        # a dotted part under an absent section is left out, so adding an optional section
        # (e.g. labels.attention) keeps the fingerprints of recipes without it
        values = {p: self._part(p) for p in parts}
        data = {
            p: _jsonable(v, _NOT_FINGERPRINTED.get(p))
            for p, v in values.items()
            if v is not None or "." not in p
        }
        data["seed"] = self.seed
        # input files count by content, so editing a caption or class file redoes its stages
        inputs = {"classes": self.classes.file, "prompts": self.prompts.file}
        files = {p: _file_digest(inputs[p]) for p in parts if inputs.get(p)}
        if files:  # only then, so recipes without input files keep their fingerprints
            data["files"] = files
        blob = json.dumps(data, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def _part(self, path: str) -> Any:
        value: Any = self
        for name in path.split("."):
            value = getattr(value, name) if value is not None else None
        return value


def _file_digest(path: Path | None) -> str | None:
    """sha256 of a file's bytes (None when it does not exist yet)."""
    if path is None or not Path(path).is_file():
        return None
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


#: Fields left out of a section's fingerprint: sub-sections with a stage (and fingerprint) of their
#: own, so changing them redoes only that stage, and settings that change speed, never results.
_NOT_FINGERPRINTED: dict[str, set[str]] = {
    "adapt": {"checkpoint"},  # which kept artifact to generate with, not what is trained
    "evaluate": {"fidelity", "continual", "executor", "workers", "ray"},
    "generate": {"executor", "workers", "lease_seconds", "max_attempts", "ray", "queue_dir"},
    "prompts": {"shortfall"},  # whether to stop on too few prompts, not which prompts
}


def _jsonable(value: Any, exclude: set[str] | None = None) -> Any:
    return value.model_dump(mode="json", exclude=exclude) if isinstance(value, BaseModel) else value
