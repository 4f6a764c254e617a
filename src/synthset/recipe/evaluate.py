"""The evaluate and report sections: CAS, fidelity metrics and the HTML report."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from synthset.recipe.base import Strict
from synthset.recipe.scale import RayClusterSpec


class FidelitySpec(Strict):
    """FID, KID, precision/recall, density/coverage, diversity and CLIP score of the synthetic
    set against the real one, overall and per class (``evaluate/fidelity.json``)."""

    enabled: bool = Field(
        True, description="Compute the metrics when there are synthetic images (a few seconds)."
    )
    extractor: str = Field(
        "auto",
        description="Feature extractor: auto (inception if inception_weights is set, else "
        "classifier), inception, classifier (trained on the real train split), "
        "torchscript:<file>, torchvision:<arch> or timm:<arch> (with 'weights').",
    )
    inception_weights: Path | None = Field(
        None,
        description="Local Inception-v3 weights: torch-fidelity's pt_inception-2015-12-05 .pth "
        "(standard FID) or torchvision's inception_v3 weights (.pth / .safetensors).",
    )
    classifier_epochs: int | None = Field(
        10,
        ge=1,
        description="Training epochs of the 'classifier' extractor (on real train, selected on "
        "val); null: evaluate.epochs.",
    )
    weights: Path | None = Field(
        None, description="A .safetensors state dict for a torchvision:/timm: extractor."
    )
    extractor_image_size: int = Field(
        224, ge=8, description="Input size of a torchscript:/torchvision:/timm: extractor."
    )
    real_split: Literal["train", "val"] = Field(
        "train", description="The real split the synthetic images are compared with."
    )
    max_images_per_class: int = Field(
        500, ge=2, description="Seeded subsample per class and set (bounds time and memory)."
    )
    kid_subset_size: int = Field(
        100, ge=2, description="KID subset size (shrinks to a smaller set's size)."
    )
    kid_subsets: int = Field(50, ge=1, description="Random KID subsets averaged.")
    k: int = Field(5, ge=1, description="Nearest neighbours for precision/recall/density/coverage.")
    clip_model: str | None = Field(
        None,
        description="Local CLIP (transformers folder or cached hub id) for the CLIP score; "
        "null skips it.",
    )
    batch_size: int = Field(64, ge=1, description="Images per feature-extractor batch.")
    device: str = "auto"


class ContinualSpec(Strict):
    """Online class-incremental learning on a stream (G-NoCL's protocol): classes arrive
    ``classes_per_task`` at a time, each image is seen once, a replay buffer may keep a few;
    A_auc (accuracy over time) and A_last on the real test split (``evaluate/continual.json``)."""

    train_sets: list[Literal["real", "synthetic"]] = Field(
        ["real", "synthetic"],
        min_length=1,
        description="Streams to learn from: the real train split and/or the synthetic set (the "
        "curated view when the recipe curates).",
    )
    methods: list[Literal["er", "der++", "finetune"]] = Field(
        ["er"],
        min_length=1,
        description="er: experience replay from a reservoir buffer; der++: dark experience "
        "replay (the buffer also keeps logits, matched with der_alpha x MSE, plus der_beta x "
        "cross-entropy on buffer labels); finetune: no buffer (the lower bound).",
    )
    classes_per_task: int = Field(2, ge=1, description="New classes per task.")
    class_order_seed: int = Field(0, description="Seed of the classes' arrival order.")
    buffer_size: int = Field(100, ge=1, description="er: images kept for replay.")
    batch_size: int = Field(16, ge=1, description="Stream images per step.")
    replay_batch_size: int = Field(16, ge=0, description="er: buffer images added per step.")
    online_iterations: int = Field(
        3, ge=1, le=64, description="Gradient steps per stream batch (G-NoCL's online_iter)."
    )
    der_alpha: float = Field(0.1, ge=0, description="der++: weight of the logit-matching MSE.")
    der_beta: float = Field(0.5, ge=0, description="der++: weight of the buffer-label loss.")
    lr: float = Field(1e-3, gt=0, description="Adam learning rate.")
    augment: bool | Literal["shift", "shift+flip"] = Field(
        True, description="As evaluate.augment, on stream and replay images."
    )
    eval_every: int = Field(
        100, ge=1, description="Stream images between two anytime evaluations (the A_auc curve)."
    )
    classifier: str = Field("small_cnn", description="The learner (as evaluate.classifier).")
    seeds: list[int] = Field([0, 1, 2], min_length=1, description="Stream order and init seeds.")


class EvaluateSpec(Strict):
    """Classification Accuracy Score: train on each set, test on held-out real images."""

    train_sets: list[
        Literal[
            "real", "synthetic", "real+synthetic", "uncurated", "retrieved", "retrieved+synthetic"
        ]
    ] = Field(
        ["real", "synthetic", "real+synthetic"],
        min_length=1,
        description="'synthetic' is the curated view when the recipe curates; 'uncurated' "
        "(with a curate section) trains on every generated image, for the before/after; "
        "'retrieved' (with a retrieve section) trains on real images retrieved from a pool.",
    )
    classifier: str = Field(
        "small_cnn",
        description="small_cnn, a torchvision model name (resnet18, ...), or timm:<name>.",
    )
    image_size: int | None = Field(
        None, ge=4, description="Resize every image to this size; default: the real images' size."
    )
    channels: Literal[1, 3] | None = Field(None, description="Default: the real images' channels.")
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(128, ge=1)
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(5e-4, ge=0)
    seeds: list[int] = Field([0], min_length=1)
    augment: bool | Literal["shift", "shift+flip"] = Field(
        True,
        description="true/shift: random shifts of up to 1/8 of the side (random crop of the "
        "zero-padded image); shift+flip also flips left-right (natural images, not digits or "
        "text); false: none. Runs on the training device.",
    )
    optimizer: Literal["adamw", "sgd"] = Field(
        "adamw", description="adamw, or sgd with momentum 0.9 and Nesterov; both cosine-annealed."
    )
    classifier_weights: Path | None = Field(
        None,
        description="Start from these local weights (.safetensors, or a .pt/.pth state dict) "
        "instead of from scratch; the head is re-initialised when its shape differs.",
    )
    input_normalization: Literal["auto", "minus_one_one", "imagenet", "clip"] = Field(
        "auto",
        description="The pixel statistics the classifier sees: minus_one_one: images in "
        "[-1, 1]; imagenet / clip: (x - mean) / std with those datasets' per-channel "
        "statistics; auto: with classifier_weights, the weights' own (timm's pretrained_cfg "
        "for timm: models, ImageNet's for torchvision models, [-1, 1] for small_cnn and "
        "cifar_resnet), otherwise [-1, 1].",
    )
    protocol: Literal["scratch", "linear_probe", "finetune"] = Field(
        "scratch",
        description="scratch: train the classifier from scratch (or from classifier_weights); "
        "linear_probe: a logistic regression on the frozen penultimate features of "
        "classifier with classifier_weights (its L2 strength chosen on val from probe_c); "
        "finetune: start from classifier_weights with a new head, backbone at "
        "backbone_lr_scale x lr, optionally WiSE-FT (wise_ft_alphas, chosen on val).",
    )
    probe_c: list[float] = Field(
        [0.01, 0.1, 1.0, 10.0, 100.0],
        min_length=1,
        description="linear_probe: inverse L2 strengths tried (scikit-learn's C); the best on "
        "val is tested.",
    )
    backbone_lr_scale: float = Field(
        1.0,
        gt=0,
        le=1,
        description="Every layer but the last linear one (the head) learns at lr x this "
        "(layer-wise lr for fine-tuning a pretrained backbone, e.g. 0.1).",
    )
    wise_ft_alphas: list[float] = Field(
        [],
        description="finetune: WiSE-FT — weights (1 - a) x pretrained + a x fine-tuned "
        "(backbone; the head stays fine-tuned) for each a, e.g. [0.25, 0.5, 0.75]; the best "
        "on val (with a = 1, plain fine-tuning) is tested. []: off.",
    )
    zero_shot_clip: str | None = Field(
        None,
        description="A local CLIP (transformers folder or open_clip:<arch>@<file>) whose "
        "zero-shot classifier (class prompts, no training) is scored on the real test split "
        "as the study's reference row.",
    )
    zero_shot_templates: list[str] = Field(
        ["a photo of a {}."],
        min_length=1,
        description="zero_shot_clip: prompts per class ('{}' is the class name), averaged.",
    )
    real_batch_fraction: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="Mixed sets: this share of every batch is real, the rest synthetic (like "
        "--real-bs/--syn-bs); an epoch is one pass over the real images. null: concatenate.",
    )
    mixed_epoch: Literal["real", "union"] = Field(
        "real",
        description="Mixed sets (real_batch_fraction): an epoch is one pass over the real images "
        "(real), or as many batches as one pass over real and synthetic together (union: a "
        "small real subset then still trains as long as its synthetic images ask).",
    )
    real_batchnorm: bool = Field(
        False,
        description="Mixed sets: after every epoch, re-estimate batch-norm statistics on the "
        "real train images only (AdaBN), so evaluation on real images uses real statistics.",
    )
    ema_epochs: float | None = Field(
        None,
        gt=0,
        description="Score and keep an exponential moving average of the classifier's weights "
        "(and batch-norm statistics) over about this many recent epochs instead of the raw "
        "weights: smooths the epoch-to-epoch noise that model selection on a small validation "
        "split would otherwise pick from. null: the raw weights.",
    )
    synthetic_multipliers: list[float] = Field(
        [],
        description="Scaling study: also train on synthetic sets of k x the real train size "
        "(per class), e.g. [0.5, 1, 2, 4].",
    )
    synthetic_counts: list[int] = Field(
        [],
        description="Absolute-count study: also train on exactly this many synthetic images per "
        "class, e.g. [100, 1000] (a class with fewer is an error).",
    )
    real_subsets: list[float] = Field(
        [],
        description="Sample-complexity study: also train on these fractions of the real train "
        "split, alone and with all synthetic images, e.g. [0.1, 0.25, 0.5].",
    )
    device: str = "auto"
    trackers: list[Literal["jsonl", "tensorboard", "wandb", "mlflow"]] = Field(
        ["jsonl"],
        description="Training curves go to: jsonl (evaluate/metrics.jsonl), tensorboard, wandb "
        "(offline) or mlflow (file store in the run folder).",
    )
    synthetic_dir: Path | None = Field(
        None, description="Evaluate another synthetic ImageFolder instead of this run's images."
    )
    ood_test: Path | None = Field(
        None,
        description="An out-of-domain test set: another real ImageFolder with the same classes "
        "(e.g. sketches of the photographed classes). CAS and continual learning report "
        "their accuracy on it too; it never selects anything.",
    )
    executor: Literal["local", "ray", "slurm"] = Field(
        "local",
        description="Who runs the study's trainings (one per train set and seed): local (this "
        "process, or 'workers' processes), ray (one Ray task each, evaluate.ray) or slurm (a "
        "job array with the recipe's slurm settings, submitted with submitit). Each finished "
        "training is saved at once, so a killed study resumes where it stopped.",
    )
    workers: int = Field(
        1,
        ge=1,
        le=256,
        description="executor local: trainings run at once in worker processes (one GPU each "
        "when there are several); 1: in this process.",
    )
    ray: RayClusterSpec = Field(
        default_factory=RayClusterSpec,
        description="executor ray: the cluster and each task's CPUs/GPUs.",
    )
    fidelity: FidelitySpec = Field(FidelitySpec(), description="Fidelity and diversity metrics.")
    continual: ContinualSpec | None = Field(
        None, description="Continual learning on a stream of the classes (off when absent)."
    )

    @field_validator("synthetic_multipliers")
    @classmethod
    def _positive_multipliers(cls, v: list[float]) -> list[float]:
        if any(k <= 0 for k in v):
            raise ValueError("every multiplier must be > 0, e.g. [0.5, 1, 2, 4]")
        return sorted(set(v))

    @field_validator("wise_ft_alphas")
    @classmethod
    def _alphas(cls, v: list[float]) -> list[float]:
        if any(not 0 <= a <= 1 for a in v):
            raise ValueError("every WiSE-FT alpha is between 0 and 1, e.g. [0.25, 0.5, 0.75]")
        return sorted(set(v))

    @model_validator(mode="after")
    def _pretrained(self) -> EvaluateSpec:
        if self.protocol != "scratch" and self.classifier_weights is None:
            raise ValueError(
                f"evaluate.protocol {self.protocol} starts from a pretrained backbone: set "
                "evaluate.classifier_weights to its local weights (.safetensors or a state "
                "dict; nothing is downloaded)"
            )
        if any("{}" not in t for t in self.zero_shot_templates):
            raise ValueError("every evaluate.zero_shot_templates entry needs '{}' for the class")
        if self.wise_ft_alphas and self.protocol != "finetune":
            raise ValueError(
                "evaluate.wise_ft_alphas interpolate a fine-tuning: set protocol: finetune"
            )
        return self

    @field_validator("synthetic_counts")
    @classmethod
    def _positive_counts(cls, v: list[int]) -> list[int]:
        if any(n < 1 for n in v):
            raise ValueError("every count is a number of images per class >= 1, e.g. [100, 1000]")
        return sorted(set(v))

    @field_validator("real_subsets")
    @classmethod
    def _fractions(cls, v: list[float]) -> list[float]:
        if any(not 0 < f < 1 for f in v):
            raise ValueError("every real subset is a fraction between 0 and 1, e.g. [0.1, 0.5]")
        return sorted(set(v))


#: EvaluateSpec fields that never reach the reference's training (a fresh model, real train only,
# one seed). Every other field is fingerprinted, so a new training setting retrains the cached
# classifier instead of silently reusing weights trained without it.
NOT_REFERENCE_TRAINING = frozenset(
    {
        "train_sets",
        "seeds",
        "image_size",
        "channels",
        "classifier_weights",
        "real_batch_fraction",
        "mixed_epoch",
        "real_batchnorm",
        "synthetic_multipliers",
        "real_subsets",
        "device",
        "trackers",
        "synthetic_dir",
        "fidelity",
        "protocol",  # the reference always trains from scratch, every layer at lr
        "probe_c",
        "backbone_lr_scale",
        "wise_ft_alphas",
        "zero_shot_clip",
        "zero_shot_templates",
        "input_normalization",  # [-1, 1]: the reference has no pretrained weights
        "synthetic_counts",
        "ood_test",
        "executor",  # where CAS trainings run; the reference trains in the calling process
        "workers",
        "ray",
        "continual",
    }
)

#: The evaluate settings curation trains and scores with: its reference classifier's, the
#: image format, and how its 'auto' proxies mix real train with the kept images.
CURATE_READS = tuple(
    f
    for f in EvaluateSpec.model_fields
    if f not in NOT_REFERENCE_TRAINING
    or f in ("image_size", "channels", "real_batch_fraction", "mixed_epoch")
)


class ReportSpec(Strict):
    """The HTML report."""

    enabled: bool = True
    samples_per_class: int = Field(8, ge=1, le=64)
