"""The prompts section: how class names become text prompts, and the LLM that writes them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from synthset.recipe.base import Strict, false_is_off
from synthset.redaction import looks_like_secret


class LLMSpec(Strict):
    """A language model for the LLM prompt strategies."""

    backend: Literal["openai", "transformers"] = Field(
        "openai",
        description="openai: any OpenAI-compatible server (OpenAI, vLLM, Ollama, llama.cpp, TGI); "
        "transformers: a local causal LM (hub id or folder).",
    )
    model: str = Field(description="Model name on the server, or a transformers id / folder.")
    base_url: str | None = Field(
        None, description="Server URL, e.g. http://127.0.0.1:8000/v1 (vLLM) or :11434/v1 (Ollama)."
    )
    api_key_env: str | None = Field(
        "OPENAI_API_KEY",
        description="Name of the environment variable holding the API key (never the key itself); "
        "null for local servers without auth.",
    )
    temperature: float = Field(0.8, ge=0, le=2)
    max_tokens: int = Field(512, ge=1)
    concurrency: int = Field(8, ge=1, le=256, description="Requests in flight at once.")
    max_retries: int = Field(4, ge=0, le=20)
    timeout: float = Field(60.0, gt=0, description="Seconds per request.")
    structured_output: Annotated[
        Literal["auto", "json_schema", "off"], BeforeValidator(false_is_off)
    ] = Field(
        "auto", description="Ask the server for JSON-schema output (auto: try, fall back to text)."
    )
    batch_size: int = Field(8, ge=1, description="Prompts per generate() call (transformers).")
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    device: str = "auto"

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, v: str | None) -> str | None:
        if v is not None and (not v.isidentifier() or not v.isascii() or looks_like_secret(v)):
            raise ValueError(
                "give the NAME of an environment variable (e.g. OPENAI_API_KEY), not a key"
            )
        return v

    @field_validator("base_url")
    @classmethod
    def _no_credentials(cls, v: str | None) -> str | None:
        if v is not None and looks_like_secret(v):
            raise ValueError(
                "the URL holds credentials; remove them and put the key in the environment "
                "variable that api_key_env names"
            )
        return v


class PromptsSpec(Strict):
    """How class names become text prompts (the prompts stage writes prompts.jsonl)."""

    strategy: Literal["template", "fakeit", "synclr", "synthclip", "metaprompt", "file"] = Field(
        "template",
        description="template, fakeit (no LLM); synclr, synthclip, metaprompt (LLM); "
        "file (import captions).",
    )
    per_class: int = Field(20, ge=1, description="Target number of distinct prompts per class.")
    template: str = Field("a photo of a {class}", description="'{class}' is the class name.")
    templates: list[str] | Literal["photo"] | None = Field(
        None, description="Several templates (overrides 'template'); 'photo' = the shipped set."
    )
    slots: dict[str, list[str]] = Field(
        {}, description="Values for other {slot}s in templates, e.g. {background: [a beach, …]}."
    )
    combine: Literal["sample", "cross"] = Field(
        "sample", description="sample: random slot values; cross: every combination in order."
    )
    llm: LLMSpec | None = None
    metaprompts: int = Field(
        5, ge=1, description="metaprompt strategy: scene directions (stage 1)."
    )
    domain: str | None = Field(
        None,
        description="metaprompt strategy: what the dataset shows (e.g. 'vehicles and animals'), "
        "told to stage 1 instead of the class list, so each class's requests are cached apart.",
    )
    file: Path | None = Field(
        None, description="strategy file: 'caption => class' lines or captions_single_labeled JSON."
    )
    label_check: Annotated[Literal["repair", "drop", "off"], BeforeValidator(false_is_off)] = Field(
        "repair", description="A caption must name its class (or a synonym): repair it or drop it."
    )
    near_duplicate: float = Field(
        0.85, gt=0, le=1, description="Token-set similarity at which two prompts are duplicates."
    )
    max_rounds: int = Field(
        5, ge=1, le=50, description="Requests for more when short of per_class."
    )
    shortfall: Literal["warn", "error"] = Field(
        "warn",
        description="A class with fewer than per_class distinct prompts: warn (how many exist; "
        "the plan cycles through them) or stop with an error.",
    )
    diversity_model: str | None = Field(
        None,
        description="Local sentence-embedding model (transformers id or folder) for the diversity "
        "report; default: token overlap.",
    )

    @field_validator("template")
    @classmethod
    def _has_class_slot(cls, v: str) -> str:
        if "{class}" not in v:
            raise ValueError("template must contain '{class}'")
        return v

    @field_validator("templates")
    @classmethod
    def _all_have_class_slot(cls, v: list[str] | str | None) -> list[str] | str | None:
        if isinstance(v, list):
            if not v:
                raise ValueError("templates is empty; give at least one or omit it")
            missing = [t for t in v if "{class}" not in t]
            if missing:
                raise ValueError(f"every template must contain '{{class}}' (not: {missing[0]!r})")
        return v

    @model_validator(mode="after")
    def _strategy_needs(self) -> PromptsSpec:
        if self.strategy in ("synclr", "synthclip", "metaprompt") and self.llm is None:
            raise ValueError(f"strategy '{self.strategy}' needs an 'llm' section (backend, model)")
        if self.strategy == "file" and self.file is None:
            raise ValueError("strategy 'file' needs 'file': a caption file to import")
        if self.strategy != "metaprompt" and self.domain is not None:
            raise ValueError(
                "domain is read by strategy 'metaprompt' only; "
                "remove it or set strategy: metaprompt"
            )
        return self
