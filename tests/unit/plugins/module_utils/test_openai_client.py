"""OpenAIEndpoint / ReadinessCheck logic with a scripted transport and a fake clock."""

from __future__ import annotations

import http.client
import socket
import ssl
import urllib.error

import pytest
from ansible.module_utils.urls import SSLValidationError

from ansible_collections.llmops.platform.plugins.module_utils import openai_client as oc

BASE = "http://127.0.0.1:8000"


def make_check(transport, clock, **kwargs):
    endpoint_kwargs = {
        k: kwargs.pop(k) for k in ("api_key", "path_prefix", "headers", "request_timeout") if k in kwargs
    }
    endpoint = oc.OpenAIEndpoint(kwargs.pop("url", BASE), transport=transport, clock=clock, **endpoint_kwargs)
    return oc.ReadinessCheck(endpoint, clock=clock, sleep=clock.sleep, wall_clock=clock.wall, **kwargs)


def assert_rate_limited(transport, path="/health"):
    starts = transport.starts(path)
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert all(gap >= oc.MIN_POLL_INTERVAL - 1e-9 for gap in gaps), gaps


# -- classification --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "kind", "reason"),
    [
        (urllib.error.URLError(ConnectionRefusedError(111, "Connection refused")), oc.REFUSED, "Connection refused"),
        (socket.timeout("timed out"), oc.TIMEOUT, "timed out"),
        (urllib.error.URLError(socket.timeout("timed out")), oc.TIMEOUT, "timed out"),
        (urllib.error.URLError(ssl.SSLCertVerificationError(1, "certificate verify failed")), oc.TLS, "certificate"),
        (urllib.error.URLError(socket.gaierror(-2, "Name or service not known")), oc.NETWORK, "name resolution"),
        (ConnectionResetError(104, "Connection reset by peer"), oc.NETWORK, "ConnectionResetError"),
        (http.client.RemoteDisconnected("Remote end closed connection"), oc.NETWORK, "RemoteDisconnected"),
    ],
)
def test_classify_exception(exc, kind, reason):
    got_kind, got_reason = oc.classify_exception(exc)
    assert got_kind == kind
    assert reason in got_reason


def test_classify_ansible_ssl_validation_error():
    kind, reason = oc.classify_exception(SSLValidationError("Failed to validate the SSL certificate"))
    assert kind == oc.TLS
    assert "Failed to validate" in reason


def test_http_error_becomes_status_and_body(clock, make_transport):
    transport = make_transport({"/v1/models": (503, "loading")})
    endpoint = oc.OpenAIEndpoint(BASE, transport=transport, clock=clock)
    result = endpoint.request("GET", endpoint.api_url("/v1/models"))
    assert (result.kind, result.status, result.body) == (oc.HTTP, 503, "loading")
    assert result.describe() == "HTTP 503"


# -- schedule --------------------------------------------------------------------------------------


def test_backoff_doubles_to_the_cap_and_resets_on_refused():
    schedule = oc.PollSchedule(0.25, 2.0)
    assert [schedule.next_delay(fast=False) for _attempt in range(5)] == [0.5, 1.0, 2.0, 2.0, 2.0]
    assert schedule.next_delay(fast=True) == 0.25
    assert schedule.next_delay(fast=False) == 0.5


@pytest.mark.parametrize(("poll", "cap", "words"), [(0.1, 2.0, "at least 0.25"), (1.0, 0.5, "must not be smaller")])
def test_schedule_rejects_unsafe_intervals(poll, cap, words):
    with pytest.raises(ValueError, match=words):
        oc.PollSchedule(poll, cap)


# -- URLs and requests -----------------------------------------------------------------------------


def test_prefix_applies_to_api_routes_only(clock, make_transport):
    transport = make_transport()
    endpoint = oc.OpenAIEndpoint(BASE + "/", path_prefix="/openai/", transport=transport, clock=clock)
    assert endpoint.api_url("/v1/models") == BASE + "/openai/v1/models"
    assert endpoint.root_url("/health") == BASE + "/health"
    with pytest.raises(ValueError, match="http:// or https://"):
        oc.OpenAIEndpoint("127.0.0.1:8000")


def test_request_headers_bearer_wins_over_header_option(clock, make_transport):
    transport = make_transport()
    endpoint = oc.OpenAIEndpoint(
        BASE, api_key="k3y", headers={"Authorization": "Basic x", "X-Route": "tiny"}, transport=transport, clock=clock
    )
    endpoint.probe("completion", "tiny", "Hello", 4)
    call = transport.calls[-1]
    assert call.headers["Authorization"] == "Bearer k3y"
    assert call.headers["X-Route"] == "tiny"
    assert call.headers["Content-Type"] == "application/json"
    assert call.payload == {"model": "tiny", "prompt": "Hello", "max_tokens": 4, "temperature": 0}


def test_chat_probe_payload_and_parsing(clock, make_transport):
    transport = make_transport()
    endpoint = oc.OpenAIEndpoint(BASE, transport=transport, clock=clock)
    answer, result = endpoint.probe("chat", "tiny", "Hi", 3)
    assert transport.calls[-1].payload["messages"] == [{"role": "user", "content": "Hi"}]
    assert answer == {
        "text": " world w24 all w21",
        "finish_reason": "length",
        "usage": {"prompt_tokens": 6, "completion_tokens": 4, "total_tokens": 10},
    }
    assert result.status == 200


def test_models_not_json_is_malformed_and_transient(clock, make_transport):
    transport = make_transport({"/v1/models": (200, "<html>oops</html>")})
    endpoint = oc.OpenAIEndpoint(BASE, transport=transport, clock=clock)
    with pytest.raises(oc.ReadinessError) as err:
        endpoint.list_models()
    assert err.value.transient
    assert err.value.msg == "/v1/models returned a malformed response (not JSON): <html>oops</html>"


def test_models_without_data_list_is_malformed(clock, make_transport):
    transport = make_transport({"/v1/models": (200, {"models": ["tiny"]})})
    endpoint = oc.OpenAIEndpoint(BASE, path_prefix="openai", transport=transport, clock=clock)
    with pytest.raises(oc.ReadinessError, match=r"^/openai/v1/models returned a malformed response \(no 'data'"):
        endpoint.list_models()


def test_long_bodies_are_truncated_and_key_scrubbed(clock, make_transport):
    body = "key sekret-123 " + "x" * 2000
    transport = make_transport({"/v1/completions": (500, body)})
    endpoint = oc.OpenAIEndpoint(BASE, api_key="sekret-123", transport=transport, clock=clock)
    with pytest.raises(oc.ReadinessError) as err:
        endpoint.probe("completion", "tiny", "Hello", 4)
    assert "sekret-123" not in err.value.msg
    assert "sekret-123" not in err.value.body
    assert err.value.body.startswith("key ********")
    assert err.value.body.endswith("(1513 more characters)")


def test_version_absent_is_none(clock, make_transport):
    endpoint = oc.OpenAIEndpoint(BASE, transport=make_transport({"/version": (404, "")}), clock=clock)
    assert endpoint.version()[0] is None
    endpoint = oc.OpenAIEndpoint(BASE, transport=make_transport({"/version": (200, "<html>")}), clock=clock)
    assert endpoint.version()[0] is None
    endpoint = oc.OpenAIEndpoint(BASE, transport=make_transport(), clock=clock)
    assert endpoint.version()[0] == "0.32.0"


# -- the readiness loop ----------------------------------------------------------------------------


def test_ready_at_once(clock, make_transport):
    transport = make_transport()
    result = make_check(transport, clock, expected_models=["tiny"], probes=["completion", "chat"]).run()
    assert result["ready"] is True
    assert result["served_models"] == ["tiny"]
    assert result["model"] == "tiny"
    assert result["server_version"] == "0.32.0"
    assert result["health_attempts"] == 1
    assert result["polls_per_second"] == 0.0
    assert result["completion"]["text"] == " see adapter on will"
    assert result["chat"]["finish_reason"] == "length"
    assert set(result["latencies"]) == {"health", "models", "completion", "chat", "version"}
    assert all(v == 2.0 for v in result["latencies"].values())
    assert transport.paths() == ["/health", "/v1/models", "/v1/completions", "/v1/chat/completions", "/version"]


def test_refused_polls_every_interval_then_ready(clock, make_transport, fake):
    transport = make_transport({"/health": [fake.REFUSED] * 10 + [(200, b"")]})
    result = make_check(transport, clock, timeout=30).run()
    assert result["ready"]
    assert result["health_attempts"] == 11
    starts = transport.starts("/health")
    assert [round(b - a, 6) for a, b in zip(starts, starts[1:])] == [0.25] * 10
    assert result["polls_per_second"] == 4.0
    assert result["time_to_ready"] == pytest.approx(2.5 + 3 * 0.002)


def test_503_backs_off_and_fails_saying_kept_answering(clock, make_transport):
    transport = make_transport({"/health": (503, "Service Unavailable")})
    with pytest.raises(oc.ReadinessError) as err:
        make_check(transport, clock, timeout=10, max_poll_interval=2.0).run()
    exc = err.value
    assert exc.msg.startswith("http://127.0.0.1:8000/health kept answering HTTP 503 for ")
    assert "(body: Service Unavailable)" in exc.msg
    assert exc.status == 503
    assert exc.body == "Service Unavailable"
    # 0, .5, 1.5, 3.5, 5.5, 7.5, 9.5 (+2 ms per request): 7 attempts in 10 s instead of 40
    assert exc.details["health_attempts"] == 7
    assert exc.details["polls_per_second"] < 1
    assert_rate_limited(transport)
    assert clock.sleeps[:4] == pytest.approx([0.5, 1.0, 2.0, 2.0])


def test_refused_then_503_then_ready_resets_backoff(clock, make_transport, fake):
    health = [fake.REFUSED, fake.REFUSED, (503, ""), (503, ""), fake.REFUSED, (200, b"")]
    transport = make_transport({"/health": health})
    result = make_check(transport, clock, timeout=30).run()
    starts = transport.starts("/health")
    gaps = [round(b - a, 3) for a, b in zip(starts, starts[1:])]
    # refused: start-to-start 0.25; 503: 0.5 then 1.0 after the end of the request; refused again: 0.25
    assert gaps == [0.25, 0.25, 0.502, 1.002, 0.25]
    assert result["health_attempts"] == 6


def test_no_server_fails_not_reachable(clock, make_transport, fake):
    transport = make_transport({"/health": fake.REFUSED})
    with pytest.raises(oc.ReadinessError) as err:
        make_check(transport, clock, timeout=3).run()
    assert err.value.msg == (
        "http://127.0.0.1:8000/health not reachable within 3 s (timeout; 12 attempts, last error: Connection "
        "refused): is the server running and listening on that address? Check its service logs"
    )
    assert err.value.details["polls_per_second"] == 4.0
    assert_rate_limited(transport)


def test_stalled_health_fails_naming_request_timeout(clock, make_transport, fake):
    transport = make_transport({"/health": fake.STALL})
    with pytest.raises(oc.ReadinessError) as err:
        make_check(transport, clock, timeout=10, request_timeout=3).run()
    assert "did not answer within request_timeout (3 s)" in err.value.msg
    assert "(3 s) for 10 s (last error: timed out after 2.5 s)" in err.value.msg
    assert "raise request_timeout" in err.value.msg
    # stall 3 s, back off 0.5 s, stall 3 s, back off 1 s: 2.5 s of the budget left for the last request
    assert [c.timeout for c in transport.calls] == [3, 3, 2.5]


def test_request_timeout_capped_by_budget(clock, make_transport, fake):
    transport = make_transport({"/health": [fake.REFUSED] * 4 + [fake.STALL]})
    with pytest.raises(oc.ReadinessError):
        make_check(transport, clock, timeout=2.5, request_timeout=30).run()
    assert transport.calls[-1].timeout == pytest.approx(2.5 - 1.0)


def test_wrong_key_fails_at_once_naming_401(clock, make_transport):
    transport = make_transport({"/v1/models": (401, {"error": "Unauthorized"})})
    with pytest.raises(oc.ReadinessError) as err:
        make_check(transport, clock, api_key="wrong-key").run()
    exc = err.value
    assert exc.msg == (
        "/v1/models answered HTTP 401: the API key was rejected. Set api_key to the server's --api-key / VLLM_API_KEY"
    )
    assert (exc.status, exc.body) == (401, '{"error": "Unauthorized"}')
    assert exc.details["health_attempts"] == 1
    assert "wrong-key" not in repr(exc.as_result())


def test_missing_key_says_missing(clock, make_transport):
    transport = make_transport({"/v1/models": (401, {"error": "Unauthorized"})})
    with pytest.raises(oc.ReadinessError, match="the API key is missing"):
        make_check(transport, clock).run()


def test_expected_model_missing_lists_served(clock, make_transport, fake):
    transport = make_transport({"/v1/models": (200, fake.models("tiny"))})
    with pytest.raises(oc.ReadinessError) as err:
        make_check(transport, clock, expected_models=["foo"]).run()
    assert err.value.msg.startswith("served models are ['tiny'], expected ['foo']")
    assert err.value.details["served_models"] == ["tiny"]
    assert not err.value.transient


def test_model_option_must_be_served(clock, make_transport, fake):
    transport = make_transport({"/v1/models": (200, fake.models("a", "b"))})
    with pytest.raises(oc.ReadinessError, match=r"model 'c' is not served; served models are \['a', 'b'\]"):
        make_check(transport, clock, model="c").run()
    result = make_check(make_transport({"/v1/models": (200, fake.models("a", "b"))}), clock, model="b").run()
    assert result["model"] == "b"


def test_probe_goes_to_first_expected_model(clock, make_transport, fake):
    transport = make_transport({"/v1/models": (200, fake.models("a", "b"))})
    make_check(transport, clock, expected_models=["b", "a"]).run()
    assert transport.calls[2].payload["model"] == "b"


def test_completion_500_fails_at_once_with_body(clock, make_transport):
    body = '{"error":{"message":"EngineCore encountered an issue","code":500}}'
    transport = make_transport({"/v1/completions": (500, body)})
    with pytest.raises(oc.ReadinessError) as err:
        make_check(transport, clock).run()
    assert err.value.msg == "/health answered 200 but the completion failed with HTTP 500: " + body
    assert err.value.status == 500
    assert err.value.details["health_attempts"] == 1


def test_completion_503_is_retried(clock, make_transport, fake):
    transport = make_transport({"/v1/completions": [(503, "busy"), (200, fake.completion())]})
    result = make_check(transport, clock).run()
    assert result["health_attempts"] == 2


def test_empty_text_fails_at_once(clock, make_transport, fake):
    transport = make_transport({"/v1/completions": (200, fake.completion(text="", finish_reason="stop"))})
    with pytest.raises(oc.ReadinessError) as err:
        make_check(transport, clock).run()
    assert "the completion returned no text (finish_reason=stop" in err.value.msg
    assert not err.value.transient


def test_garbage_models_backs_off_then_reports_malformed(clock, make_transport):
    transport = make_transport({"/v1/models": (200, "not json at all")})
    with pytest.raises(oc.ReadinessError) as err:
        make_check(transport, clock, timeout=6).run()
    assert err.value.msg.startswith("/v1/models returned a malformed response (not JSON): not json at all (for ")
    assert err.value.details["health_attempts"] == 5  # 0, .5, 1.5, 3.5, 5.5
    assert_rate_limited(transport)


def test_no_models_yet_is_transient(clock, make_transport, fake):
    transport = make_transport({"/v1/models": [(200, fake.models()), (200, fake.models("tiny"))]})
    assert make_check(transport, clock).run()["health_attempts"] == 2


def test_tls_failure_fails_at_once(clock, make_transport):
    tls = urllib.error.URLError(ssl.SSLCertVerificationError(1, "certificate verify failed"))
    transport = make_transport({"/health": tls})
    with pytest.raises(oc.ReadinessError, match="Set ca_path") as err:
        make_check(transport, clock, url="https://10.0.0.1:8443").run()
    assert err.value.details["health_attempts"] == 1


def test_health_401_behind_gateway_fails_at_once(clock, make_transport):
    transport = make_transport({"/health": (401, "")})
    with pytest.raises(oc.ReadinessError, match=r"^http://127.0.0.1:8000/health answered HTTP 401: the API key"):
        make_check(transport, clock).run()


def test_path_prefix_and_health_path(clock, make_transport):
    transport = make_transport({"/v2/health/ready": (200, b"")})
    make_check(transport, clock, path_prefix="/openai", health_path="v2/health/ready").run()
    assert transport.paths()[:3] == ["/v2/health/ready", "/openai/v1/models", "/openai/v1/completions"]


def test_options_are_validated():
    endpoint = oc.OpenAIEndpoint(BASE)
    with pytest.raises(ValueError, match="unknown probe"):
        oc.ReadinessCheck(endpoint, probes=["embeddings"])
    with pytest.raises(ValueError, match="timeout must be positive"):
        oc.ReadinessCheck(endpoint, timeout=0)


def test_argument_spec_extends_url_spec():
    spec = oc.openai_endpoint_argument_spec()
    assert spec["url"]["required"] is True
    assert spec["api_key"]["no_log"] is True
    assert {"validate_certs", "client_cert", "client_key", "use_proxy", "http_agent", "ca_path"} <= set(spec)
