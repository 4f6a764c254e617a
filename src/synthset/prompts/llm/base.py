"""The LLM backend protocol: chat requests in, texts out (batched, cached, deterministic)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class ChatRequest:
    """One chat completion request. ``seed`` makes sampling repeatable where the server honours
    it; ``json_schema`` asks for structured output (validated by the caller)."""

    messages: tuple[tuple[str, str], ...]  # (role, content) pairs
    temperature: float = 0.8
    max_tokens: int = 512
    seed: int = 0
    json_schema: dict[str, Any] | None = field(default=None, hash=False, compare=False)

    def cache_key(self, model: str) -> str:
        """Stable key of (model, messages, params): equal requests share one cached answer."""
        data = {"model": model, **asdict(self)}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def chat(system: str | None, user: str, **params: Any) -> ChatRequest:
    """Shorthand for a request with an optional system message and one user message."""
    messages = ((("system", system),) if system else ()) + (("user", user),)
    return ChatRequest(messages=messages, **params)


class LLMBackend(Protocol):
    """Answers chat requests; implementations cache answers on disk and retry transient errors."""

    name: str

    def complete(self, requests: Sequence[ChatRequest]) -> list[str]:
        """One answer text per request, in order (requests may run concurrently)."""
        ...
