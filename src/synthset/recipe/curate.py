"""The curate section: which scores to compute for every synthetic image, the rules that turn
them into the kept view, and the leak check against the real evaluation splits."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from synthset.recipe.base import Strict

#: Per-image scores; every one is "higher is better" (typicality is minus the relative
#: Mahalanobis distance, so the atypical images score low).
ScorerName = Literal["label_agreement", "typicality", "clip"]


class RuleSpec(Strict):
    """One rule on one score, applied per class; an image is kept only if every rule keeps it.
    Give exactly one of ``threshold``, ``class_thresholds``, ``percentile``, ``top_k``."""

    score: ScorerName = Field(description="The score the rule reads (listed in curate.scorers).")
    threshold: float | None = Field(None, description="Drop images scoring below this.")
    class_thresholds: dict[str, float] | None = Field(
        None, description="A threshold per class name (classes not listed keep everything)."
    )
    percentile: float | Literal["auto"] | None = Field(
        None,
        description="Drop the lowest-scoring percentile (0-100) of each class; 'auto' picks it "
        "among auto_percentiles by a short proxy classifier's accuracy on the real val split.",
    )
    top_k: int | None = Field(None, ge=1, description="Keep the k best-scoring images per class.")
    auto_percentiles: list[float] = Field(
        [0, 10, 20, 30, 40, 50],
        min_length=2,
        description="The percentiles 'auto' chooses among (0: keep all).",
    )

    @model_validator(mode="after")
    def _one_kind(self) -> RuleSpec:
        given = [
            k
            for k in ("threshold", "class_thresholds", "percentile", "top_k")
            if getattr(self, k) is not None
        ]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of threshold, class_thresholds, percentile, top_k "
                f"(got {', '.join(given) or 'none'})"
            )
        if isinstance(self.percentile, float | int) and not 0 <= self.percentile < 100:
            raise ValueError(f"percentile must be in [0, 100) (got {self.percentile})")
        if any(not 0 <= p < 100 for p in self.auto_percentiles):
            raise ValueError("auto_percentiles must lie in [0, 100)")
        if self.score == "label_agreement":
            bounds = [self.threshold, *(self.class_thresholds or {}).values()]
            if any(b is not None and not 0 <= b <= 1 for b in bounds):
                raise ValueError("a label_agreement threshold is a probability: give 0 to 1")
        return self


class LeakSpec(Strict):
    """Near-duplicates of real evaluation images: always dropped, and counted in the report.
    Similarity is the best normalised correlation of the two images (grey, ``size``×``size``)
    over shifts up to ``max_shift`` of the side, so shifted or re-encoded copies are found."""

    splits: list[Literal["val", "test"]] = Field(
        ["val", "test"],
        description="Real splits a synthetic image must not copy ([] turns the check off; "
        "'test' is read here, before evaluation, for this check only).",
    )
    similarity: float = Field(
        0.99,
        gt=0,
        le=1,
        description="At or above this similarity an image is a leak (on the bundled digits, "
        "shifted and JPEG-re-encoded copies score >= 0.993, distinct digits <= 0.989).",
    )
    size: int | None = Field(
        None,
        ge=4,
        le=128,
        description="Side the images are compared at; None: the evaluation size, at most 32 "
        "(upsampling small images blurs them and makes distinct ones look alike).",
    )
    max_shift: float = Field(
        0.125, ge=0, le=0.5, description="Largest shift tried, as a fraction of the side."
    )


class CurateSpec(Strict):
    """``synthset curate``: score every synthetic image, keep those the rules keep. The result
    is a view (``curate/kept.jsonl``) that evaluation, fidelity and the report read; no image is
    deleted, and a changed rule recomputes only the view, not the scores."""

    scorers: list[ScorerName] = Field(
        ["label_agreement", "typicality"],
        description="label_agreement: the image's own-label probability under a classifier "
        "trained on the real train split; typicality: minus the relative Mahalanobis distance "
        "of its features (that classifier's) to its class; clip: CLIP score against the class "
        "prompts (needs clip_model).",
    )
    rules: list[RuleSpec] = Field([], description="Rules that drop images; all must keep one.")
    target_per_class: int | None = Field(
        None,
        ge=1,
        description="After the rules, keep at most this many per class, best 'rank_by' first "
        "(with generate.overgenerate to make some spare).",
    )
    rank_by: ScorerName = Field(
        "label_agreement", description="The score target_per_class ranks by."
    )
    selection: Literal["top_k", "equal", "temperature", "complexity"] = Field(
        "top_k",
        description="How target_per_class picks among the survivors (G-NoCL): top_k by "
        "rank_by; equal: an equal share per generator (generate.generators), each its best; "
        "temperature: shares by softmax(generator's mean rank_by score / temperature); "
        "complexity: mid-range typicality with little overlap with what is already kept.",
    )
    temperature: float = Field(
        0.1, gt=0, description="selection 'temperature': lower favours the best generator more."
    )
    dedup_similarity: float | None = Field(
        None,
        gt=0,
        le=1,
        description="Drop a synthetic image at least this similar to an earlier kept one of "
        "its class (the leak check's similarity); None keeps near-duplicates.",
    )
    compare_by: Literal["pixels", "phash", "features"] = Field(
        "pixels",
        description="How the leak check and dedup measure closeness: pixels (best correlation "
        "over small shifts), phash (share of equal perceptual-hash bits; cheap at any scale, "
        "robust to re-encoding) or features (cosine of the reference classifier's features). "
        "Their thresholds (leak_check.similarity, dedup_similarity) are in its units.",
    )
    leak_check: LeakSpec = LeakSpec()
    classifier: str = Field(
        "small_cnn", description="The reference classifier's architecture (as evaluate's)."
    )
    batchnorm: Literal["synthetic", "real"] = Field(
        "synthetic",
        description="label_agreement: the reference's batch-norm statistics re-estimated on the "
        "synthetic images (AdaBN), so a global shift (bolder, brighter) is not read as a wrong "
        "label; 'real' keeps the real-train statistics (on the digits benchmark they put most "
        "generated digits of several classes under 0.3).",
    )
    epochs: int = Field(20, ge=1, description="Epochs of the reference classifier.")
    proxy_epochs: int = Field(10, ge=1, description="Epochs of each 'auto' proxy classifier.")
    proxy_train_set: Literal["synthetic", "real+synthetic"] = Field(
        "synthetic",
        description="What each 'auto' proxy classifier trains on: the kept synthetic images, or "
        "the real train split mixed with them at evaluate.real_batch_fraction (choose the "
        "percentile for augmenting real data rather than for replacing it).",
    )
    clip_model: str | None = Field(
        None,
        description="CLIP for the clip scorer: a local transformers folder (or cached hub id), "
        "or open_clip:<architecture>@<checkpoint file>.",
    )
    clip_templates: list[str] = Field(
        ["a photo of a {class}."],
        min_length=1,
        description="Prompts per class for the clip scorer; an image scores the mean over them.",
    )
    min_per_class: int = Field(
        1, ge=0, description="A rule leaving fewer images in a class is a one-line error."
    )
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N or mps.")
    batch_size: int = Field(256, ge=1, description="Images per scoring batch.")

    @model_validator(mode="after")
    def _consistent(self) -> CurateSpec:
        wanted = {r.score for r in self.rules}
        if self.target_per_class is not None:
            wanted.add(self.rank_by)
        missing = sorted(wanted - set(self.scorers))
        if missing:
            raise ValueError(f"the rules read {', '.join(missing)}: add it to curate.scorers")
        if self.selection == "complexity" and "typicality" not in self.scorers:
            raise ValueError("selection 'complexity' reads typicality: add it to curate.scorers")
        if "clip" in self.scorers and self.clip_model is None:
            raise ValueError("scorer 'clip' needs curate.clip_model (a local CLIP folder)")
        if any("{class}" not in t for t in self.clip_templates):
            raise ValueError("every clip_templates entry needs the {class} placeholder")
        return self
