"""openai_compare's logic with scripted endpoints and a fake clock (the real servers: tests/integration)."""

from __future__ import annotations

import pytest

from ansible_collections.llmops.platform.plugins.module_utils import openai_client as oc
from ansible_collections.llmops.platform.plugins.module_utils import openai_compare as cmp

DEFAULTS = dict(
    prompts=["Hello", "Bye"],
    kinds=["completion", "chat"],
    max_tokens=8,
    seed=0,
    repeat=1,
    warmup=1,
    concurrency=1,
    match="exact",
    min_agreement=1.0,
    max_errors=0,
    max_p95_latency_ratio=None,
    max_p95_latency_ms=None,
    min_throughput_ratio=None,
    max_differences=20,
)


def answers(table, default="same answer"):
    """Routes whose completion and chat answers depend on the prompt: table[(kind, prompt)] -> text or status."""

    def route(kind):
        def respond(call):
            prompt = call.payload["prompt"] if kind == "completion" else call.payload["messages"][0]["content"]
            text = table.get((kind, prompt), default)
            if isinstance(text, int):
                return (text, {"error": "boom"})
            if callable(text):
                text = text()
            body = {"choices": [{"text": text, "finish_reason": "length"}], "usage": {"completion_tokens": 4}}
            if kind == "chat":
                body = {
                    "choices": [{"message": {"content": text}, "finish_reason": "length"}],
                    "usage": {"completion_tokens": 4},
                }
            return (200, body)

        return respond

    return {"/v1/completions": route("completion"), "/v1/chat/completions": route("chat")}


@pytest.fixture
def side(clock, make_transport):
    def make(label, routes=None, url="http://127.0.0.1:8000", latency=0.002, model=None, **endpoint):
        transport = make_transport(routes)
        transport.latency = latency
        return cmp.Side(label, oc.OpenAIEndpoint(url, transport=transport, clock=clock, **endpoint), model), transport

    return make


def run(clock, baseline, candidate, **params):
    return cmp.compare(baseline, candidate, dict(DEFAULTS, **params), clock=clock)


@pytest.mark.parametrize(
    ("values", "pct", "expected"),
    [(list(range(1, 21)), 50, 10), (list(range(1, 21)), 95, 19), ([7.0], 95, 7.0), ([], 50, None), ([3, 1, 2], 100, 3)],
)
def test_percentile_is_nearest_rank(values, pct, expected):
    assert cmp.percentile(values, pct) == expected


def test_normalized_match_ignores_case_and_spacing_only():
    assert cmp.normalize("  Hello\n World ", "normalized") == cmp.normalize("hello world", "normalized")
    assert cmp.normalize("Hello world", "exact") != cmp.normalize("hello world", "exact")
    assert cmp.normalize("hello, world", "normalized") != cmp.normalize("hello world", "normalized")


def test_same_answers_agree_and_every_request_is_deterministic(clock, side):
    baseline, base_t = side("baseline", answers({}))
    candidate, cand_t = side("candidate", answers({}), url="http://10.0.0.2:8000")
    result = run(clock, baseline, candidate, repeat=2)
    assert result["passed"] and result["failures"] == []
    assert (result["agreement"], result["agreed"], result["compared"]) == (1.0, 8, 8)
    assert result["requests"] == 8 and result["prompts"] == 2  # 2 prompts x 2 kinds x 2 rounds
    for transport in (base_t, cand_t):
        posts = [c for c in transport.calls if c.method == "POST"]
        assert len(posts) == 1 + 8  # one warm-up request, not measured
        assert all(
            c.payload["temperature"] == 0 and c.payload["seed"] == 0 and c.payload["max_tokens"] == 8 for c in posts
        )
    assert result["baseline"]["model"] == "tiny" and result["baseline"]["server_version"] == "0.32.0"
    assert result["baseline"]["latency_ms"]["p95"] == pytest.approx(2.0)
    assert result["baseline"]["requests_per_second"] > 0 and result["baseline"]["output_tokens_per_second"] > 0


def test_differences_are_reported_with_both_answers_and_fail_min_agreement(clock, side):
    baseline, _transport = side("baseline", answers({}))
    candidate, _transport = side("candidate", answers({("chat", "Bye"): "another answer"}), url="http://10.0.0.2:8000")
    result = run(clock, baseline, candidate, repeat=3)
    assert not result["passed"]
    assert result["differences_total"] == 3  # the same request in 3 rounds...
    assert result["differences"] == [  # ...shown once
        {"kind": "chat", "prompt": "Bye", "baseline": "same answer", "candidate": "another answer"}
    ]
    assert result["agreement"] == pytest.approx(9 / 12, abs=1e-4)
    assert result["failures"] == ["agreement 75.00% is below min_agreement 100.00%: 3 of 12 answers differ"]
    assert run(clock, baseline, candidate, min_agreement=0.75)["passed"]


def test_normalized_match_accepts_answers_that_differ_in_case_and_spacing(clock, side):
    baseline, _transport = side("baseline", answers({}, default="Paris is big"))
    candidate, _transport = side("candidate", answers({}, default=" paris  IS big"), url="http://10.0.0.2:8000")
    assert not run(clock, baseline, candidate)["passed"]
    assert run(clock, baseline, candidate, match="normalized")["passed"]


def test_failed_requests_are_counted_not_compared(clock, side):
    baseline, _transport = side("baseline", answers({}))
    candidate, _transport = side("candidate", answers({("completion", "Hello"): 500}), url="http://10.0.0.2:8000")
    result = run(clock, baseline, candidate)
    assert (result["candidate"]["errors"], result["compared"], result["agreement"]) == (1, 3, 1.0)
    assert result["candidate"]["error_samples"][0]["prompt"] == "Hello"
    assert "HTTP 500" in result["candidate"]["error_samples"][0]["error"]
    assert len(result["failures"]) == 1 and result["failures"][0].startswith("1 requests failed (max_errors 0")
    assert run(clock, baseline, candidate, max_errors=1)["passed"]


def test_every_request_failing_is_never_a_pass(clock, side):
    baseline, _transport = side("baseline", answers({}))
    failing = {(k, p): 503 for k in ("completion", "chat") for p in ("Hello", "Bye")}
    candidate, _transport = side("candidate", answers(failing), url="http://10.0.0.2:8000")
    result = run(clock, baseline, candidate, max_errors=1000)
    assert not result["passed"] and result["agreement"] is None
    assert "nothing to compare" in result["failures"][0]


def test_latency_and_throughput_thresholds(clock, side):
    baseline, _transport = side("baseline", answers({}), latency=0.010)
    candidate, _transport = side("candidate", answers({}), url="http://10.0.0.2:8000", latency=0.050)
    result = run(clock, baseline, candidate, max_p95_latency_ratio=2.0, min_throughput_ratio=0.5, max_p95_latency_ms=20)
    assert result["ratios"]["p95_latency"] == pytest.approx(5.0)
    assert result["ratios"]["throughput"] == pytest.approx(0.2, abs=0.01)
    assert [f.split(" ")[0:2] for f in result["failures"]] == [["candidate", "p95"]] * 2 + [["candidate", "throughput"]]
    assert "max_p95_latency_ratio 2.0" in result["failures"][0]
    assert "max_p95_latency_ms 20" in result["failures"][1]
    assert "min_throughput_ratio 0.5" in result["failures"][2]
    assert run(clock, baseline, candidate, max_p95_latency_ratio=6.0, min_throughput_ratio=0.1)["passed"]


def test_a_side_that_answers_differently_across_rounds_is_unstable(clock, side):
    texts = iter(["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"])
    baseline, _transport = side("baseline", answers({("completion", "Hello"): lambda: next(texts)}))
    candidate, _transport = side("candidate", answers({}), url="http://10.0.0.2:8000")
    result = run(clock, baseline, candidate, repeat=2, kinds=["completion"], min_agreement=0)
    assert result["baseline"]["unstable"] == [{"kind": "completion", "prompt": "Hello", "answers": 2}]
    assert result["candidate"]["unstable"] == []


def test_concurrent_requests_keep_each_answer_with_its_prompt(clock, side):
    table = {("completion", f"p{i}"): f"answer {i}" for i in range(20)}
    baseline, _transport = side("baseline", answers(table))
    candidate, _transport = side("candidate", answers(table), url="http://10.0.0.2:8000")
    result = run(clock, baseline, candidate, prompts=[f"p{i}" for i in range(20)], kinds=["completion"], concurrency=8)
    assert result["passed"] and result["compared"] == 20 and result["baseline"]["concurrency"] == 8


def test_an_unusable_side_stops_before_measuring_and_never_shows_the_key(clock, side):
    baseline, base_t = side("baseline", answers({}))
    candidate, _transport = side(
        "candidate", {"/v1/models": (401, "bad key k3y-secret")}, url="http://10.0.0.2:8000", api_key="k3y-secret"
    )
    with pytest.raises(cmp.CompareError) as err:
        run(clock, baseline, candidate)
    assert err.value.args[0].startswith("candidate (http://10.0.0.2:8000): /v1/models answered HTTP 401")
    assert "k3y-secret" not in str(err.value)
    assert not [c for c in base_t.calls if c.method == "POST"]


def test_a_model_the_side_does_not_serve_names_the_option(clock, side):
    baseline, _transport = side("baseline", answers({}))
    candidate, _transport = side("candidate", answers({}), url="http://10.0.0.2:8000", model="big")
    with pytest.raises(
        cmp.CompareError, match=r"does not serve model 'big'; it serves \['tiny'\]. Set candidate.model"
    ):
        run(clock, baseline, candidate)


def test_a_side_compared_with_itself_is_refused(clock, side):
    baseline, _transport = side("baseline", answers({}))
    candidate, _transport = side("candidate", answers({}), url="http://127.0.0.1:8000/")
    with pytest.raises(cmp.CompareError, match="same endpoint and model"):
        run(clock, baseline, candidate)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"concurrency": 0}, "concurrency must be between 1 and 256, got 0"),
        ({"concurrency": 10000}, "concurrency must be between 1 and 256"),
        ({"repeat": 0}, "repeat must be between 1 and 100"),
        ({"warmup": -1}, "warmup must be between 0 and 100"),
        ({"max_tokens": 0}, "max_tokens must be between 1 and 4096"),
        ({"max_errors": -1}, "max_errors must be between 0"),
        ({"max_differences": -5}, "max_differences must be between 0 and 1000"),
        ({"prompts": []}, "prompts must not be empty"),
        ({"prompts": ["ok", "  "]}, "prompts must not be blank (entries [1])"),
        ({"kinds": []}, "kinds must name at least one of completion, chat"),
        ({"min_agreement": 1.5}, "min_agreement must be between 0 and 1"),
        ({"min_agreement": -0.1}, "min_agreement must be between 0 and 1"),
        ({"max_p95_latency_ratio": 0.0}, "max_p95_latency_ratio must be a positive number"),
        ({"min_throughput_ratio": float("nan")}, "min_throughput_ratio must be a positive number"),
        ({"max_p95_latency_ms": float("inf")}, "max_p95_latency_ms must be a positive number"),
    ],
)
def test_settings_out_of_range_are_refused_naming_the_option(clock, side, change, named):
    baseline, base_t = side("baseline", answers({}))
    candidate, _transport = side("candidate", answers({}), url="http://10.0.0.2:8000")
    with pytest.raises(cmp.CompareError) as err:
        run(clock, baseline, candidate, **change)
    assert named in str(err.value)
    assert base_t.calls == []  # refused before any request
