"""LLM backends against a real OpenAI-compatible server on 127.0.0.1 and a tiny local causal LM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from synthset.errors import SynthsetError
from synthset.prompts.llm.base import ChatRequest, chat
from synthset.prompts.llm.cache import CACHE_FILENAME, ResponseCache
from synthset.prompts.llm.factory import build_backend
from synthset.prompts.llm.openai_compat import OpenAICompatibleBackend
from synthset.recipe import LLMSpec
from synthset.testing_llm import ChatServer, Reply, completion

SCHEMA = {
    "type": "object",
    "properties": {"captions": {"type": "array", "items": {"type": "string"}}},
    "required": ["captions"],
}


def _user(payload: dict[str, Any]) -> str:
    return payload["messages"][-1]["content"]


def _echo(payload: dict[str, Any]) -> Reply:
    return completion(f"answer to {_user(payload)}")


def _backend(server: ChatServer, cache_dir: Path, **spec: Any) -> OpenAICompatibleBackend:
    fields: dict[str, Any] = {
        "model": "tiny-chat",
        "base_url": server.base_url,
        "api_key_env": None,
        "max_retries": 2,
        "timeout": 5.0,
        "concurrency": 4,
    }
    return OpenAICompatibleBackend(LLMSpec(**{**fields, **spec}), cache_dir, backoff=0.01)


def _cache_bytes(cache_dir: Path) -> bytes:
    return b"".join(p.read_bytes() for p in cache_dir.iterdir() if p.is_file())


# --- basics ------------------------------------------------------------------------------------


def test_answers_in_order_and_params_reach_server(tmp_path: Path) -> None:
    def respond(payload: dict[str, Any]) -> Reply:
        reply = _echo(payload)
        reply.delay = 0.05 * (5 - int(_user(payload)[1:]))  # later requests finish first
        return reply

    requests = [
        chat("be brief", f"q{i}", temperature=0.1 * i, max_tokens=10 + i, seed=100 + i)
        for i in range(5)
    ]
    with ChatServer(respond) as server:
        answers = _backend(server, tmp_path).complete(requests)
    assert answers == [f"answer to q{i}" for i in range(5)]
    sent = {_user(p): p for p in server.requests}
    assert len(server.requests) == 5
    for i in range(5):
        p = sent[f"q{i}"]
        assert p["model"] == "tiny-chat"
        assert p["temperature"] == pytest.approx(0.1 * i)
        assert p["max_tokens"] == 10 + i
        assert p["seed"] == 100 + i
        assert p["messages"] == [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": f"q{i}"},
        ]
        assert "response_format" not in p


def test_api_key_comes_from_env_and_is_never_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SYNTHSET_TEST_KEY", "sk-very-secret-123")
    with ChatServer(_echo) as server:
        backend = _backend(server, tmp_path, api_key_env="SYNTHSET_TEST_KEY")
        assert backend.complete([chat(None, "hello")]) == ["answer to hello"]
    headers = {k.lower(): v for k, v in server.headers[0].items()}
    assert headers["authorization"] == "Bearer sk-very-secret-123"
    data = _cache_bytes(tmp_path)
    assert data and b"sk-very-secret-123" not in data


def test_missing_env_var_names_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SYNTHSET_MISSING_KEY", raising=False)
    spec = LLMSpec(model="m", base_url="http://127.0.0.1:1/v1", api_key_env="SYNTHSET_MISSING_KEY")
    with pytest.raises(SynthsetError, match="SYNTHSET_MISSING_KEY is not set.*api_key_env: null"):
        OpenAICompatibleBackend(spec, tmp_path)


def test_rejected_key_names_env_var_not_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SYNTHSET_TEST_KEY", "sk-wrong-456")
    bad = Reply(401, {"error": {"message": "Incorrect API key provided: sk-wrong-456"}})
    with ChatServer(lambda p: bad) as server:
        backend = _backend(server, tmp_path, api_key_env="SYNTHSET_TEST_KEY", concurrency=1)
        with pytest.raises(SynthsetError) as info:
            backend.complete([chat(None, f"q{i}") for i in range(5)])
    message = str(info.value)
    assert "SYNTHSET_TEST_KEY" in message and "401" in message
    assert "sk-wrong-456" not in message
    assert len(server.requests) == 1  # a fatal error stops new requests


# --- cache ---------------------------------------------------------------------------------------


def test_cache_makes_a_rerun_free_and_keys_on_params(tmp_path: Path) -> None:
    requests = [chat("s", f"q{i}", seed=i) for i in range(3)] + [chat("s", "q0", seed=0)]
    with ChatServer(_echo) as server:
        first = _backend(server, tmp_path).complete(requests)
        assert len(server.requests) == 3  # the duplicate request is asked once
        second = _backend(server, tmp_path).complete(requests)  # a new instance, same folder
        assert second == first and len(server.requests) == 3
        _backend(server, tmp_path).complete([chat("s", "q0", seed=1)])
        assert len(server.requests) == 4
        _backend(server, tmp_path).complete([chat("s", "q0", seed=0, temperature=0.3)])
        assert len(server.requests) == 5
        _backend(server, tmp_path, model="other").complete([chat("s", "q0", seed=0)])
        assert len(server.requests) == 6


def test_response_cache_threads(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "c.sqlite")

    def work(t: int) -> None:
        for i in range(50):
            cache.put(f"{t}-{i}", f"text {t} {i}")
            assert cache.get(f"{t}-{i}") == f"text {t} {i}"

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    reopened = ResponseCache(tmp_path / "c.sqlite")
    assert len(reopened) == 200 and reopened.get("3-49") == "text 3 49"
    assert reopened.get("missing") is None


def test_response_cache_survives_a_kill(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    code = (
        "import sys; from pathlib import Path\n"
        "from synthset.prompts.llm.cache import ResponseCache\n"
        "c = ResponseCache(Path(sys.argv[1])); i = 0\n"
        "while True:\n"
        "    c.put(f'k{i}', 'v' * 1000 + str(i)); i += 1\n"
        "    if i == 20: print('go', flush=True)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"go"
    time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    cache = ResponseCache(path)
    n = len(cache)
    assert n >= 20
    assert all(cache.get(f"k{i}") == "v" * 1000 + str(i) for i in range(n))


# --- concurrency -------------------------------------------------------------------------------


@pytest.mark.parametrize("concurrency", [1, 3])
def test_concurrency_limit(tmp_path: Path, concurrency: int) -> None:
    lock = threading.Lock()
    state = {"now": 0, "max": 0}

    def respond(payload: dict[str, Any]) -> Reply:
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        time.sleep(0.05)
        with lock:
            state["now"] -= 1
        return _echo(payload)

    with ChatServer(respond) as server:
        backend = _backend(server, tmp_path, concurrency=concurrency)
        answers = backend.complete([chat(None, f"q{i}") for i in range(9)])
    assert len(answers) == 9
    assert state["max"] <= concurrency
    if concurrency > 1:
        assert state["max"] > 1


# --- failures ------------------------------------------------------------------------------------


def _scripted(*replies: Reply | None) -> Any:
    """Per user message: the n-th call gets replies[n] (the last one repeats; None = echo)."""
    calls: dict[str, int] = {}
    lock = threading.Lock()

    def respond(payload: dict[str, Any]) -> Reply:
        with lock:
            n = calls.get(_user(payload), 0)
            calls[_user(payload)] = n + 1
        reply = replies[min(n, len(replies) - 1)]
        return _echo(payload) if reply is None else reply

    return respond


OK = None  # "answer normally"


def test_429_then_success(tmp_path: Path) -> None:
    with ChatServer(_scripted(Reply(429, {"error": {"message": "slow down"}}), OK)) as server:
        assert _backend(server, tmp_path).complete([chat(None, "q")]) == ["answer to q"]
    assert len(server.requests) == 2


def test_persistent_500_fails_after_retries(tmp_path: Path) -> None:
    with (
        ChatServer(_scripted(Reply(500, {"error": {"message": "boom"}}))) as server,
        pytest.raises(SynthsetError, match=r"HTTP 500: boom.*retried 2 times") as info,
    ):
        _backend(server, tmp_path, max_retries=2).complete([chat(None, "q")])
    assert len(server.requests) == 3
    assert "\n" not in str(info.value)


def test_malformed_body_is_retried_then_fails(tmp_path: Path) -> None:
    with ChatServer(_scripted(Reply(200, "this is not json"), OK)) as server:
        assert _backend(server, tmp_path).complete([chat(None, "q")]) == ["answer to q"]
    assert len(server.requests) == 2
    with (
        ChatServer(_scripted(Reply(200, "this is not json"))) as server,
        pytest.raises(SynthsetError, match=r"malformed.*retried 2 times"),
    ):
        _backend(server, tmp_path).complete([chat(None, "other")])
    assert len(server.requests) == 3


def test_timeout_is_retried_then_fails(tmp_path: Path) -> None:
    slow = Reply(200, "{}", delay=1.0)
    with ChatServer(_scripted(Reply(200, "{}", delay=1.0), OK)) as server:
        backend = _backend(server, tmp_path, timeout=0.3, max_retries=1)
        assert backend.complete([chat(None, "q")]) == ["answer to q"]
    with ChatServer(_scripted(slow)) as server:
        backend = _backend(server, tmp_path, timeout=0.3, max_retries=1)
        start = time.monotonic()
        with pytest.raises(SynthsetError, match=r"did not answer within 0.3s.*retried 1 times"):
            backend.complete([chat(None, "other")])
    assert len(server.requests) == 2
    assert time.monotonic() - start < 2.0


def test_partial_failure_keeps_finished_answers(tmp_path: Path) -> None:
    def flaky(payload: dict[str, Any]) -> Reply:
        if _user(payload).startswith("bad"):
            return Reply(500, {"error": {"message": "boom"}})
        return _echo(payload)

    requests = [chat(None, f"good{i}") for i in range(4)] + [chat(None, "bad0"), chat(None, "bad1")]
    with ChatServer(flaky) as server, pytest.raises(SynthsetError, match="retried 1 times"):
        _backend(server, tmp_path, concurrency=8, max_retries=1).complete(requests)
    with ChatServer(_echo) as server:
        answers = _backend(server, tmp_path, concurrency=8).complete(requests)
    assert answers[:4] == [f"answer to good{i}" for i in range(4)]
    assert sorted(_user(p) for p in server.requests) == ["bad0", "bad1"]


def test_unreachable_server_one_line_error(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    spec = LLMSpec(
        model="m", base_url=f"http://127.0.0.1:{port}/v1", api_key_env=None, max_retries=1
    )
    backend = OpenAICompatibleBackend(spec, tmp_path, backoff=0.01)
    with pytest.raises(SynthsetError) as info:
        backend.complete([chat(None, "q")])
    message = str(info.value)
    assert f"cannot reach the LLM server at http://127.0.0.1:{port}/v1" in message
    assert "prompts.llm.base_url" in message and "ollama serve" in message
    assert "\n" not in message


def test_unknown_model_lists_served_models(tmp_path: Path) -> None:
    missing = Reply(404, {"error": {"message": "model 'nope' not found"}})
    with (
        ChatServer(lambda p: missing, models=("llama3", "qwen2")) as server,
        pytest.raises(SynthsetError) as info,
    ):
        _backend(server, tmp_path, model="nope").complete([chat(None, "q")])
    message = str(info.value)
    assert "prompts.llm.model 'nope' is not served" in message
    assert "available: llama3, qwen2" in message
    assert len(server.requests) == 1  # not retried


# --- structured output ---------------------------------------------------------------------------


def test_response_format_sent_and_invalid_json_retried(tmp_path: Path) -> None:
    good = completion(json.dumps({"captions": ["a cat"]}))
    replies = _scripted(completion("Sure! here are captions"), completion('{"other": 1}'), good)
    request = chat(None, "q", json_schema=SCHEMA)
    with ChatServer(replies) as server:
        answer = _backend(server, tmp_path).complete([request])[0]
    assert json.loads(answer) == {"captions": ["a cat"]}
    assert len(server.requests) == 3
    fmt = server.requests[0]["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["schema"] == SCHEMA


def test_invalid_json_always_fails(tmp_path: Path) -> None:
    with (
        ChatServer(_scripted(completion("no json here"))) as server,
        pytest.raises(SynthsetError, match=r"did not answer valid JSON.*retried 2 times"),
    ):
        _backend(server, tmp_path).complete([chat(None, "q", json_schema=SCHEMA)])
    assert len(server.requests) == 3
    assert ResponseCache(tmp_path / CACHE_FILENAME).__len__() == 0


def test_auto_falls_back_when_response_format_is_rejected(tmp_path: Path) -> None:
    def respond(payload: dict[str, Any]) -> Reply:
        if "response_format" in payload:
            return Reply(400, {"error": {"message": "response_format is not supported"}})
        return completion('```json\n{"captions": ["a dog"]}\n```')

    requests = [chat(None, f"q{i}", json_schema=SCHEMA) for i in range(3)]
    with ChatServer(respond) as server:
        answers = _backend(server, tmp_path, concurrency=1).complete(requests)
        assert [json.loads(a) for a in answers] == [{"captions": ["a dog"]}] * 3
        assert len(server.requests) == 4  # one rejected, then plain for all (remembered)
        strict = _backend(server, tmp_path / "strict", structured_output="json_schema")
        with pytest.raises(SynthsetError, match="structured_output"):
            strict.complete(requests)
        off = _backend(server, tmp_path / "off", structured_output="off")
        assert len(off.complete(requests)) == 3
        assert all("response_format" not in p for p in server.requests[-3:])


# --- factory and transformers --------------------------------------------------------------------


def test_factory_picks_backend(tmp_path: Path) -> None:
    openai_spec = LLMSpec(model="m", base_url="http://127.0.0.1:1/v1", api_key_env=None)
    assert build_backend(openai_spec, tmp_path).name == "openai:m"
    local = build_backend(LLMSpec(backend="transformers", model="some/folder"), tmp_path)
    assert local.name == "transformers:some/folder"


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from synthset.testing import build_tiny_causal_lm

    return build_tiny_causal_lm(tmp_path_factory.mktemp("tiny-lm"))


def _local(model: Path | str, cache_dir: Path) -> Any:
    spec = LLMSpec(backend="transformers", model=str(model), batch_size=3, device="cpu")
    return build_backend(spec, cache_dir)


def test_transformers_backend(tiny_lm: Path, tmp_path: Path) -> None:
    requests = [
        chat("write captions", f"a photo of a {w}", temperature=1.0, max_tokens=8, seed=i)
        for i, w in enumerate(["cat", "dog on the beach", "car", "plane"])
    ] + [ChatRequest(messages=(("user", "cat"),), temperature=0.0, max_tokens=5)]
    first = _local(tiny_lm, tmp_path / "a").complete(requests)
    assert len(first) == 5 and all(isinstance(t, str) and t for t in first)
    assert len(set(first[:4])) > 1  # seeded sampling, not one fixed answer
    # deterministic on a cold cache, and independent of batch composition
    again = _local(tiny_lm, tmp_path / "b")
    assert [again.complete([r])[0] for r in reversed(requests)] == first[::-1]
    # cached: a new instance on the same folder answers without loading the model
    cached = _local(tiny_lm, tmp_path / "a")
    assert cached.complete(requests) == first
    assert cached._model is None
    reseeded = chat("write captions", "a photo of a cat", temperature=1.0, max_tokens=8, seed=99)
    assert cached.complete([reseeded]) != [first[0]]


def test_transformers_bad_path(tmp_path: Path) -> None:
    backend = _local(tmp_path / "no-such-model", tmp_path)
    with pytest.raises(SynthsetError, match="prompts.llm.model: cannot load") as info:
        backend.complete([chat(None, "q")])
    assert "\n" not in str(info.value)


def test_fallback_to_plain_text_keeps_non_json_answers(tmp_path: Path) -> None:
    def respond(payload: dict[str, Any]) -> Reply:
        if "response_format" in payload:
            return Reply(400, {"error": {"message": "response_format is not supported"}})
        return completion("1. a dog on a beach\n2. a dog in the snow")

    requests = [chat(None, f"q{i}", json_schema=SCHEMA) for i in range(2)]
    with ChatServer(respond) as server:
        answers = _backend(server, tmp_path, concurrency=1).complete(requests)
    assert answers == ["1. a dog on a beach\n2. a dog in the snow"] * 2
    assert len(server.requests) == 3  # one rejected, then plain text, not retried as invalid
