"""The openai_compare module's main(): arguments in, JSON result out, each side with its own scripted transport."""

from __future__ import annotations

import json

import pytest
from ansible.module_utils.testing import patch_module_args

from ansible_collections.llmops.platform.plugins.modules import openai_compare

BASE = {"url": "http://127.0.0.1:8000", "api_key": "base-s3cret"}
CAND = {"url": "http://10.0.0.2:8000", "api_key": "cand-s3cret", "validate_certs": False}


@pytest.fixture
def run_main(monkeypatch, capsys):
    """Run the module with `args`; the side whose url is BASE's gets `transports[0]`, the other `transports[1]`."""

    def run(args, *transports):
        seen = []

        def fake_url_transport(params):
            seen.append(params)
            return transports[0] if params["url"] == BASE["url"] else transports[1]

        monkeypatch.setattr(openai_compare, "UrlTransport", fake_url_transport)
        with patch_module_args(args), pytest.raises(SystemExit) as exit_info:
            openai_compare.main()
        output = capsys.readouterr().out
        result = json.loads(output)
        result.update(_output=output, _rc=exit_info.value.code, _params=seen)
        return result

    return run


def test_agreeing_sides_pass_with_figures_and_no_key_in_the_output(run_main, make_transport):
    base, cand = make_transport(), make_transport()
    result = run_main({"baseline": BASE, "candidate": CAND, "_ansible_check_mode": True}, base, cand)
    assert result["_rc"] == 0 and result["passed"] is True and result["changed"] is False
    assert result["compared"] == result["requests"] == 16  # the 8 built-in prompts, completion and chat
    assert result["msg"].startswith("16 of 16 answers agree; p95 latency")
    assert result["baseline"]["latency_ms"]["p50"] is not None and result["ratios"]["throughput"] is not None
    assert "s3cret" not in result["_output"]
    assert base.calls[-1].headers["Authorization"] == "Bearer base-s3cret"
    assert cand.calls[-1].headers["Authorization"] == "Bearer cand-s3cret"
    assert [p["validate_certs"] for p in result["_params"]] == [True, False]  # each side its own options


def test_a_failed_threshold_fails_the_task_and_keeps_every_figure(run_main, make_transport, fake):
    base = make_transport()
    cand = make_transport({"/v1/completions": (200, fake.completion(" something else"))})
    result = run_main({"baseline": BASE, "candidate": CAND, "kinds": ["completion"], "prompts": ["Hi"]}, base, cand)
    assert result["_rc"] == 1 and result["failed"] is True and result["passed"] is False
    assert result["msg"] == (
        "the candidate does not match the baseline: "
        "agreement 0.00% is below min_agreement 100.00%: 1 of 1 answers differ"
    )
    assert result["differences"] == [
        {"kind": "completion", "prompt": "Hi", "baseline": " see adapter on will", "candidate": " something else"}
    ]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        ({"baseline": {"api_key": "x"}, "candidate": CAND}, "missing required arguments: url found in baseline"),
        ({"baseline": BASE, "candidate": CAND, "kinds": ["embeddings"]}, "value of kinds must be one or more of"),
        (
            {"baseline": BASE, "candidate": CAND, "concurrency": 0},
            "cannot compare: concurrency must be between 1 and 256",
        ),
        ({"baseline": BASE, "candidate": {"url": "10.0.0.2:8000"}}, "url must start with http:// or https://"),
    ],
)
def test_bad_arguments_fail_before_any_request(run_main, make_transport, args, words):
    base, cand = make_transport(), make_transport()
    result = run_main(args, base, cand)
    assert result["_rc"] == 1 and words in result["msg"], result["msg"]
    assert base.calls == [] and cand.calls == []
