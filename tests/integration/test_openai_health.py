"""llmops.platform.openai_health run through ansible-playbook against real vLLM CPU servers.

Three vLLM starts in all (each ~25 s, ~2 GiB): one server with an API key shared by the ready, key,
model and check-mode cases; one started after the module began waiting; one with the broken model.
The stand-in fault server is used only for faults a real vLLM cannot produce on demand.
"""

from __future__ import annotations

import time

import pytest
from fault_server import Fault, FaultServer

MODULE = "llmops.platform.openai_health"
API_KEY = "integration-test-key-7f3a"


def health(run_module, **args):
    result, playbook = run_module(MODULE, args)
    return result, playbook


def assert_rate_limited(times, minimum_gap):
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert gaps, "expected several requests"
    assert min(gaps) >= minimum_gap - 0.02, gaps


# -- faults only a stand-in can produce -------------------------------------------------------------


def test_health_503_forever_backs_off_and_fails(run_module):
    with FaultServer({"/health": Fault(503, "Service Unavailable")}) as server:
        result, playbook = health(run_module, url=server.url, timeout=5, max_poll_interval=2)
        times = server.request_times("/health")
    assert playbook.rc != 0
    assert result["failed"] is True
    assert result["ready"] is False
    assert result["msg"].startswith(f"{server.url}/health kept answering HTTP 503 for ")
    assert result["status"] == 503
    assert result["body"] == "Service Unavailable"
    # back-off 0.5, 1, 2 s: attempts at ~0, 0.5, 1.5, 3.5 instead of 20 at 4 per second
    assert result["health_attempts"] == len(times) == 4
    assert_rate_limited(times, 0.5)
    assert result["polls_per_second"] < 1.5


def test_garbage_models_is_reported_as_malformed(run_module):
    with FaultServer({"/v1/models": Fault(200, "<html><body>502 Bad Gateway</body></html>")}) as server:
        result, _playbook = health(run_module, url=server.url, timeout=3)
        times = server.request_times("/health")
    assert result["failed"] is True
    assert result["msg"].startswith(
        "/v1/models returned a malformed response (not JSON): <html><body>502 Bad Gateway</body></html>"
    )
    assert result["status"] == 200
    assert_rate_limited(times, 0.5)


def test_stall_longer_than_request_timeout(run_module):
    with FaultServer({"/health": Fault(200, "", delay=30)}) as server:
        started = time.monotonic()
        result, _playbook = health(run_module, url=server.url, timeout=4, request_timeout=1.5)
        took = time.monotonic() - started
    assert result["failed"] is True
    assert "/health did not answer within request_timeout (1.5 s)" in result["msg"]
    assert "timed out after 1.5 s" in result["msg"]
    assert result["health_attempts"] == 2  # 1.5 s stall, 0.5 s back-off, 1.5 s stall, next would be late
    assert took < 15, "the stall must be cut by request_timeout, not waited out"


def test_empty_completion_text_fails(run_module):
    empty = {
        "object": "text_completion",
        "choices": [{"index": 0, "text": "", "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 0, "total_tokens": 1},
    }
    with FaultServer({"/v1/completions": Fault(200, empty)}) as server:
        result, _playbook = health(run_module, url=server.url, timeout=30)
    assert result["failed"] is True
    assert result["msg"].startswith("/health answered 200 but the completion returned no text (finish_reason=stop")
    assert result["health_attempts"] == 1, "empty text is not retried: temperature 0 would give it again"


def test_no_server_fails_not_reachable(run_module):
    with FaultServer({}) as server:
        url = server.url  # the port was free a moment ago and nothing listens on it now
    result, playbook = health(run_module, url=url, timeout=3)
    assert playbook.rc != 0
    assert result["msg"].startswith(f"{url}/health not reachable within 3 s (timeout; ")
    assert "last error: Connection refused" in result["msg"]
    assert "Check its service logs" in result["msg"]
    assert 10 <= result["health_attempts"] <= 13
    assert result["polls_per_second"] <= 4.0
    assert result["elapsed"] < 3.5


# -- one real vLLM with --api-key, shared ---------------------------------------------------------


@pytest.fixture(scope="class")
def keyed_server(vllm_servers_session):
    server = vllm_servers_session.start("tiny", api_key=API_KEY)
    yield server
    server.stop()


@pytest.mark.vllm
class TestKeyedServer:
    def test_ready_with_key(self, keyed_server, run_module):
        result, playbook = health(
            run_module,
            url=keyed_server.url,
            api_key=API_KEY,
            expected_models=["tiny"],
            probes=["completion", "chat"],
            timeout=60,
        )
        assert playbook.rc == 0, result
        assert result["ready"] is True
        assert result["changed"] is False
        assert result["served_models"] == ["tiny"]
        assert result["model"] == "tiny"
        assert result["server_version"] == "0.32.0"
        assert result["health_attempts"] == 1
        assert result["completion"]["text"].strip()
        assert result["completion"]["usage"]["completion_tokens"] == 4
        assert result["chat"]["text"].strip()
        assert set(result["latencies"]) == {"health", "models", "completion", "chat", "version"}
        assert all(ms > 0 for ms in result["latencies"].values())
        assert result["ready_at"] <= result["finished_at"] <= playbook.exited_at
        assert API_KEY not in playbook.stdout + playbook.stderr

        again, _playbook = health(run_module, url=keyed_server.url, api_key=API_KEY)
        assert again["completion"]["text"] == result["completion"]["text"], "temperature 0 is deterministic"

    def test_check_mode_runs_the_probe(self, keyed_server, run_module):
        result, playbook = run_module(MODULE, {"url": keyed_server.url, "api_key": API_KEY}, check=True)
        assert playbook.rc == 0, result
        assert result["ready"] is True
        assert result["changed"] is False
        assert result["completion"]["text"]

    def test_wrong_key_fails_naming_401(self, keyed_server, run_module):
        result, playbook = health(run_module, url=keyed_server.url, api_key="not-the-key", timeout=30)
        assert playbook.rc != 0
        assert result["status"] == 401
        assert result["msg"].startswith("/v1/models answered HTTP 401: the API key was rejected")
        assert "VLLM_API_KEY" in result["msg"]
        assert result["health_attempts"] == 1
        assert "not-the-key" not in playbook.stdout + playbook.stderr

    def test_missing_key_fails_naming_401(self, keyed_server, run_module):
        result, _playbook = health(run_module, url=keyed_server.url, timeout=30)
        assert result["status"] == 401
        assert "the API key is missing" in result["msg"]

    def test_wrong_model_lists_served_models(self, keyed_server, run_module):
        result, _playbook = health(
            run_module, url=keyed_server.url, api_key=API_KEY, expected_models=["foo"], timeout=30
        )
        assert result["failed"] is True
        assert result["msg"].startswith("served models are ['tiny'], expected ['foo']")
        assert result["served_models"] == ["tiny"]


# -- servers of their own -------------------------------------------------------------------------


@pytest.mark.vllm
def test_server_started_after_the_module(vllm_servers, start_playbook):
    server_port = None
    with FaultServer({}) as placeholder:
        server_port = placeholder.port  # a free port, closed again: the module meets "connection refused"
    url = f"http://127.0.0.1:{server_port}"
    run = start_playbook([{"name": "wait", MODULE: {"url": url, "expected_models": ["tiny"], "timeout": 240}}])
    time.sleep(2)  # the module is polling a closed port now
    assert run.process.poll() is None, "the module must still be waiting"
    server = vllm_servers.launch("tiny", port=server_port)
    playbook = run.wait(timeout=300)
    if playbook.rc != 0:
        pytest.fail(f"module failed: {playbook.result.get('msg')}\n{server.log_tail()}")
    result = playbook.result
    assert result["ready"] is True
    assert result["completion"]["text"]
    assert result["time_to_ready"] > 10, "vLLM needs ~20 s to load; the module must have waited for it"
    assert result["health_attempts"] > 20
    # refused connections are polled every 0.25 s: close to, never above, 4 per second
    assert 3.0 <= result["polls_per_second"] <= 4.0
    assert result["ready_at"] > server.started_at


@pytest.mark.vllm
def test_broken_model_fails_with_the_http_500(vllm_servers, run_module):
    server = vllm_servers.start("tiny-broken")  # /health answers 200 ...
    result, playbook = health(run_module, url=server.url, timeout=60)  # ... but it cannot generate
    assert playbook.rc != 0, f"the broken model must not pass\n{server.log_tail()}"
    assert result["status"] == 500, result["msg"]
    assert result["msg"].startswith("/health answered 200 but the completion failed with HTTP 500: ")
    assert result["health_attempts"] == 1, "a 500 from a real request is not retried"
    assert result["served_models"] == ["tiny"]
