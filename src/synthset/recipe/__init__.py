"""The recipe: pydantic models of each stage's settings, read from YAML; one module per section."""

from synthset.recipe.adapt import AdaptSpec
from synthset.recipe.base import Strict
from synthset.recipe.curate import CurateSpec, LeakSpec, RuleSpec
from synthset.recipe.data import ClassesSpec, RealDataSpec
from synthset.recipe.evaluate import ContinualSpec, EvaluateSpec, FidelitySpec, ReportSpec
from synthset.recipe.export import ExportSpec
from synthset.recipe.generate import (
    EnsembleMember,
    GenerateSpec,
    GeneratorSpec,
    LoraSpec,
    TextualInversionSpec,
)
from synthset.recipe.labels import AttentionSpec, DetectorSpec, LabelsSpec
from synthset.recipe.load import (
    apply_overrides,
    dump_recipe,
    format_validation_error,
    load_recipe,
    recipe_from_dict,
)
from synthset.recipe.model import (
    TUNABLE_SECTIONS,
    Recipe,
    TuneParam,
    TuneSpec,
    check_tune_path,
    tune_field,
)
from synthset.recipe.prompts import LLMSpec, PromptsSpec
from synthset.recipe.retrieve import RetrieveSpec
from synthset.recipe.scale import RaySpec, SlurmSpec

__all__ = [
    "TUNABLE_SECTIONS",
    "AdaptSpec",
    "AttentionSpec",
    "ClassesSpec",
    "DetectorSpec",
    "CurateSpec",
    "EnsembleMember",
    "ContinualSpec",
    "EvaluateSpec",
    "ExportSpec",
    "FidelitySpec",
    "GenerateSpec",
    "GeneratorSpec",
    "LLMSpec",
    "LabelsSpec",
    "LeakSpec",
    "LoraSpec",
    "RaySpec",
    "SlurmSpec",
    "PromptsSpec",
    "Recipe",
    "RealDataSpec",
    "RuleSpec",
    "ReportSpec",
    "RetrieveSpec",
    "Strict",
    "TextualInversionSpec",
    "TuneParam",
    "TuneSpec",
    "apply_overrides",
    "check_tune_path",
    "dump_recipe",
    "format_validation_error",
    "load_recipe",
    "recipe_from_dict",
    "tune_field",
]
