"""The liveness watchdog of one vLLM instance (roles/vllm_host/files/vllm-watchdog.py).

The file is loaded by path (its name has a dash) and driven like its systemd timer does: one
`main(["x", "main"])` per tick, with the state and maintenance directories in tmp_path. Its contacts
with the host are scripted: `unit_state` (systemctl show), `probe` (the completion), `tokens_processed`
(/metrics), `subprocess` (systemctl kill), `monotonic_usec` and `log`. The last tests run the real
`probe` and `tokens_processed` against a small local HTTP server.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest

SCRIPT = Path(__file__).resolve().parents[3] / "roles" / "vllm_host" / "files" / "vllm-watchdog.py"

UNIT = "vllm@main.service"
KILL = ["systemctl", "kill", "--signal=SIGKILL", UNIT]
FAILURES = 3
GRACE = 600  # seconds
MAX_AGE = 7200  # seconds
STARTED = 5_000_000_000  # usec since boot, ExecMainStartTimestampMonotonic of the running engine
TIMED_OUT = (False, "timed out after 10.0 s")


def load_watchdog():
    spec = importlib.util.spec_from_file_location("vllm_watchdog_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Watchdog:
    """One instance, its unit, its engine and the watchdog's view of them; `tick()` is one timer run.

    `probes` and `tokens` are answered in order, the last entry repeating; `pid_after_probe` is the main
    PID systemd reports after the probe (a restart that began while the probe ran).
    """

    def __init__(self, module, monkeypatch, tmp_path):
        self.module = module
        self.state_dir = tmp_path / "state"
        self.maintenance_dir = tmp_path / "maintenance"
        self.maintenance_dir.mkdir()
        self.marker = self.maintenance_dir / "main"
        self.state_file = self.state_dir / "main.json"
        for key, value in {
            "WATCHDOG_URL": "http://127.0.0.1:8000",
            "WATCHDOG_MODEL": "tiny",
            "WATCHDOG_TIMEOUT": "10",
            "WATCHDOG_FAILURES": str(FAILURES),
            "WATCHDOG_START_GRACE": str(GRACE),
            "WATCHDOG_STATE_DIR": str(self.state_dir),
            "WATCHDOG_MAINTENANCE_DIR": str(self.maintenance_dir),
            "WATCHDOG_MAINTENANCE_MAX_AGE": str(MAX_AGE),
            "VLLM_API_KEY": "sk-test",
        }.items():
            monkeypatch.setenv(key, value)

        self.unit = {"active": "active", "sub": "running", "pid": 4242, "started": STARTED}
        self.pid_after_probe = None
        self.now_usec = STARTED + (GRACE + 60) * 1_000_000  # past the start grace unless a test says otherwise
        self.probes = [(True, "answered in 12 ms")]
        self.tokens = [None]
        self.probe_calls = []
        self.unit_calls = []
        self.commands = []
        self.logs = []

        monkeypatch.setattr(module, "unit_state", self._unit_state)
        monkeypatch.setattr(module, "probe", self._probe)
        monkeypatch.setattr(module, "tokens_processed", self._tokens_processed)
        monkeypatch.setattr(module, "monotonic_usec", lambda: self.now_usec)
        monkeypatch.setattr(module, "log", lambda priority, message: self.logs.append((priority, message)))
        monkeypatch.setattr(module, "subprocess", SimpleNamespace(run=self._run))

    # -- the scripted host ---------------------------------------------------------------------------

    def _unit_state(self, unit):
        assert unit == UNIT
        self.unit_calls.append(unit)
        return dict(self.unit)

    def _probe(self, url, model, key, timeout):
        self.probe_calls.append((url, model, key, timeout))
        if self.pid_after_probe is not None:
            self.unit["pid"] = self.pid_after_probe
        return self.probes.pop(0) if len(self.probes) > 1 else self.probes[0]

    def _tokens_processed(self, url, timeout):
        assert url == "http://127.0.0.1:8000"
        return self.tokens.pop(0) if len(self.tokens) > 1 else self.tokens[0]

    def _run(self, argv, **kwargs):
        assert argv == KILL, f"unexpected command {argv}"
        assert kwargs.get("check") is False
        self.commands.append(argv)
        return SimpleNamespace(returncode=0, stdout="", stderr="")

    # -- driving and reading ---------------------------------------------------------------------------

    def tick(self, probe=None, tokens=...):
        """One timer run; `probe` and `tokens` replace the scripted answers for this run."""
        if probe is not None:
            self.probes = [probe]
        if tokens is not ...:
            self.tokens = [tokens]
        assert self.module.main(["x", "main"]) == 0
        self.now_usec += 30 * 1_000_000  # the timer's interval

    def ticks(self, count, probe=None, tokens=...):
        for _i in range(count):
            self.tick(probe, tokens)

    def state(self):
        return json.loads(self.state_file.read_text(encoding="utf-8"))

    def failures(self):
        return self.state().get("failures", 0)

    @property
    def kills(self):
        return [c for c in self.commands if c == KILL]

    def logged(self, priority, text):
        return [m for p, m in self.logs if p == priority and text in m]

    def mark_maintenance(self, age=0.0):
        self.marker.write_text("restart by Ansible\n", encoding="utf-8")
        then = time.time() - age
        os.utime(self.marker, (then, then))

    def restart_unit(self, pid=5151, up_for=0):
        """systemd started the engine again: a new main PID and start timestamp, `up_for` seconds ago."""
        self.unit["pid"] = pid
        self.unit["started"] = self.now_usec - up_for * 1_000_000


@pytest.fixture
def watchdog():
    return load_watchdog()


@pytest.fixture
def wd(watchdog, monkeypatch, tmp_path):
    return Watchdog(watchdog, monkeypatch, tmp_path)


def answered(wd, tokens=None):
    """The engine answered once since its start: the watchdog is watching it."""
    wd.tick((True, "answered in 9 ms"), tokens)
    assert wd.state()["answered"] is True


# -- the unit --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("active", "sub"),
    [
        ("inactive", "dead"),
        ("activating", "start"),
        ("activating", "auto-restart"),
        ("deactivating", "stop-sigterm"),
        ("failed", "failed"),
        ("active", "exited"),
        ("reloading", "running"),
    ],
)
def test_a_unit_that_is_not_active_and_running_is_left_alone(wd, active, sub):
    answered(wd)
    wd.ticks(2, TIMED_OUT)
    assert wd.failures() == 2
    probes = len(wd.probe_calls)

    wd.unit.update(active=active, sub=sub)
    wd.ticks(FAILURES + 2, TIMED_OUT)

    assert len(wd.probe_calls) == probes
    assert wd.state() == {}
    assert wd.kills == []


def test_the_first_answer_since_start_starts_watching(wd):
    wd.tick((True, "answered in 12 ms"), 40.0)

    assert wd.state() == {"started": STARTED, "answered": True, "failures": 0, "tokens": 40.0}
    assert wd.logs == [("<6>", f"{UNIT}: first completion since start (answered in 12 ms); watching")]
    assert wd.probe_calls == [("http://127.0.0.1:8000", "tiny", "sk-test", 10.0)]

    wd.ticks(3, (True, "answered in 8 ms"))
    assert wd.logs == [("<6>", f"{UNIT}: first completion since start (answered in 12 ms); watching")]
    assert wd.kills == []


def test_a_missing_or_corrupt_state_file_starts_over(wd):
    wd.state_dir.mkdir()
    wd.state_file.write_text("{not json", encoding="utf-8")
    wd.tick((True, "answered in 9 ms"))
    assert wd.state()["answered"] is True


def test_wrong_arguments_are_a_usage_error(watchdog, capsys):
    assert watchdog.main(["x"]) == 2
    assert watchdog.main(["x", "a", "b"]) == 2
    assert "usage" in capsys.readouterr().err


# -- counting failures -------------------------------------------------------------------------------


def test_failures_during_the_start_grace_are_not_counted(wd):
    wd.now_usec = STARTED + 10 * 1_000_000  # the engine started 10 s ago and never answered
    ticks_in_grace = (GRACE - 10) // 30
    wd.ticks(ticks_in_grace, TIMED_OUT)

    assert wd.failures() == 0
    assert wd.state()["answered"] is False
    assert wd.kills == []
    assert wd.logs == []

    # Grace over, still no answer: the engine is stuck loading; now failures count.
    wd.now_usec = STARTED + GRACE * 1_000_000
    wd.ticks(FAILURES - 1, TIMED_OUT)
    assert wd.failures() == FAILURES - 1
    assert wd.kills == []
    wd.tick(TIMED_OUT)
    assert wd.kills == [KILL]


def test_failures_after_the_first_answer_count_even_within_the_grace(wd):
    wd.now_usec = STARTED + 10 * 1_000_000
    answered(wd)
    wd.tick(TIMED_OUT)
    assert wd.failures() == 1


@pytest.mark.parametrize("allowed", [1, 3, 5])
def test_n_consecutive_failures_kill_once_and_not_before(wd, monkeypatch, allowed):
    monkeypatch.setenv("WATCHDOG_FAILURES", str(allowed))
    answered(wd)

    for count in range(1, allowed):
        wd.tick(TIMED_OUT)
        assert wd.kills == []
        assert wd.failures() == count
        assert wd.logged("<4>", f"probe {count} of {allowed} failed: timed out after 10.0 s")

    wd.tick(TIMED_OUT)
    assert wd.commands == [KILL]
    assert wd.state() == {}
    [message] = wd.logged("<3>", "killing PID 4242")
    assert f"{allowed} consecutive probes failed (last: timed out after 10.0 s)" in message

    # systemd restarts it (activating, then a new process): no second kill while it comes back.
    wd.unit.update(active="activating", sub="auto-restart")
    wd.ticks(3, TIMED_OUT)
    wd.unit.update(active="active", sub="running")
    wd.restart_unit(up_for=5)
    wd.ticks(3, TIMED_OUT)
    assert wd.commands == [KILL]


def test_a_success_resets_the_count(wd):
    answered(wd)
    wd.ticks(FAILURES - 1, TIMED_OUT)
    wd.tick((True, "answered in 30 ms"))
    assert wd.failures() == 0
    assert wd.logged("<5>", f"answers again (answered in 30 ms) after {FAILURES - 1} failed probe(s)")

    wd.ticks(FAILURES - 1, (False, "HTTP 500 from the completion"))
    assert wd.kills == []
    wd.tick((False, "HTTP 500 from the completion"))
    assert wd.kills == [KILL]


@pytest.mark.parametrize("code", [401, 403])
def test_a_refused_key_is_not_counted(wd, code):
    answered(wd)
    wd.ticks(FAILURES - 1, TIMED_OUT)
    refused = (None, f"HTTP {code}: the key in the instance's env file is not the one the engine runs with")
    wd.ticks(FAILURES + 2, refused)

    assert wd.kills == []
    assert wd.failures() == FAILURES - 1
    assert len(wd.logged("<4>", f"cannot probe: HTTP {code}")) == FAILURES + 2


def test_moving_token_counters_mean_busy_not_hung(wd):
    answered(wd, tokens=100.0)
    wd.ticks(FAILURES - 1, TIMED_OUT, tokens=100.0)  # flat counters: counted
    assert wd.failures() == FAILURES - 1

    wd.tick(TIMED_OUT, tokens=180.0)  # the engine works, it is just full
    assert wd.kills == []
    assert wd.failures() == 0
    assert wd.logged("<6>", "the engine processed 80 tokens since the last probe: busy, not hung")

    for tokens in (260.0, 900.0, 1500.0, 1501.0):  # saturated for a long while: never killed
        wd.tick(TIMED_OUT, tokens=tokens)
    assert wd.kills == []
    assert wd.failures() == 0

    # The counters stop: now the failures count again, from zero.
    wd.ticks(FAILURES - 1, TIMED_OUT, tokens=1501.0)
    assert wd.kills == []
    assert wd.failures() == FAILURES - 1
    wd.tick(TIMED_OUT, tokens=1501.0)
    assert wd.kills == [KILL]


def test_unreadable_token_counters_do_not_hide_a_hang(wd):
    answered(wd, tokens=100.0)
    wd.tick(TIMED_OUT, tokens=None)
    wd.tick(TIMED_OUT, tokens=None)
    wd.tick(TIMED_OUT, tokens=None)
    assert wd.kills == [KILL]


# -- maintenance -------------------------------------------------------------------------------------


def test_a_fresh_maintenance_marker_stops_counting_and_resets_the_count(wd):
    answered(wd)
    wd.ticks(FAILURES - 1, TIMED_OUT)
    probes = len(wd.probe_calls)

    wd.mark_maintenance(age=60)
    wd.ticks(FAILURES + 2, TIMED_OUT)

    assert len(wd.probe_calls) == probes
    assert wd.kills == []
    assert wd.failures() == 0
    assert len(wd.logged("<6>", "maintenance in progress (60 s), failure count reset")) == 1

    wd.marker.unlink()
    wd.ticks(FAILURES - 1, TIMED_OUT)
    assert wd.kills == []
    wd.tick(TIMED_OUT)
    assert wd.kills == [KILL]


def test_a_maintenance_marker_older_than_the_max_age_is_ignored(wd):
    answered(wd)
    wd.mark_maintenance(age=MAX_AGE + 100)

    wd.ticks(FAILURES - 1, TIMED_OUT)
    assert wd.failures() == FAILURES - 1
    assert wd.kills == []
    wd.tick(TIMED_OUT)
    assert wd.kills == [KILL]
    warnings = wd.logged("<4>", f"ignoring maintenance marker {wd.marker} left")
    assert len(warnings) == FAILURES
    assert f"(older than {MAX_AGE} s)" in warnings[0]


def test_a_restart_during_maintenance_gets_the_start_grace_again(wd):
    """The role restarts under a marker and removes it when the gate fails, the engine still loading."""
    answered(wd)
    wd.mark_maintenance()
    wd.tick()  # drained, not restarted yet
    wd.restart_unit(up_for=1)  # between two ticks: the watchdog never sees the unit inactive
    wd.ticks(4, TIMED_OUT)  # loading the model under the marker
    wd.marker.unlink()  # the gate gave up; the engine keeps loading

    wd.ticks(FAILURES + 2, TIMED_OUT)
    assert wd.kills == []
    assert wd.failures() == 0
    assert wd.state()["answered"] is False


def test_maintenance_keeps_the_answer_of_the_same_engine(wd):
    wd.now_usec = STARTED + 10 * 1_000_000
    answered(wd)
    wd.mark_maintenance()
    wd.tick(TIMED_OUT)
    wd.marker.unlink()
    wd.tick(TIMED_OUT)  # still within the start grace, but this engine answered already
    assert wd.failures() == 1


# -- restarts and races ------------------------------------------------------------------------------


def test_a_unit_restart_resets_the_state(wd):
    answered(wd)
    wd.ticks(FAILURES - 1, TIMED_OUT)

    wd.restart_unit(up_for=20)  # restarted between two ticks (by an operator): a new engine, loading
    wd.ticks(FAILURES + 2, TIMED_OUT)

    assert wd.kills == []
    assert wd.state() == {"started": wd.unit["started"], "answered": False, "failures": 0, "tokens": None}


def test_no_kill_when_the_main_pid_changed_during_the_probe(wd):
    answered(wd)
    wd.ticks(FAILURES - 1, TIMED_OUT)
    wd.pid_after_probe = 5151  # a deliberate restart began while the last probe waited

    wd.tick(TIMED_OUT)

    assert wd.commands == []
    assert wd.state() == {}
    assert wd.logged("<3>", "killing") == []


def test_unit_state_reads_systemctl_show(watchdog, monkeypatch):
    calls = []

    def run(argv, **kwargs):
        calls.append(argv)
        return SimpleNamespace(
            stdout="ActiveState=active\nSubState=running\nMainPID=4242\nExecMainStartTimestampMonotonic=123456\n"
        )

    monkeypatch.setattr(watchdog, "subprocess", SimpleNamespace(run=run))
    assert watchdog.unit_state(UNIT) == {"active": "active", "sub": "running", "pid": 4242, "started": 123456}
    assert calls[0][:3] == ["systemctl", "show", UNIT]

    monkeypatch.setattr(watchdog, "subprocess", SimpleNamespace(run=lambda argv, **kw: SimpleNamespace(stdout="")))
    assert watchdog.unit_state(UNIT) == {"active": "", "sub": "", "pid": 0, "started": 0}


# -- the real HTTP calls -----------------------------------------------------------------------------

METRICS = """\
# HELP vllm:prompt_tokens_total Number of prefill tokens processed.
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{engine="0",model_name="tiny"} 1200.0
vllm:prompt_tokens_total{engine="1",model_name="tiny model"} 34.0
# HELP vllm:prompt_tokens_created Number of prefill tokens processed.
# TYPE vllm:prompt_tokens_created gauge
vllm:prompt_tokens_created{engine="0",model_name="tiny"} 1.7e+09
# HELP vllm:generation_tokens_total Number of generation tokens processed.
# TYPE vllm:generation_tokens_total counter
vllm:generation_tokens_total{engine="0",model_name="tiny"} 56.5
vllm:num_requests_running{engine="0",model_name="tiny"} 3.0
"""


class Engine(ThreadingHTTPServer):
    """Answers /v1/completions and /metrics from `routes`: path -> (status, body) or "hang"."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.routes = {}
        self.requests = []
        self.release = threading.Event()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}/"


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _answer(self):
        engine = self.server
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        engine.requests.append((self.command, self.path, dict(self.headers), body))
        route = engine.routes.get(self.path, (404, b"{}"))
        if route == "hang":
            engine.release.wait(10)
            return
        if route == "garbage":
            self.wfile.write(b"this is not HTTP\r\n\r\n")
            return
        status, payload = route
        if not isinstance(payload, bytes):
            payload = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except OSError:
            pass

    do_GET = _answer
    do_POST = _answer


@pytest.fixture
def engine():
    server = Engine()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.release.set()
    server.shutdown()
    server.server_close()
    thread.join(5)


COMPLETION = {"object": "text_completion", "choices": [{"index": 0, "text": " pong", "finish_reason": "length"}]}


def test_probe_sends_a_one_token_completion_with_the_key(watchdog, engine):
    engine.routes["/v1/completions"] = (200, COMPLETION)

    ok, reason = watchdog.probe(engine.url, "tiny", "sk-test", 5)

    assert ok is True
    assert reason.startswith("answered in ")
    [(method, path, headers, body)] = engine.requests
    assert (method, path) == ("POST", "/v1/completions")
    assert headers["Authorization"] == "Bearer sk-test"
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"model": "tiny", "prompt": "ping", "max_tokens": 1, "temperature": 0}


def test_probe_without_a_key_sends_no_authorization(watchdog, engine):
    engine.routes["/v1/completions"] = (200, COMPLETION)
    assert watchdog.probe(engine.url.rstrip("/"), "tiny", "", 5)[0] is True
    assert "Authorization" not in engine.requests[0][2]


@pytest.mark.parametrize(
    ("route", "expected", "reason"),
    [
        ((500, {"error": "EngineDeadError"}), False, "HTTP 500 from the completion"),
        ((503, b""), False, "HTTP 503 from the completion"),
        ((401, {"error": "Unauthorized"}), None, "HTTP 401: the key in the instance's env file"),
        ((403, {"error": "Forbidden"}), None, "HTTP 403: the key in the instance's env file"),
        ((200, {"object": "text_completion", "choices": []}), False, "a completion without choices"),
        ((200, b"<html>not json</html>"), False, "Expecting value"),
        ((200, b"[]"), False, "a completion without choices"),
        ((200, b"null"), False, "a completion without choices"),
        ("garbage", False, ""),
    ],
)
def test_probe_failures(watchdog, engine, route, expected, reason):
    engine.routes["/v1/completions"] = route
    ok, text = watchdog.probe(engine.url, "tiny", "sk-test", 5)
    assert ok is expected
    assert reason in text


def test_probe_gives_up_after_its_timeout(watchdog, engine):
    engine.routes["/v1/completions"] = "hang"
    started = time.monotonic()

    ok, reason = watchdog.probe(engine.url, "tiny", "sk-test", 0.3)

    assert time.monotonic() - started < 3
    assert ok is False
    assert "timed out" in reason
    assert reason.endswith(" s")


def test_probe_of_a_closed_port_fails(watchdog):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ok, reason = watchdog.probe(f"http://127.0.0.1:{port}", "tiny", "", 2)
    assert ok is False
    assert "refused" in reason.lower()


def test_tokens_processed_sums_prompt_and_generation_counters(watchdog, engine):
    engine.routes["/metrics"] = (200, METRICS)
    assert watchdog.tokens_processed(engine.url, 3) == pytest.approx(1200.0 + 34.0 + 56.5)
    assert engine.requests[0][:2] == ("GET", "/metrics")


@pytest.mark.parametrize(
    "route",
    [
        (200, "# no vLLM here\nprocess_cpu_seconds_total 1.5\n"),
        (200, 'vllm:prompt_tokens_total{model_name="tiny"} NaN-ish\n'),
        (500, "boom"),
        (404, "Not Found"),
        "hang",
        "garbage",
    ],
)
def test_tokens_processed_is_none_when_unreadable(watchdog, engine, route):
    engine.routes["/metrics"] = route
    started = time.monotonic()
    assert watchdog.tokens_processed(engine.url, 0.3) is None
    assert time.monotonic() - started < 3


def test_a_hung_engine_is_killed_through_real_http(watchdog, engine, monkeypatch, tmp_path):
    """main with the real probe and metrics reader against an engine that answers, then hangs."""
    real_probe, real_tokens = watchdog.probe, watchdog.tokens_processed
    wd = Watchdog(watchdog, monkeypatch, tmp_path)
    monkeypatch.setattr(watchdog, "probe", real_probe)
    monkeypatch.setattr(watchdog, "tokens_processed", real_tokens)
    monkeypatch.setenv("WATCHDOG_URL", engine.url)
    monkeypatch.setenv("WATCHDOG_TIMEOUT", "0.3")
    engine.routes["/metrics"] = (200, METRICS)
    engine.routes["/v1/completions"] = (200, COMPLETION)
    wd.tick()
    assert wd.state()["answered"] is True
    assert wd.state()["tokens"] == pytest.approx(1290.5)

    engine.routes["/v1/completions"] = "hang"
    wd.ticks(FAILURES - 1)
    assert wd.kills == []
    wd.tick()
    assert wd.kills == [KILL]


# -- --liveness: the same probe as a Kubernetes exec liveness probe (role vllm_k8s) -------------------------


@pytest.mark.parametrize(
    ("probes", "tokens", "codes"),
    [
        pytest.param([(True, "answered in 9 ms")], [10.0], [0], id="answers"),
        pytest.param([TIMED_OUT], [None], [1], id="hung, no metrics"),
        pytest.param([TIMED_OUT, TIMED_OUT], [10.0, 10.0], [1, 1], id="hung, counters still"),
        pytest.param([TIMED_OUT, TIMED_OUT], [10.0, 25.0], [1, 0], id="busy: counters moved since the last probe"),
        pytest.param([(None, "HTTP 401")], [None], [0], id="401 proves nothing"),
        pytest.param([(False, "HTTP 500 from the completion")], [3.0], [1], id="broken"),
    ],
)
def test_liveness_mode_exit_codes(wd, probes, tokens, codes):
    """--liveness: exit 1 only for a failed probe while the engine's token counters stand still; the kubelet
    counts consecutive failures itself. The last token count is the only state kept between probes."""
    wd.probes, wd.tokens = list(probes), list(tokens)
    got = [wd.module.main(["x", "--liveness"]) for _probe in codes]
    assert got == codes
    assert wd.unit_calls == [], "--liveness must not ask systemd anything"
    assert wd.commands == [], "--liveness never kills: the kubelet restarts the container"
    assert json.loads((wd.state_dir / "liveness.json").read_text()) == {"tokens": tokens[-1]}


def test_liveness_mode_runs_the_real_probe(watchdog, engine, monkeypatch, tmp_path):
    """Against a real HTTP engine: answers -> 0; the engine stops answering and its counters stand -> 1."""
    monkeypatch.setenv("WATCHDOG_URL", engine.url)
    monkeypatch.setenv("WATCHDOG_MODEL", "tiny")
    monkeypatch.setenv("WATCHDOG_TIMEOUT", "1")
    monkeypatch.setenv("WATCHDOG_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("VLLM_API_KEY", "sk-test")
    engine.routes["/v1/completions"] = (200, {"choices": [{"text": "x"}]})
    engine.routes["/metrics"] = (200, METRICS)
    assert watchdog.main(["x", "--liveness"]) == 0
    engine.routes["/v1/completions"] = "hang"
    try:
        assert watchdog.main(["x", "--liveness"]) == 1
    finally:
        engine.release.set()
    assert engine.requests[0][3] and json.loads(engine.requests[0][3])["max_tokens"] == 1
