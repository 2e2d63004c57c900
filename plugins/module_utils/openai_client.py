# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Talk to an OpenAI-compatible server (vLLM, or a gateway in front of it).

Shared by every module of the collection that calls such an endpoint:

* `openai_endpoint_argument_spec()` declares the connection options once (documented once in the
  `llmops.platform.openai_endpoint` doc fragment).
* `OpenAIEndpoint` builds requests, parses JSON, classifies failures. Its transport is injectable:
  modules use `UrlTransport` (ansible.module_utils.urls.open_url), unit tests a fake.
* `ReadinessCheck` is the adaptive polling loop that waits until the server answers /health AND proves
  it serves (lists the expected models, returns generated text for a real request).

Only the standard library and ansible.module_utils are used, so this runs on any managed host with
Python 3.8+.
"""

import http.client
import json
import socket
import ssl
import time
import urllib.error
from typing import Any, Callable, Dict, List, Optional, Tuple

from ansible.module_utils.urls import ConnectionError as UrlsConnectionError
from ansible.module_utils.urls import SSLValidationError, open_url, url_argument_spec

# Never poll faster than this, whatever the options say: 4 readiness attempts per second at most.
MIN_POLL_INTERVAL = 0.25
BODY_SNIPPET = 500
# Request timeouts are capped by the time left in the readiness budget, but never below this.
MIN_REQUEST_TIMEOUT = 1.0

PROBES = ("completion", "chat")

# Outcome kinds of one HTTP exchange.
OK = "ok"  # 2xx
HTTP = "http"  # any other status
REFUSED = "refused"  # nothing listens on the port (vLLM while loading)
TIMEOUT = "timeout"
NETWORK = "network"  # reset, DNS, unreachable, bad status line...
TLS = "tls"  # certificate validation; waiting does not fix it


def openai_endpoint_argument_spec() -> Dict[str, Dict[str, Any]]:
    """Options of every module that talks to an OpenAI endpoint (doc fragment openai_endpoint)."""
    spec = url_argument_spec()
    spec.update(
        url=dict(type="str", required=True),
        path_prefix=dict(type="str", default=""),
        api_key=dict(type="str", no_log=True),
        headers=dict(type="dict", default={}),
        request_timeout=dict(type="float", default=30.0),
        ca_path=dict(type="path"),
    )
    return spec


class HttpResult:
    """What one request produced: a status and body, or the reason there was none."""

    def __init__(
        self,
        url: str,
        kind: str,
        *,
        status: Optional[int] = None,
        body: str = "",
        error: Optional[str] = None,
        elapsed_ms: float = 0.0,
    ) -> None:
        self.url = url
        self.kind = kind
        self.status = status
        self.body = body
        self.error = error
        self.elapsed_ms = elapsed_ms

    @property
    def ok(self) -> bool:
        return self.kind == OK

    def describe(self) -> str:
        if self.status is not None:
            return f"HTTP {self.status}"
        return self.error or self.kind

    def __repr__(self) -> str:
        return f"HttpResult({self.url}, {self.describe()})"


class ReadinessError(Exception):
    """A failure with a message that says what happened and what to do.

    `transient` failures are retried by ReadinessCheck until the budget is spent; the others end the
    wait at once (waiting would not fix a rejected API key or a model that crashes on a request).
    """

    def __init__(
        self,
        msg: str,
        *,
        status: Optional[int] = None,
        body: Optional[str] = None,
        transient: bool = False,
        kind: Optional[str] = None,
        phase: Optional[str] = None,
        **details: Any,
    ) -> None:
        super().__init__(msg)
        self.msg = msg
        self.phase = phase
        self.status = status
        self.body = body
        self.transient = transient
        self.kind = kind
        self.details = details

    def as_result(self) -> Dict[str, Any]:
        """Keyword arguments for fail_json (msg included)."""
        result = dict(self.details)
        result["msg"] = self.msg
        if self.status is not None:
            result["status"] = self.status
        if self.body is not None:
            result["body"] = self.body
        return result


Transport = Callable[[str, str, Dict[str, str], Optional[bytes], float], Tuple[int, bytes]]


class UrlTransport:
    """Send requests with ansible.module_utils.urls.open_url, honouring the url_argument_spec options."""

    def __init__(self, params: Dict[str, Any]) -> None:
        self._kwargs = dict(
            use_proxy=params.get("use_proxy", True),
            force=params.get("force", False),
            validate_certs=params.get("validate_certs", True),
            url_username=params.get("url_username"),
            url_password=params.get("url_password"),
            http_agent=params.get("http_agent"),
            force_basic_auth=params.get("force_basic_auth", False),
            client_cert=params.get("client_cert"),
            client_key=params.get("client_key"),
            use_gssapi=params.get("use_gssapi", False),
            ca_path=params.get("ca_path"),
        )

    def __call__(
        self, method: str, url: str, headers: Dict[str, str], data: Optional[bytes], timeout: float
    ) -> Tuple[int, bytes]:
        response = open_url(url, data=data, headers=headers, method=method, timeout=timeout, **self._kwargs)
        try:
            return response.status, response.read()
        finally:
            response.close()


def classify_exception(exc: BaseException) -> Tuple[str, str]:
    """Map what urllib/open_url raised to an outcome kind and a readable reason."""
    reason: Any = exc
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        reason = exc.reason
    if isinstance(reason, ConnectionRefusedError):
        return REFUSED, "Connection refused"
    if isinstance(reason, (socket.timeout, TimeoutError)) or "timed out" in str(reason):
        return TIMEOUT, "timed out"
    if isinstance(reason, (ssl.SSLCertVerificationError, SSLValidationError)):
        return TLS, f"TLS certificate verification failed: {reason}"
    if isinstance(reason, socket.gaierror):
        return NETWORK, "name resolution failed: %s" % (reason.strerror or reason)
    if isinstance(reason, (ConnectionError, http.client.HTTPException, OSError, UrlsConnectionError)):
        return NETWORK, f"{type(reason).__name__}: {reason}" if str(reason) else type(reason).__name__
    return NETWORK, str(reason) or type(reason).__name__


def join_url(base: str, prefix: str, path: str) -> str:
    prefix = prefix.strip("/")
    parts = [base.rstrip("/")]
    if prefix:
        parts.append(prefix)
    parts.append(path.lstrip("/"))
    return "/".join(parts)


class OpenAIEndpoint:
    """One OpenAI-compatible server: request building, JSON parsing and error classification.

    `url` is the server's base URL (it may include a path, e.g. behind an ingress). `path_prefix` is put
    in front of the OpenAI API routes (`/v1/...`) only: gateways such as KServe serve the API under
    `/openai` while health and version stay at the root.
    """

    def __init__(
        self,
        url: str,
        *,
        path_prefix: str = "",
        api_key: Optional[str] = None,
        headers: Optional[Dict[str, str]] = None,
        request_timeout: float = 30.0,
        transport: Optional[Transport] = None,
        clock: Optional[Callable[[], float]] = None,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {url!r}")
        self.url = url.rstrip("/")
        self.path_prefix = path_prefix.strip("/")
        self._api_key = api_key or None
        self._headers = {str(k): str(v) for k, v in (headers or {}).items()}
        self.request_timeout = float(request_timeout)
        self._transport = transport or UrlTransport({})
        self._clock = clock or time.monotonic

    # -- URLs and requests -------------------------------------------------------------------------

    def api_url(self, path: str) -> str:
        return join_url(self.url, self.path_prefix, path)

    def root_url(self, path: str) -> str:
        return join_url(self.url, "", path)

    def scrub(self, text: str) -> str:
        """Never let the API key leave the module, whatever a server echoes back."""
        if self._api_key and self._api_key in text:
            text = text.replace(self._api_key, "********")
        return text

    def snippet(self, text: str) -> str:
        text = self.scrub(text)
        if len(text) > BODY_SNIPPET:
            return f"{text[:BODY_SNIPPET]}... ({len(text) - BODY_SNIPPET} more characters)"
        return text

    def request(
        self, method: str, url: str, payload: Optional[Dict[str, Any]] = None, timeout: Optional[float] = None
    ) -> HttpResult:
        headers = dict(self._headers)
        headers.setdefault("Accept", "application/json")
        data = None
        if payload is not None:
            data = json.dumps(payload).encode("utf-8")
            headers["Content-Type"] = "application/json"
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        timeout = self.request_timeout if timeout is None else timeout
        started = self._clock()
        try:
            status, raw = self._transport(method, url, headers, data, timeout)
        except urllib.error.HTTPError as exc:
            try:
                raw = exc.read() or b""
            except Exception:
                raw = b""
            return HttpResult(url, HTTP, status=exc.code, body=_decode(raw), elapsed_ms=self._ms(started))
        except Exception as exc:
            kind, reason = classify_exception(exc)
            if kind == TIMEOUT:
                reason = f"timed out after {_fmt(timeout)} s"
            return HttpResult(url, kind, error=self.scrub(reason), elapsed_ms=self._ms(started))
        kind = OK if 200 <= status < 300 else HTTP
        return HttpResult(url, kind, status=status, body=_decode(raw), elapsed_ms=self._ms(started))

    def _ms(self, started: float) -> float:
        return round((self._clock() - started) * 1000.0, 1)

    # -- endpoints ---------------------------------------------------------------------------------

    def health(self, path: str = "/health", timeout: Optional[float] = None) -> HttpResult:
        return self.request("GET", self.root_url(path), timeout=timeout)

    def version(self, timeout: Optional[float] = None) -> Tuple[Optional[str], HttpResult]:
        """The server's version from /version (vLLM), None when the server does not say."""
        result = self.request("GET", self.root_url("/version"), timeout=timeout)
        if not result.ok:
            return None, result
        try:
            data = json.loads(result.body)
        except ValueError:
            return None, result
        version = data.get("version") if isinstance(data, dict) else None
        return (str(version) if version is not None else None), result

    def parse_json(self, result: HttpResult, what: str) -> Any:
        try:
            return json.loads(result.body)
        except ValueError:
            raise ReadinessError(
                "{} returned a malformed response (not JSON): {}".format(what, self.snippet(result.body) or "<empty>"),
                status=result.status,
                body=self.snippet(result.body),
                transient=True,
                kind="malformed",
            ) from None

    def list_models(self, timeout: Optional[float] = None) -> Tuple[List[str], HttpResult]:
        """Served model names from /v1/models (LoRA adapters included). Raises ReadinessError."""
        entries, result = self.list_model_entries(timeout=timeout)
        return [str(e["id"]) for e in entries], result

    def list_model_entries(self, timeout: Optional[float] = None) -> Tuple[List[Dict[str, Any]], HttpResult]:
        """The entries of /v1/models: ``id``, and for a LoRA adapter ``parent`` (the base model's served name)
        and ``root`` (the adapter's path). Raises ReadinessError."""
        result = self.request("GET", self.api_url("/v1/models"), timeout=timeout)
        what = "/{}".format(join_url("", self.path_prefix, "/v1/models").lstrip("/"))
        if not result.ok:
            raise self.http_failure(what, result)
        data = self.parse_json(result, what)
        entries = data.get("data") if isinstance(data, dict) else None
        if not isinstance(entries, list) or not all(isinstance(e, dict) and "id" in e for e in entries):
            raise ReadinessError(
                f"{what} returned a malformed response (no 'data' list of models with an 'id'): "
                f"{self.snippet(result.body)}",
                status=result.status,
                body=self.snippet(result.body),
                transient=True,
                kind="malformed",
            )
        return entries, result

    def probe(
        self,
        kind: str,
        model: str,
        prompt: str,
        max_tokens: int,
        timeout: Optional[float] = None,
        *,
        seed: Optional[int] = None,
        allow_empty: bool = False,
    ) -> Tuple[Dict[str, Any], HttpResult]:
        """Send one real, deterministic request (temperature 0, and `seed` when given); return its text,
        finish_reason and usage. Empty text is a failure unless `allow_empty` (a comparison records it)."""
        if kind == "completion":
            path = "/v1/completions"
            payload: Dict[str, Any] = dict(model=model, prompt=prompt, max_tokens=max_tokens, temperature=0)
        elif kind == "chat":
            path = "/v1/chat/completions"
            payload = dict(
                model=model,
                messages=[{"role": "user", "content": prompt}],
                max_tokens=max_tokens,
                temperature=0,
            )
        else:
            raise ValueError("unknown probe {!r} (choose from {})".format(kind, ", ".join(PROBES)))
        if seed is not None:
            payload["seed"] = seed
        result = self.request("POST", self.api_url(path), payload=payload, timeout=timeout)
        if not result.ok:
            raise self.http_failure(f"/health answered 200 but the {kind}", result, probe=True)
        what = f"the {kind} request ({path})"
        data = self.parse_json(result, what)
        choice = None
        if isinstance(data, dict) and isinstance(data.get("choices"), list) and data["choices"]:
            choice = data["choices"][0]
        if not isinstance(choice, dict):
            raise ReadinessError(
                f"{what} returned a malformed response (no 'choices'): {self.snippet(result.body)}",
                status=result.status,
                body=self.snippet(result.body),
                transient=True,
                kind="malformed",
            )
        if kind == "chat":
            message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
            text = message.get("content")
        else:
            text = choice.get("text")
        answer = dict(
            text=text if isinstance(text, str) else "",
            finish_reason=choice.get("finish_reason"),
            usage=data.get("usage"),
        )
        if not answer["text"] and not allow_empty:
            raise ReadinessError(
                "/health answered 200 but the {} returned no text (finish_reason={}, usage={}): the server "
                "answers but the model generates nothing for prompt {!r}. Check the model and its tokenizer, or "
                "try another prompt or a larger max_tokens".format(
                    kind, answer["finish_reason"], answer["usage"], prompt
                ),
                status=result.status,
                body=self.snippet(result.body),
                kind="empty",
            )
        return answer, result

    # -- failures ----------------------------------------------------------------------------------

    def http_failure(self, what: str, result: HttpResult, probe: bool = False) -> ReadinessError:
        """Turn a failed request into a ReadinessError that says what to do."""
        body = self.snippet(result.body)
        verb = "failed with" if probe else "answered"
        if result.status is None:
            return ReadinessError(f"{what} failed: {result.error}", transient=result.kind != TLS, kind=result.kind)
        status = result.status
        headline = f"{what} {verb} HTTP {status}"
        if status in (401, 403):
            if self._api_key:
                hint = "the API key was rejected. Set api_key to the server's --api-key / VLLM_API_KEY"
            else:
                hint = "the API key is missing (or was rejected). Set api_key to the server's --api-key / VLLM_API_KEY"
            return ReadinessError(f"{headline}: {hint}", status=status, body=body, kind="auth")
        if status == 404 and not probe:
            return ReadinessError(
                "{}: no OpenAI API at {}. Check url and path_prefix (gateways such as KServe serve it under "
                "/openai){}".format(headline, result.url, ": " + body if body else ""),
                status=status,
                body=body,
                kind="not_found",
            )
        transient = status in (408, 429) or (status >= 500 and not (probe and status == 500))
        return ReadinessError(
            "{}{}".format(headline, ": " + body if body else " (empty body)"),
            status=status,
            body=body,
            transient=transient,
            kind="http",
        )


def lora_adapters(entries: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The LoRA adapters among /v1/models entries: those with a ``parent`` (vLLM lists an adapter with its base
    model's served name there, and its path as ``root``), as {name, parent, path}."""
    return [
        {"name": str(e["id"]), "parent": str(e["parent"]), "path": e.get("root")}
        for e in entries
        if e.get("parent") is not None
    ]


def _decode(raw: Any) -> str:
    if isinstance(raw, bytes):
        return raw.decode("utf-8", errors="replace")
    return "" if raw is None else str(raw)


def _fmt(seconds: float) -> str:
    return f"{seconds:.1f}".rstrip("0").rstrip(".") if seconds % 1 else f"{seconds:.0f}"


class PollSchedule:
    """Adaptive delays between readiness attempts.

    A refused connection is cheap and is what vLLM does while it loads (the port stays closed, there is
    no 503 phase), so it is retried every `poll_interval` to notice readiness quickly. Anything else
    (5xx, timeouts, garbage) means a process is there but struggling: back off exponentially up to
    `max_poll_interval` so it is not hammered.
    """

    def __init__(self, poll_interval: float = 0.25, max_poll_interval: float = 2.0) -> None:
        if poll_interval < MIN_POLL_INTERVAL:
            raise ValueError(
                f"poll_interval must be at least {MIN_POLL_INTERVAL} s (the module never polls more than "
                f"{int(1 / MIN_POLL_INTERVAL)} times a second), got {poll_interval}"
            )
        if max_poll_interval < poll_interval:
            raise ValueError(
                f"max_poll_interval ({max_poll_interval}) must not be smaller than poll_interval ({poll_interval})"
            )
        self.poll_interval = float(poll_interval)
        self.max_poll_interval = float(max_poll_interval)
        self._failures = 0

    def next_delay(self, fast: bool) -> float:
        if fast:
            self._failures = 0
            return self.poll_interval
        self._failures += 1
        return min(self.max_poll_interval, self.poll_interval * (2 ** min(self._failures, 32)))


class ReadinessCheck:
    """Wait until the endpoint is healthy, lists the expected models and generates text.

    One attempt is GET health; once that answers 200: GET /v1/models, then one real request per probe.
    Attempts start at most once per `poll_interval` (>= 0.25 s), spaced as PollSchedule says.
    """

    def __init__(
        self,
        endpoint: OpenAIEndpoint,
        *,
        expected_models: Optional[List[str]] = None,
        expected_adapters: Optional[List[str]] = None,
        probes: Optional[List[str]] = None,
        prompt: str = "Hello",
        max_tokens: int = 4,
        timeout: float = 300.0,
        poll_interval: float = 0.25,
        max_poll_interval: float = 2.0,
        model: Optional[str] = None,
        health_path: str = "/health",
        clock: Optional[Callable[[], float]] = None,
        sleep: Optional[Callable[[float], None]] = None,
        wall_clock: Optional[Callable[[], float]] = None,
    ) -> None:
        self.endpoint = endpoint
        self.expected_models = list(expected_models or [])
        self.expected_adapters = list(expected_adapters or [])
        self.probes = list(probes if probes is not None else ["completion"])
        for probe in self.probes:
            if probe not in PROBES:
                raise ValueError("unknown probe {!r} (choose from {})".format(probe, ", ".join(PROBES)))
        self.prompt = prompt
        self.max_tokens = int(max_tokens)
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        self.timeout = float(timeout)
        self.schedule = PollSchedule(poll_interval, max_poll_interval)
        self.model = model
        self.health_path = "/" + health_path.lstrip("/")
        # Resolved at call time so tests can substitute them (a fake clock, or a patched time module).
        self._clock = clock or time.monotonic
        self._sleep = sleep or time.sleep
        self._wall_clock = wall_clock or time.time
        self.health_attempts = 0
        self._attempt_starts: List[float] = []
        self.served_models: List[str] = []
        self.adapters: List[Dict[str, Any]] = []

    @property
    def health_url(self) -> str:
        return self.endpoint.root_url(self.health_path)

    def polls_per_second(self) -> float:
        """Rate of readiness attempts: intervals between attempt starts; 0 for a single attempt."""
        if len(self._attempt_starts) < 2:
            return 0.0
        span = self._attempt_starts[-1] - self._attempt_starts[0]
        return round((len(self._attempt_starts) - 1) / span, 3) if span > 0 else 0.0

    def _request_timeout(self, deadline: float) -> float:
        left = deadline - self._clock()
        return min(self.endpoint.request_timeout, max(left, MIN_REQUEST_TIMEOUT))

    def run(self) -> Dict[str, Any]:
        """Return the readiness facts, or raise ReadinessError (with details for fail_json)."""
        started = self._clock()
        deadline = started + self.timeout
        failure: Optional[ReadinessError] = None
        streak: Tuple[Optional[str], float] = (None, started)
        while True:
            attempt_start = self._clock()
            self.health_attempts += 1
            self._attempt_starts.append(attempt_start)
            try:
                result = self._attempt(deadline, started)
                result.update(self._stats(started))
                return result
            except ReadinessError as exc:
                if not exc.transient:
                    exc.details.update(self._stats(started))
                    raise
                failure = exc
            # "kept answering HTTP 503 for N s" counts from the first of a run of alike failures.
            key = f"{failure.phase} {failure.kind} {failure.status}"
            if key != streak[0]:
                streak = (key, attempt_start)
            fast = failure.kind == REFUSED
            delay = self.schedule.next_delay(fast)
            next_start = (attempt_start if fast else self._clock()) + delay
            if next_start >= deadline:
                raise self._timed_out(failure, started, streak[1])
            self._sleep(max(0.0, next_start - self._clock()))

    def _stats(self, started: float) -> Dict[str, Any]:
        return dict(
            url=self.endpoint.url,
            health_attempts=self.health_attempts,
            polls_per_second=self.polls_per_second(),
            elapsed=round(self._clock() - started, 3),
            served_models=list(self.served_models),
            adapters=list(self.adapters),
        )

    def _attempt(self, deadline: float, started: float) -> Dict[str, Any]:
        latencies: Dict[str, Optional[float]] = dict(health=None, models=None, completion=None, chat=None, version=None)
        health = self.endpoint.health(self.health_path, timeout=self._request_timeout(deadline))
        latencies["health"] = health.elapsed_ms
        if not health.ok:
            if health.kind == TLS:
                raise ReadinessError(
                    f"{self.health_url}: {health.error}. Set ca_path to the CA bundle that signed the server's "
                    "certificate (or validate_certs to false for a throwaway test server)",
                    kind=TLS,
                    phase="health",
                )
            if health.status is None:
                raise ReadinessError(health.error or health.kind, transient=True, kind=health.kind, phase="health")
            if health.status in (401, 403):
                raise self.endpoint.http_failure(self.health_url, health)
            raise ReadinessError(
                f"HTTP {health.status}",
                status=health.status,
                body=self.endpoint.snippet(health.body),
                transient=True,
                kind="health_http",
                phase="health",
            )
        entries, models = self.endpoint.list_model_entries(timeout=self._request_timeout(deadline))
        latencies["models"] = models.elapsed_ms
        served = [str(e["id"]) for e in entries]
        self.served_models = served
        self.adapters = lora_adapters(entries)
        if not served:
            raise ReadinessError(
                "/health answered 200 but /v1/models lists no models yet",
                status=models.status,
                body=self.endpoint.snippet(models.body),
                transient=True,
                kind="no_models",
            )
        missing = [name for name in self.expected_models if name not in served]
        if missing:
            raise ReadinessError(
                f"served models are {served}, expected {self.expected_models} (missing: {missing}). "
                "Fix expected_models or the server's --served-model-name",
                kind="models",
                served_models=served,
            )
        adapter_names = [a["name"] for a in self.adapters]
        missing = [name for name in self.expected_adapters if name not in adapter_names]
        if missing:
            not_adapters = [name for name in missing if name in served]
            raise ReadinessError(
                "LoRA adapters listed by /v1/models are {}, expected {} (missing: {}){}. Load them "
                "(llmops.platform.vllm_lora_adapter, or --lora-modules at start: vllm_host_lora_adapters / "
                "vllm_k8s_lora_adapters) or fix expected_adapters".format(
                    adapter_names,
                    self.expected_adapters,
                    missing,
                    f"; {not_adapters} are served models, not adapters (no parent)" if not_adapters else "",
                ),
                kind="adapters",
                served_models=served,
                adapters=self.adapters,
            )
        model = self.model or (self.expected_models[0] if self.expected_models else served[0])
        if model not in served:
            raise ReadinessError(
                f"model {model!r} is not served; served models are {served}. Set model to one of them",
                kind="models",
                served_models=served,
            )
        answers: Dict[str, Any] = dict(completion=None, chat=None)
        for probe in self.probes:
            answer, probe_result = self.endpoint.probe(
                probe, model, self.prompt, self.max_tokens, timeout=self._request_timeout(deadline)
            )
            latencies[probe] = probe_result.elapsed_ms
            answers[probe] = answer
        ready_at = self._wall_clock()
        time_to_ready = round(self._clock() - started, 3)
        # Not part of readiness: asked once the server proved it serves.
        version, version_result = self.endpoint.version(timeout=self._request_timeout(deadline))
        latencies["version"] = version_result.elapsed_ms
        return dict(
            ready=True,
            model=model,
            server_version=version,
            served_models=served,
            adapters=self.adapters,
            time_to_ready=time_to_ready,
            ready_at=ready_at,
            latencies=latencies,
            completion=answers["completion"],
            chat=answers["chat"],
        )

    def _timed_out(self, failure: ReadinessError, started: float, streak_start: float) -> ReadinessError:
        now = self._clock()
        elapsed = _fmt(now - started)
        url = self.health_url
        if failure.phase == "health" and failure.kind in (REFUSED, NETWORK):
            msg = (
                f"{url} not reachable within {_fmt(self.timeout)} s (timeout; {self.health_attempts} attempts, "
                f"last error: {failure.msg}): is the server running and listening on that address? "
                "Check its service logs"
            )
        elif failure.phase == "health" and failure.kind == TIMEOUT:
            msg = (
                f"{url} did not answer within request_timeout ({_fmt(self.endpoint.request_timeout)} s) for "
                f"{_fmt(now - streak_start)} s (last error: {failure.msg}): the server is overloaded or stuck. "
                "Check its service logs, or raise request_timeout"
            )
        elif failure.kind == "health_http":
            hint = (
                "check url and health_path"
                if failure.status == 404
                else "the process is up but not healthy. Check its service logs"
            )
            msg = "{} kept answering HTTP {} for {} s{}: {}".format(
                url,
                failure.status,
                _fmt(now - streak_start),
                f" (body: {failure.body})" if failure.body else "",
                hint,
            )
        else:
            msg = (
                f"{failure.msg} (for {_fmt(now - streak_start)} s, gave up after {elapsed} s, "
                f"timeout {_fmt(self.timeout)} s)"
            )
        details = dict(failure.details)
        details.update(self._stats(started))
        return ReadinessError(msg, status=failure.status, body=failure.body, kind=failure.kind, **details)
