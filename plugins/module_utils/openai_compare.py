# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Parity of two OpenAI-compatible endpoints (the logic of llmops.platform.openai_compare).

The same prompt set (completion and/or chat, temperature 0, a fixed seed) is sent to a baseline and a
candidate endpoint, one endpoint after the other so that two sides sharing hardware do not slow each other
down. Each side is measured at the same concurrency: latency of every request (p50, p95, mean, max) and
throughput over the batch's wall time (requests and generated tokens per second). Answers are compared
prompt by prompt; thresholds set by the user decide whether the comparison passes.

Only the standard library and ansible.module_utils (through openai_client) are used.
"""

import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ansible_collections.llmops.platform.plugins.module_utils.openai_client import (
    PROBES,
    OpenAIEndpoint,
    ReadinessError,
)

MATCHES = ("exact", "normalized")

# Used when the caller gives no prompts: short, varied, answerable by any instruction or base model.
DEFAULT_PROMPTS = (
    "Hello",
    "The capital of France is",
    "Write one sentence about the sea.",
    "List three prime numbers.",
    "Translate 'good morning' into Polish.",
    "What is 12 times 12?",
    "Name a colour of the rainbow.",
    "Complete the sequence: 2, 4, 8,",
)

LIMITS = {
    # option: (lowest, highest) accepted
    "concurrency": (1, 256),
    "repeat": (1, 100),
    "warmup": (0, 100),
    "max_tokens": (1, 4096),
    "max_differences": (0, 1000),
    "max_errors": (0, 1000000),
}


class CompareError(Exception):
    """A setting or a side that makes the comparison impossible (not a threshold that failed)."""


def percentile(values: Sequence[float], pct: float) -> Optional[float]:
    """Nearest-rank percentile (the smallest value with at least pct % of the values at or below it)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100.0 * len(ordered)))
    return ordered[rank - 1]


def normalize(text: str, match: str) -> str:
    """The form two answers are compared in: exact, or with case and runs of white space ignored."""
    if match == "normalized":
        return " ".join(text.split()).casefold()
    return text


def validate(params: Dict[str, Any]) -> List[str]:
    """Every problem with the comparison's settings, each naming its option (empty when fine)."""
    problems = []
    for name, (low, high) in LIMITS.items():
        value = params.get(name)
        if value is not None and not low <= value <= high:
            problems.append(f"{name} must be between {low} and {high}, got {value}")
    prompts = params.get("prompts")
    if prompts is not None:
        if not prompts:
            problems.append("prompts must not be empty (leave it unset for the built-in set)")
        blank = [i for i, prompt in enumerate(prompts) if not str(prompt).strip()]
        if blank:
            problems.append(f"prompts must not be blank (entries {blank})")
    if not params.get("kinds"):
        problems.append(f"kinds must name at least one of {', '.join(PROBES)}")
    agreement = params.get("min_agreement")
    if agreement is not None and not 0.0 <= agreement <= 1.0:
        problems.append(f"min_agreement must be between 0 and 1 (a fraction of the answers), got {agreement}")
    for name in ("max_p95_latency_ratio", "min_throughput_ratio", "max_p95_latency_ms"):
        value = params.get(name)
        if value is not None and not (value > 0 and math.isfinite(value)):
            problems.append(f"{name} must be a positive number, got {value}")
    return problems


class Side:
    """One endpoint under comparison: its label, connection and served model."""

    def __init__(self, label: str, endpoint: OpenAIEndpoint, model: Optional[str] = None) -> None:
        self.label = label
        self.endpoint = endpoint
        self.model = model
        self.server_version: Optional[str] = None

    def resolve(self) -> None:
        """The model to ask (the one set, or the first served) and the server's version; fails when the
        endpoint cannot be used at all (unreachable, rejected key, model not served)."""
        try:
            served, _result = self.endpoint.list_models()
        except ReadinessError as exc:
            raise CompareError(f"{self.label} ({self.endpoint.url}): {exc.msg}") from None
        if not served:
            raise CompareError(f"{self.label} ({self.endpoint.url}) serves no models (/v1/models is empty)")
        if self.model is None:
            self.model = served[0]
        elif self.model not in served:
            raise CompareError(
                f"{self.label} ({self.endpoint.url}) does not serve model {self.model!r}; it serves {served}. "
                f"Set {self.label}.model to one of them"
            )
        self.server_version, _result = self.endpoint.version()


def run_side(
    side: Side,
    requests: List[Tuple[str, str]],
    *,
    max_tokens: int,
    seed: Optional[int],
    concurrency: int,
    warmup: int,
    clock: Callable[[], float] = time.monotonic,
    progress: Optional[Callable[[str], None]] = None,
) -> Dict[str, Any]:
    """Send every (kind, prompt) request to the side at `concurrency` requests in flight; `warmup` requests
    first, not measured (the first requests of a fresh server also build caches). Returns the samples in
    the order of `requests` and the side's figures."""
    for index in range(warmup):
        kind, prompt = requests[index % len(requests)]
        _ask(side, kind, prompt, max_tokens, seed)
    samples: List[Optional[Dict[str, Any]]] = [None] * len(requests)
    done = [0]
    lock = threading.Lock()

    def one(index: int) -> None:
        kind, prompt = requests[index]
        samples[index] = _ask(side, kind, prompt, max_tokens, seed)
        with lock:
            done[0] += 1
            if progress and (done[0] % max(1, len(requests) // 4) == 0 or done[0] == len(requests)):
                progress(f"[compare {side.label}] {done[0]} of {len(requests)} requests answered")

    started = clock()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(one, range(len(requests))))
    wall = max(clock() - started, 1e-6)
    answered = [s for s in samples if s and s["error"] is None]
    latencies = [s["latency_ms"] for s in answered]
    tokens = sum(s["completion_tokens"] or 0 for s in answered)
    figures = dict(
        url=side.endpoint.url,
        model=side.model,
        server_version=side.server_version,
        requests=len(requests),
        errors=len(requests) - len(answered),
        error_samples=[dict(kind=s["kind"], prompt=s["prompt"], error=s["error"]) for s in samples if s and s["error"]][
            :5
        ],
        latency_ms=dict(
            p50=percentile(latencies, 50),
            p95=percentile(latencies, 95),
            mean=round(sum(latencies) / len(latencies), 1) if latencies else None,
            max=max(latencies) if latencies else None,
        ),
        requests_per_second=round(len(answered) / wall, 3),
        output_tokens_per_second=round(tokens / wall, 2),
        wall_seconds=round(wall, 3),
        concurrency=concurrency,
    )
    return dict(samples=samples, figures=figures)


def _ask(side: Side, kind: str, prompt: str, max_tokens: int, seed: Optional[int]) -> Dict[str, Any]:
    sample: Dict[str, Any] = dict(kind=kind, prompt=prompt, text=None, latency_ms=None, completion_tokens=None)
    try:
        answer, result = side.endpoint.probe(kind, side.model, prompt, max_tokens, seed=seed, allow_empty=True)
    except ReadinessError as exc:
        sample["error"] = exc.msg
        return sample
    usage = answer.get("usage") if isinstance(answer.get("usage"), dict) else {}
    sample.update(
        text=answer["text"],
        latency_ms=result.elapsed_ms,
        completion_tokens=usage.get("completion_tokens"),
        error=None,
    )
    return sample


def compare_answers(
    baseline: List[Dict[str, Any]], candidate: List[Dict[str, Any]], match: str, max_differences: int
) -> Dict[str, Any]:
    """Agreement of two sides' answers to the same requests (a request either side failed is not compared)."""
    agreed = compared = 0
    differences = []
    for base, cand in zip(baseline, candidate):
        if base["error"] is not None or cand["error"] is not None:
            continue
        compared += 1
        if normalize(base["text"], match) == normalize(cand["text"], match):
            agreed += 1
        else:
            differences.append(
                dict(kind=base["kind"], prompt=base["prompt"], baseline=base["text"], candidate=cand["text"])
            )
    return dict(
        agreed=agreed,
        compared=compared,
        agreement=round(agreed / compared, 4) if compared else None,
        differences_total=len(differences),
        differences=_unique(differences)[:max_differences],
    )


def _unique(differences: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One entry per distinct (kind, prompt, answers): repeats of a request differ the same way."""
    seen, out = set(), []
    for item in differences:
        key = (item["kind"], item["prompt"], item["baseline"], item["candidate"])
        if key not in seen:
            seen.add(key)
            out.append(item)
    return out


def unstable(samples: List[Dict[str, Any]], match: str) -> List[Dict[str, Any]]:
    """Requests one side answered differently across repeats (the side itself is not deterministic)."""
    answers: Dict[Tuple[str, str], set] = {}
    for sample in samples:
        if sample["error"] is None:
            answers.setdefault((sample["kind"], sample["prompt"]), set()).add(normalize(sample["text"], match))
    return [
        dict(kind=kind, prompt=prompt, answers=len(texts))
        for (kind, prompt), texts in answers.items()
        if len(texts) > 1
    ]


def thresholds_failed(result: Dict[str, Any], params: Dict[str, Any]) -> List[str]:
    """The thresholds the comparison did not meet, each with its figures."""
    failed = []
    base, cand = result["baseline"], result["candidate"]
    errors = base["errors"] + cand["errors"]
    if errors > params["max_errors"]:
        first = (base["error_samples"] + cand["error_samples"])[:1]
        failed.append(
            f"{errors} requests failed (max_errors {params['max_errors']}; baseline {base['errors']}, "
            f"candidate {cand['errors']}), first: {first[0]['error'] if first else 'unknown'}"
        )
    agreement = result["agreement"]
    if agreement is None:
        failed.append("no request was answered by both sides: nothing to compare")
    elif agreement < params["min_agreement"]:
        failed.append(
            f"agreement {agreement:.2%} is below min_agreement {params['min_agreement']:.2%}: "
            f"{result['differences_total']} of {result['compared']} answers differ"
        )
    ratio = result["ratios"]["p95_latency"]
    limit = params.get("max_p95_latency_ratio")
    if limit is not None and ratio is not None and ratio > limit:
        failed.append(
            f"candidate p95 latency {cand['latency_ms']['p95']} ms is {ratio:.2f}x the baseline's "
            f"{base['latency_ms']['p95']} ms (max_p95_latency_ratio {limit})"
        )
    limit = params.get("max_p95_latency_ms")
    if limit is not None and cand["latency_ms"]["p95"] is not None and cand["latency_ms"]["p95"] > limit:
        failed.append(f"candidate p95 latency {cand['latency_ms']['p95']} ms is above max_p95_latency_ms {limit}")
    ratio = result["ratios"]["throughput"]
    limit = params.get("min_throughput_ratio")
    if limit is not None and ratio is not None and ratio < limit:
        failed.append(
            f"candidate throughput {cand['requests_per_second']} req/s is {ratio:.2f}x the baseline's "
            f"{base['requests_per_second']} req/s (min_throughput_ratio {limit})"
        )
    return failed


def _ratio(candidate: Optional[float], baseline: Optional[float]) -> Optional[float]:
    if candidate is None or not baseline:
        return None
    return round(candidate / baseline, 3)


def compare(
    baseline: Side,
    candidate: Side,
    params: Dict[str, Any],
    clock: Callable[[], float] = time.monotonic,
    progress: Optional[Callable[[str], None]] = None,
) -> Dict[str, Any]:
    """The whole comparison: resolve both sides, measure each, compare, apply the thresholds.

    Returns the result with `passed` and `failures`; raises CompareError when it cannot be done."""
    problems = validate(params)
    if problems:
        raise CompareError("; ".join(problems))
    for side in (baseline, candidate):
        side.resolve()
    if (baseline.endpoint.api_url("/v1"), baseline.model) == (candidate.endpoint.api_url("/v1"), candidate.model):
        raise CompareError(
            f"baseline and candidate are the same endpoint and model ({baseline.endpoint.api_url('/v1')}, "
            f"{baseline.model}): a comparison with itself proves nothing"
        )
    prompts = list(params.get("prompts") or DEFAULT_PROMPTS)
    requests = [(kind, prompt) for _round in range(params["repeat"]) for kind in params["kinds"] for prompt in prompts]
    options = dict(
        max_tokens=params["max_tokens"],
        seed=params.get("seed"),
        concurrency=params["concurrency"],
        warmup=params["warmup"],
        clock=clock,
        progress=progress,
    )
    runs = {side.label: run_side(side, requests, **options) for side in (baseline, candidate)}
    base, cand = runs[baseline.label], runs[candidate.label]
    result = compare_answers(base["samples"], cand["samples"], params["match"], params["max_differences"])
    result["baseline"] = dict(base["figures"], unstable=unstable(base["samples"], params["match"]))
    result["candidate"] = dict(cand["figures"], unstable=unstable(cand["samples"], params["match"]))
    result["ratios"] = dict(
        p95_latency=_ratio(result["candidate"]["latency_ms"]["p95"], result["baseline"]["latency_ms"]["p95"]),
        throughput=_ratio(result["candidate"]["requests_per_second"], result["baseline"]["requests_per_second"]),
    )
    result["prompts"] = len(prompts)
    result["requests"] = len(requests)
    result["failures"] = thresholds_failed(result, params)
    result["passed"] = not result["failures"]
    return result
