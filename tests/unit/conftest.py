"""Fixtures for unit tests: a fake clock and a scripted transport for OpenAIEndpoint.

The transport raises what ansible.module_utils.urls.open_url really raises (urllib HTTPError for
statuses >= 400, URLError wrapping ConnectionRefusedError, socket.timeout), so the classification code
under test sees the same exceptions as in production.

It also puts plugins/module_utils/ on sys.path: the plan tests there share plan_support.py (pytest runs in
importlib mode, so a test's folder is not on sys.path by itself).
"""

from __future__ import annotations

import io
import json
import socket
import sys
import urllib.error
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Dict, List, Optional, Union
from urllib.parse import urlsplit

import pytest

MODULE_UTILS_TESTS = str(Path(__file__).resolve().parent / "plugins" / "module_utils")
if MODULE_UTILS_TESTS not in sys.path:
    sys.path.insert(0, MODULE_UTILS_TESTS)


class FakeClock:
    """Monotonic clock and sleep that only move when told to: schedules are checked exactly."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: List[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0, f"negative sleep {seconds}"
        self.sleeps.append(seconds)
        self.now += seconds

    def wall(self) -> float:
        return 1_700_000_000.0 + self.now


class Stall:
    """The server accepts the connection but does not answer within the request timeout."""


REFUSED = urllib.error.URLError(ConnectionRefusedError(111, "Connection refused"))
STALL = Stall()

Spec = Union[tuple, BaseException, Stall, Callable[["Call"], Any]]


@dataclass
class Call:
    method: str
    url: str
    path: str
    headers: Dict[str, str]
    payload: Optional[Dict[str, Any]]
    timeout: float
    at: float


@dataclass
class FakeTransport:
    """Answer each path from a script: a (status, body) tuple, an exception, STALL, or a callable.

    A list is consumed in order and its last entry repeats. Bodies that are dicts/lists are sent as JSON.
    """

    clock: FakeClock
    routes: Dict[str, Any]
    latency: float = 0.002
    calls: List[Call] = field(default_factory=list)

    def __call__(self, method: str, url: str, headers: Dict[str, str], data: Optional[bytes], timeout: float):
        path = urlsplit(url).path
        payload = json.loads(data) if data else None
        call = Call(method, url, path, dict(headers), payload, timeout, self.clock.now)
        self.calls.append(call)
        spec = self._next(path)
        if callable(spec) and not isinstance(spec, (BaseException, Stall)):
            spec = spec(call)
        if isinstance(spec, Stall):
            self.clock.now += timeout
            raise socket.timeout("timed out")
        self.clock.now += self.latency
        if isinstance(spec, BaseException):
            raise spec
        status, body = spec
        if not isinstance(body, (bytes, str)):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        if status >= 400:
            raise urllib.error.HTTPError(url, status, "error", Message(), io.BytesIO(body))
        return status, body

    def _next(self, path: str) -> Spec:
        for suffix, spec in self.routes.items():
            if path.endswith(suffix):
                if isinstance(spec, list):
                    return spec.pop(0) if len(spec) > 1 else spec[0]
                return spec
        return (404, {"detail": "Not Found"})

    def paths(self) -> List[str]:
        return [c.path for c in self.calls]

    def starts(self, path: str) -> List[float]:
        return [c.at for c in self.calls if c.path == path]


def models_body(*names: str) -> Dict[str, Any]:
    return {"object": "list", "data": [{"id": n, "object": "model", "owned_by": "vllm"} for n in names]}


def completion_body(text: str = " see adapter on will", finish_reason: str = "length") -> Dict[str, Any]:
    return {
        "object": "text_completion",
        "choices": [{"index": 0, "text": text, "finish_reason": finish_reason}],
        "usage": {"prompt_tokens": 2, "completion_tokens": 4, "total_tokens": 6},
    }


def chat_body(text: str = " world w24 all w21") -> Dict[str, Any]:
    return {
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "length"}],
        "usage": {"prompt_tokens": 6, "completion_tokens": 4, "total_tokens": 10},
    }


def healthy_routes(*names: str) -> Dict[str, Any]:
    """What a healthy vLLM serving `names` answers (bodies as captured from vLLM 0.32 CPU)."""
    return {
        "/health": (200, b""),
        "/version": (200, {"version": "0.32.0"}),
        "/v1/models": (200, models_body(*(names or ("tiny",)))),
        "/v1/completions": (200, completion_body()),
        "/v1/chat/completions": (200, chat_body()),
    }


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_transport(clock: FakeClock) -> Callable[..., FakeTransport]:
    """make_transport({"/health": [REFUSED, (200, b"")]}): healthy vLLM routes, with these replaced."""

    def make(routes: Optional[Dict[str, Any]] = None) -> FakeTransport:
        merged = healthy_routes()
        merged.update(routes or {})
        return FakeTransport(clock, merged)

    return make


@pytest.fixture
def fake() -> SimpleNamespace:
    """Building blocks for scripted answers (test files cannot import this conftest by name)."""
    return SimpleNamespace(
        REFUSED=REFUSED,
        STALL=STALL,
        models=models_body,
        completion=completion_body,
        chat=chat_body,
        healthy_routes=healthy_routes,
    )
