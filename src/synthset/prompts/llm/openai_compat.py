"""The OpenAI-compatible HTTP backend: OpenAI, vLLM, Ollama, llama.cpp server, TGI, …

Uses the official ``openai`` client with ``base_url``. The API key is read only from the
environment variable *named* in the recipe and never logged, cached or put in an error message.

Retry policy (our own loop; the client's retries are off so we can count and explain them):
429, 408/409, 5xx, timeouts, connection errors, malformed bodies and — when a JSON schema is
given — answers that are not valid JSON are retried up to ``spec.max_retries`` times with
exponential backoff (``backoff * 2**k``, jittered, capped; ``Retry-After`` honoured). Other 4xx
are not retried: they become one-line ``SynthsetError``s naming the recipe field to fix.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NoReturn

import openai

from synthset.errors import SynthsetError
from synthset.prompts.llm.base import ChatRequest
from synthset.prompts.llm.cache import CACHE_FILENAME, ResponseCache
from synthset.recipe import LLMSpec
from synthset.redaction import redact

log = logging.getLogger(__name__)

_NO_KEY = "not-needed"
_RETRY_STATUS = (408, 409, 429)


class _Retryable(Exception):
    """A transient failure of one call: ``reason`` picks the final message if retries run out."""

    def __init__(self, reason: str, detail: str = "", wait: float | None = None) -> None:
        super().__init__(detail)
        self.reason, self.detail, self.wait = reason, detail, wait


class _FallbackToPlain(Exception):
    """The server rejected ``response_format``: retry the same request without it."""


class OpenAICompatibleBackend:
    """``complete(requests)`` → answer texts, cached on disk, at most ``spec.concurrency`` in
    flight. ``backoff`` is the first retry delay in seconds (doubles per retry, capped)."""

    def __init__(
        self, spec: LLMSpec, cache_dir: Path, backoff: float = 0.5, max_backoff: float = 30.0
    ) -> None:
        self.spec = spec
        self.name = f"openai:{spec.model}"
        self.cache = ResponseCache(Path(cache_dir) / CACHE_FILENAME)
        self.backoff, self.max_backoff = backoff, max_backoff
        self._api_key = _read_api_key(spec.api_key_env)
        self._client = openai.OpenAI(
            base_url=spec.base_url, api_key=self._api_key, timeout=spec.timeout, max_retries=0
        )
        self.url = redact(str(self._client.base_url).rstrip("/"))  # printed in errors
        self._response_format_ok = spec.structured_output != "off"

    # --- batch -------------------------------------------------------------------------------

    def complete(self, requests: Sequence[ChatRequest]) -> list[str]:
        """One answer per request, in order: cached answers first, the rest concurrently. Each
        answer is cached as soon as it arrives; on a failure no new request starts, the ones in
        flight finish (and are cached), then the first error is raised."""
        keys = [r.cache_key(self.name) for r in requests]
        answers: dict[str, str] = {}
        todo: dict[str, ChatRequest] = {}
        for key, req in zip(keys, requests, strict=True):
            cached = self.cache.get(key) if key not in answers else answers[key]
            if cached is not None:
                answers[key] = cached
            else:
                todo.setdefault(key, req)
        if todo:
            answers.update(self._run_concurrently(todo))
        return [answers[k] for k in keys]

    def _run_concurrently(self, todo: dict[str, ChatRequest]) -> dict[str, str]:
        """Answer every request of ``todo`` (key → request) with a bounded thread pool."""
        done: dict[str, str] = {}
        errors: list[tuple[int, SynthsetError]] = []
        stop = threading.Event()

        def job(index: int, key: str, req: ChatRequest) -> None:
            if stop.is_set():
                return
            try:
                text = self._complete_one(req)
            except SynthsetError as err:
                stop.set()
                errors.append((index, err))
                return
            except BaseException:
                stop.set()
                raise
            self.cache.put(key, text)
            done[key] = text

        pool = ThreadPoolExecutor(max_workers=min(self.spec.concurrency, len(todo)))
        try:
            futures = [pool.submit(job, i, k, r) for i, (k, r) in enumerate(todo.items())]
            for future in futures:
                future.result()
        except BaseException:
            stop.set()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()
        if errors:
            raise min(errors, key=lambda e: e[0])[1]
        return done

    # --- one request -------------------------------------------------------------------------

    def _complete_one(self, req: ChatRequest) -> str:
        """One answer, retrying transient failures; raises SynthsetError when retries run out."""
        retries = self.spec.max_retries
        attempt = 0
        while True:
            try:
                return self._call(req)
            except _FallbackToPlain:
                continue  # not counted as a retry
            except _Retryable as err:
                if attempt >= retries:
                    raise SynthsetError(self._exhausted_message(err, retries)) from None
                attempt += 1
                delay = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
                delay = max(delay * random.uniform(0.5, 1.0), min(err.wait or 0, self.max_backoff))
                log.info(
                    "LLM call failed (%s), retry %d/%d in %.2fs",
                    err.reason,
                    attempt,
                    retries,
                    delay,
                )
                time.sleep(delay)

    def _call(self, req: ChatRequest) -> str:
        """One HTTP call; classifies every failure as retryable, fallback or fatal."""
        use_format = req.json_schema is not None and self._response_format_ok
        params: dict[str, Any] = {
            "model": self.spec.model,
            "messages": [{"role": role, "content": content} for role, content in req.messages],
            "temperature": req.temperature,
            "max_tokens": req.max_tokens,
            "seed": req.seed,
        }
        if use_format:
            params["response_format"] = _response_format(req.json_schema or {})
        try:
            response = self._client.chat.completions.create(**params)
        except openai.APIStatusError as err:
            self._raise_for_status(err, sent_format=use_format)
        except openai.APITimeoutError:
            raise _Retryable("timeout") from None
        except openai.APIConnectionError as err:
            raise _Retryable("connection", _cause(err)) from None
        except (ValueError, openai.APIResponseValidationError) as err:  # body is not JSON
            raise _Retryable("malformed", str(err)) from None
        text = _answer_text(response)
        if req.json_schema is None:
            return text
        if use_format:
            return _checked_json(text, req.json_schema)
        try:  # the server was not asked for JSON: unwrap it if it sent some, else the caller parses
            return _checked_json(text, req.json_schema)
        except _Retryable:
            return text

    def _raise_for_status(self, err: openai.APIStatusError, sent_format: bool) -> NoReturn:
        """Turn an HTTP error status into a retry, a fallback or a one-line SynthsetError."""
        status, detail = err.status_code, self._server_message(err)
        if status in _RETRY_STATUS or status >= 500:
            raise _Retryable(f"http{status}", detail, _retry_after(err)) from None
        if status in (401, 403):
            raise SynthsetError(self._auth_message(status)) from None
        if status == 404 or _looks_like_unknown_model(detail):
            raise SynthsetError(self._unknown_model_message()) from None
        if status in (400, 422) and sent_format:
            if self.spec.structured_output == "auto":
                log.warning("server rejected response_format (%s); using plain text", status)
                self._response_format_ok = False
                raise _FallbackToPlain from None
            raise SynthsetError(
                f"prompts.llm.structured_output: the LLM server at {self.url} rejected "
                f"response_format json_schema (HTTP {status}: {detail}); "
                "set structured_output: auto or off"
            ) from None
        raise SynthsetError(
            f"the LLM server at {self.url} refused the request (HTTP {status}: {detail}); "
            "check prompts.llm (model, max_tokens, temperature)"
        ) from None

    # --- messages ------------------------------------------------------------------------------

    def _redact(self, text: str) -> str:
        """One line, at most 200 characters, never the API key nor anything shaped like a
        secret (a server may echo a key, a token or a URL with credentials)."""
        if self._api_key and self._api_key != _NO_KEY:
            text = text.replace(self._api_key, "***")
        return redact(" ".join(text.split())[:200])

    def _server_message(self, err: openai.APIStatusError) -> str:
        body = err.body
        if isinstance(body, dict):
            body = body.get("error", body)
            body = body.get("message", body) if isinstance(body, dict) else body
        return self._redact(str(body if body else err.message))

    def _auth_message(self, status: int) -> str:
        env = self.spec.api_key_env
        if env is None:
            return (
                f"prompts.llm.api_key_env: the LLM server at {self.url} requires an API key "
                f"(HTTP {status}); set api_key_env to the name of the variable holding it"
            )
        return (
            f"prompts.llm.api_key_env: the LLM server at {self.url} rejected the API key from "
            f"${env} (HTTP {status}); export a valid key as {env}"
        )

    def _unknown_model_message(self) -> str:
        try:
            served = redact(", ".join(m.id for m in self._client.models.list())) or "none"
        except Exception:  # noqa: BLE001 - the listing is only a hint
            served = "unknown (GET /models failed)"
        return (
            f"prompts.llm.model {self.spec.model!r} is not served at {self.url}; "
            f"available: {served}"
        )

    def _exhausted_message(self, err: _Retryable, retries: int) -> str:
        url, tried = self.url, f"retried {retries} times"
        detail = f": {self._redact(err.detail)}" if err.detail else ""
        if err.reason == "connection":
            return (
                f"cannot reach the LLM server at {url}{detail} ({tried}); start it "
                "(e.g. `vllm serve MODEL`, `ollama serve`) or fix prompts.llm.base_url"
            )
        if err.reason == "timeout":
            return (
                f"the LLM server at {url} did not answer within {self.spec.timeout}s ({tried}); "
                "raise prompts.llm.timeout or lower prompts.llm.concurrency"
            )
        if err.reason == "malformed":
            return (
                f"the LLM server at {url} sent malformed responses (not a chat completion"
                f"{detail}) ({tried}); check that prompts.llm.base_url is an OpenAI-compatible /v1"
            )
        if err.reason == "invalid_json":
            return (
                f"prompts.llm.model {self.spec.model!r} did not answer valid JSON{detail} "
                f"({tried}); use structured_output: json_schema, a lower temperature or a "
                "stronger model"
            )
        return (
            f"the LLM server at {url} kept failing (HTTP {err.reason[4:]}{detail}) ({tried}); "
            "lower prompts.llm.concurrency, raise prompts.llm.max_retries or check the server"
        )


# --- helpers ---------------------------------------------------------------------------------


def _read_api_key(env: str | None) -> str:
    """The key from ``$env``; a dummy when no auth is configured."""
    if env is None:
        return _NO_KEY
    key = os.environ.get(env, "")
    if not key:
        raise SynthsetError(
            f"prompts.llm.api_key_env: environment variable {env} is not set; "
            f"export {env}=… or set api_key_env: null for a local server"
        )
    return key


def _cause(err: Exception) -> str:
    """The innermost cause's text, e.g. ``[Errno 111] Connection refused``."""
    while err.__cause__ is not None:
        err = err.__cause__  # type: ignore[assignment]
    return str(err) or type(err).__name__


def _retry_after(err: openai.APIStatusError) -> float | None:
    try:
        return float(err.response.headers.get("retry-after", ""))
    except ValueError:
        return None


def _looks_like_unknown_model(detail: str) -> bool:
    low = detail.lower()
    return "model" in low and ("not found" in low or "does not exist" in low)


def _response_format(schema: dict[str, Any]) -> dict[str, Any]:
    """The OpenAI ``response_format`` for a JSON schema."""
    name = re.sub(r"[^a-zA-Z0-9_-]", "_", str(schema.get("title", "answer")))[:64] or "answer"
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema}}


def _answer_text(response: Any) -> str:
    """The first choice's text; anything else is a malformed response (retried)."""
    try:
        content = response.choices[0].message.content
    except (AttributeError, IndexError, TypeError, KeyError):
        raise _Retryable("malformed", "no choices[0].message.content") from None
    if not isinstance(content, str):
        raise _Retryable("malformed", "empty message content")
    return content


def _checked_json(text: str, schema: dict[str, Any]) -> str:
    """The JSON part of ``text`` (code fences stripped) if it matches ``schema``, else retry."""
    candidate = _extract_json(text)
    if candidate is None:
        raise _Retryable("invalid_json", f"not JSON: {text[:60]!r}")
    problem = schema_problem(json.loads(candidate), schema)
    if problem:
        raise _Retryable("invalid_json", problem)
    return candidate


def _extract_json(text: str) -> str | None:
    """``text`` itself, the inside of a ```json fence, or its outermost {...} / [...] span."""
    fenced = re.search(r"```(?:json)?\s*(.*?)```", text, re.DOTALL)
    candidates = [text.strip()] + ([fenced.group(1).strip()] if fenced else [])
    for open_, close in ("{}", "[]"):
        start, end = text.find(open_), text.rfind(close)
        if 0 <= start < end:
            candidates.append(text[start : end + 1])
    for candidate in candidates:
        try:
            json.loads(candidate)
        except ValueError:
            continue
        return candidate
    return None


_JSON_TYPES: dict[str, type | tuple[type, ...]] = {
    "object": dict,
    "array": list,
    "string": str,
    "number": (int, float),
    "integer": int,
    "boolean": bool,
    "null": type(None),
}


def schema_problem(value: Any, schema: dict[str, Any], path: str = "$") -> str | None:
    """A light JSON-schema check (type, required, properties, items); None when it matches.
    Callers validate fully (pydantic); this only catches answers worth a retry."""
    expected = schema.get("type")
    if isinstance(expected, str) and expected in _JSON_TYPES:
        ok = isinstance(value, _JSON_TYPES[expected])
        if expected in ("number", "integer") and isinstance(value, bool):
            ok = False
        if not ok:
            return f"{path} is not of type {expected}"
    if isinstance(value, dict):
        for key in schema.get("required", []):
            if key not in value:
                return f"{path} misses required key {key!r}"
        for key, sub in schema.get("properties", {}).items():
            if key in value and isinstance(sub, dict):
                problem = schema_problem(value[key], sub, f"{path}.{key}")
                if problem:
                    return problem
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            problem = schema_problem(item, schema["items"], f"{path}[{i}]")
            if problem:
                return problem
    return None
