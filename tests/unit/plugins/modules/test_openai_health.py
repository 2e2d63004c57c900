"""The openai_health module's main(): arguments in, JSON result out, with a scripted transport."""

from __future__ import annotations

import json

import pytest
from ansible.module_utils.testing import patch_module_args

from ansible_collections.llmops.platform.plugins.modules import openai_health


@pytest.fixture
def run_main(monkeypatch, capsys):
    """Run the module with `args` against `transport`; return its parsed JSON result."""

    def run(args, transport):
        seen_params = []

        def fake_url_transport(params):
            seen_params.append(params)
            return transport

        monkeypatch.setattr(openai_health, "UrlTransport", fake_url_transport)
        with patch_module_args(args), pytest.raises(SystemExit) as exit_info:
            openai_health.main()
        output = capsys.readouterr().out
        result = json.loads(output)
        # what the module printed, for "the key never leaves the module" checks
        result["_output"] = output
        result["_rc"] = exit_info.value.code
        result["_transport_params"] = seen_params[0] if seen_params else None
        return result

    return run


def test_ready_result_shape(run_main, make_transport):
    transport = make_transport()
    result = run_main(
        {"url": "http://127.0.0.1:8000", "api_key": "s3cret", "expected_models": ["tiny"], "probes": ["completion"]},
        transport,
    )
    assert result["_rc"] == 0
    assert result["changed"] is False
    assert result["ready"] is True
    assert result["served_models"] == ["tiny"]
    assert result["server_version"] == "0.32.0"
    assert result["completion"]["text"] == " see adapter on will"
    assert result["chat"] is None
    assert result["latencies"]["chat"] is None
    assert result["finished_at"] >= result["ready_at"]
    assert "s3cret" not in result["_output"]
    assert transport.calls[1].headers["Authorization"] == "Bearer s3cret"


def test_url_options_reach_the_transport(run_main, make_transport):
    result = run_main(
        {
            "url": "https://127.0.0.1:8443",
            "validate_certs": False,
            "ca_path": "/etc/ssl/ca.pem",
            "http_agent": "llmops-health",
            "use_proxy": False,
        },
        make_transport(),
    )
    params = result["_transport_params"]
    assert params["validate_certs"] is False
    assert params["ca_path"] == "/etc/ssl/ca.pem"
    assert params["http_agent"] == "llmops-health"
    assert params["use_proxy"] is False


def test_check_mode_runs_fully(run_main, make_transport):
    transport = make_transport()
    result = run_main({"url": "http://127.0.0.1:8000", "_ansible_check_mode": True}, transport)
    assert result["ready"] is True
    assert result["changed"] is False
    assert "/v1/completions" in transport.paths()


def test_failure_reports_status_body_and_hides_key(run_main, make_transport):
    transport = make_transport({"/v1/models": (401, '{"error":"Unauthorized","key":"wr0ng"}')})
    result = run_main({"url": "http://127.0.0.1:8000", "api_key": "wr0ng"}, transport)
    assert result["_rc"] == 1
    assert result["failed"] is True
    assert result["ready"] is False
    assert result["changed"] is False
    assert result["status"] == 401
    assert result["msg"].startswith("/v1/models answered HTTP 401: the API key was rejected")
    assert result["kind"] == "auth"
    assert "wr0ng" not in result["_output"]


@pytest.mark.parametrize(
    ("route", "kind"), [("/health", "timeout"), ("/v1/completions", "timeout"), ("/health", "refused")]
)
def test_failure_kind_tells_a_hung_server_from_a_stopped_one(run_main, make_transport, fake, route, kind):
    # A server that accepts and never answers (a stopped engine behind its front) fails with kind timeout, whether
    # /health or the completion hangs; a closed port with kind refused (the fleet status report: hung vs stopped).
    transport = make_transport({route: fake.STALL if kind == "timeout" else fake.REFUSED})
    result = run_main({"url": "http://127.0.0.1:8000", "timeout": 1, "request_timeout": 1}, transport)
    assert result["_rc"] == 1 and result["ready"] is False
    assert result["kind"] == kind, result["msg"]


def test_bad_options_fail_before_any_request(run_main, make_transport):
    transport = make_transport()
    result = run_main({"url": "http://127.0.0.1:8000", "poll_interval": 0.1}, transport)
    assert result["failed"] is True
    assert "poll_interval must be at least 0.25" in result["msg"]
    assert transport.calls == []


def test_probe_choices_are_enforced(run_main, make_transport):
    result = run_main({"url": "http://127.0.0.1:8000", "probes": ["embeddings"]}, make_transport())
    assert result["failed"] is True
    assert "probes" in result["msg"]
    assert "completion, chat" in result["msg"]
