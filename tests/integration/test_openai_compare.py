"""llmops.platform.openai_compare run through ansible-playbook against three real vLLM CPU servers.

Two servers load the same model (tiny) with the same settings, the third another model (tiny-v2, whose
answers differ); all three require the same API key. They start together and serve every case of this file.
"""

from __future__ import annotations

import json
import urllib.request

import pytest

MODULE = "llmops.platform.openai_compare"
API_KEY = "compare-test-key-9b1c"

pytestmark = pytest.mark.vllm


@pytest.fixture(scope="module")
def servers(vllm_servers_session):
    launched = {
        "same-a": vllm_servers_session.launch("tiny", api_key=API_KEY),
        "same-b": vllm_servers_session.launch("tiny", api_key=API_KEY),
        "other": vllm_servers_session.launch("tiny-v2", api_key=API_KEY),
    }
    for server in launched.values():
        server.wait_healthy()
    yield launched
    for server in launched.values():
        server.stop()


def side(server, **more):
    return {"url": server.url, "api_key": API_KEY, **more}


def completion(server, prompt: str, max_tokens: int) -> str:
    """The server's answer, asked directly (not through the module)."""
    body = {"model": "tiny", "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "seed": 0}
    request = urllib.request.Request(
        server.url + "/v1/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {API_KEY}"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())["choices"][0]["text"]


def test_same_model_and_settings_agree_fully(servers, run_module):
    """Check mode runs the whole comparison; every answer agrees; both sides are measured."""
    args = {"baseline": side(servers["same-a"]), "candidate": side(servers["same-b"]), "repeat": 2, "concurrency": 4}
    result, playbook = run_module(MODULE, args, check=True)
    assert playbook.rc == 0, result.get("msg")
    assert result["passed"] is True and result["changed"] is False and result["failures"] == []
    assert (result["agreement"], result["compared"], result["requests"]) == (1.0, 32, 32)  # 8 prompts x 2 kinds x 2
    assert result["differences"] == [] and result["differences_total"] == 0
    for name in ("baseline", "candidate"):
        figures = result[name]
        assert figures["model"] == "tiny" and figures["server_version"] == "0.32.0"
        assert figures["errors"] == 0 and figures["unstable"] == [], figures
        latency = figures["latency_ms"]
        assert 0 < latency["p50"] <= latency["p95"] <= latency["max"], latency
        assert figures["requests_per_second"] > 0 and figures["output_tokens_per_second"] > 0
    assert result["ratios"]["p95_latency"] > 0 and result["ratios"]["throughput"] > 0
    assert API_KEY not in playbook.stdout + playbook.stderr


def test_different_models_are_reported_prompt_by_prompt(servers, run_module):
    args = {"baseline": side(servers["same-a"]), "candidate": side(servers["other"]), "kinds": ["completion"]}
    result, playbook = run_module(MODULE, args)
    assert playbook.rc != 0, "different models must not pass a 100 % agreement gate"
    assert result["passed"] is False and result["differences_total"] > 0
    assert result["msg"].startswith("the candidate does not match the baseline: agreement ")
    assert f"{result['differences_total']} of 8 answers differ" in result["msg"]
    for difference in result["differences"]:
        assert difference["baseline"] != difference["candidate"]
        # Each reported answer is the one that side gives when asked directly.
        assert completion(servers["same-a"], difference["prompt"], 16) == difference["baseline"]
        assert completion(servers["other"], difference["prompt"], 16) == difference["candidate"]
    # With the gate lowered to what was measured, the same comparison passes and still reports what differs.
    lowered, playbook = run_module(MODULE, dict(args, min_agreement=result["agreement"]))
    assert playbook.rc == 0 and lowered["passed"] is True, lowered.get("msg")
    assert lowered["differences_total"] == result["differences_total"]


def test_thresholds_fail_when_they_should(servers, run_module):
    base = {"baseline": side(servers["same-a"]), "candidate": side(servers["same-b"]), "kinds": ["completion"]}
    strict = dict(base, min_throughput_ratio=1000.0, max_p95_latency_ms=0.001)
    result, playbook = run_module(MODULE, strict)
    assert playbook.rc != 0 and result["passed"] is False
    assert len(result["failures"]) == 2, result["failures"]
    assert "above max_p95_latency_ms 0.001" in result["failures"][0]
    assert "(min_throughput_ratio 1000.0)" in result["failures"][1]
    lax = dict(base, min_throughput_ratio=0.001, max_p95_latency_ms=600000.0, max_p95_latency_ratio=1000.0)
    result, playbook = run_module(MODULE, lax)
    assert playbook.rc == 0 and result["passed"] is True, result.get("msg")


def test_a_rejected_key_stops_before_measuring_and_is_never_shown(servers, run_module):
    args = {"baseline": side(servers["same-a"]), "candidate": side(servers["same-b"], api_key="wrong-key-4411")}
    result, playbook = run_module(MODULE, args)
    assert playbook.rc != 0
    assert result["msg"].startswith(
        f"cannot compare: candidate ({servers['same-b'].url}): /v1/models answered HTTP 401"
    )
    assert "passed" not in result
    assert "wrong-key-4411" not in playbook.stdout + playbook.stderr
    assert API_KEY not in playbook.stdout + playbook.stderr
