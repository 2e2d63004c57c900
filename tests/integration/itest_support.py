"""Helpers and fixtures for integration tests: real vLLM CPU servers and real ansible-playbook runs.

(conftest.py re-exports the fixtures; test files import helpers from this module by its unique name,
never `from conftest import ...`, which is ambiguous once several test folders have a conftest.)

Reusable by every integration test:

* `VllmServer`: one real vLLM OpenAI server on 127.0.0.1 (free port, its own cache dir, a log file kept
  for failure messages, SIGTERM stop). Fixture `vllm_servers` starts them and stops them at teardown;
  `vllm_servers.start(...)` fails the test with the log tail when the server does not come up.
* `run_playbook(tasks)` / `run_module(name, args)`: write a temporary playbook, run it with
  ansible-playbook and the ansible.posix.json callback, return the parsed per-task results.
  `start_playbook(...)` does the same in the background (for "the module waits, then the server starts").
* `run_role_cases(role, tag, baseline, hosts, workdir)`: ONE ansible-playbook run of a role's tagged tasks
  against one inventory host per test case (the preflight tests: one bad variable per host; `case_hosts`,
  `case_overrides` and `LOCAL_HOST` make the inventory). Per case, `assert_fails_in_variable_checks(...)`
  and `assert_passes_variable_checks(...)` read that host's results, `secrets_in(overrides, mark)` lists
  the secrets it must not print; `assert_one_run_for_every_case(...)` checks the run as a whole.

The tiny models come from $LLMOPS_FIXTURES and vLLM from $LLMOPS_VLLM_VENV (scripts/run exports both).
Modules run with the system Python (/usr/bin/python3), which has no Ansible installed: that proves they
need nothing on a managed host but Python.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple

import pytest
import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
# Test files import helpers that live next to them (fault_server, ...); pytest runs in importlib mode.
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

TARGET_PYTHON = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
VLLM_START_TIMEOUT = float(os.environ.get("LLMOPS_VLLM_START_TIMEOUT", "300"))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def required_env(name: str) -> Path:
    value = os.environ.get(name)
    if not value or not Path(value).exists():
        pytest.fail(
            f"${name} is not set or does not exist ({value!r}): run the tests through scripts/run after make setup"
        )
    return Path(value)


def fixture_model(name: str = "tiny") -> Path:
    path = required_env("LLMOPS_FIXTURES") / "models" / name
    if not path.is_dir():
        pytest.fail(f"fixture model {path} is missing: run make setup (tests/fixtures/build_fixtures.py)")
    return path


class VllmServer:
    """A real vLLM OpenAI-compatible server (CPU build) on 127.0.0.1."""

    def __init__(
        self,
        model: Path,
        workdir: Path,
        *,
        served_model_name: str = "tiny",
        port: Optional[int] = None,
        api_key: Optional[str] = None,
        extra_args: Optional[List[str]] = None,
    ) -> None:
        self.model = Path(model)
        self.workdir = Path(workdir)
        self.served_model_name = served_model_name
        self.port = port or free_port()
        self.api_key = api_key
        self.extra_args = list(extra_args or [])
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.workdir / f"vllm-{self.port}.log"
        self.process: Optional[subprocess.Popen] = None
        self.started_at: Optional[float] = None  # epoch seconds of the launch

    def command(self) -> List[str]:
        python = required_env("LLMOPS_VLLM_VENV") / "bin" / "python"
        cmd = [
            str(python), "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(self.model),
            "--served-model-name", self.served_model_name,
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--max-model-len", "256",
            "--dtype", "float32",
            "--max-num-seqs", "4",
            "--enforce-eager",
            "--kv-cache-memory-bytes", "64M",
        ]  # fmt: skip
        return cmd + self.extra_args

    def environment(self) -> Dict[str, str]:
        env = dict(os.environ)
        env.update(
            HF_HUB_OFFLINE="1",
            VLLM_NO_USAGE_STATS="1",
            VLLM_TARGET_DEVICE="cpu",
            # Shared by every test server: vLLM caches what it learns of a model class there (modelinfos, written
            # atomically), so only the first server of a machine pays for the subprocess that imports torch and
            # vLLM once more to inspect it.
            VLLM_CACHE_ROOT=str(required_env("LLMOPS_CACHE") / "vllm-test-cache"),
        )
        env.pop("VLLM_API_KEY", None)
        if self.api_key:
            env["VLLM_API_KEY"] = self.api_key  # not on the command line: ps would show it
        return env

    def start(self) -> VllmServer:
        """Launch the server and return at once (see wait_healthy)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.started_at = time.time()
        self.process = subprocess.Popen(
            self.command(),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.environment(),
            start_new_session=True,  # its own process group: a clean kill if SIGTERM is not enough
        )
        log.close()
        return self

    def health_status(self, timeout: float = 1.0) -> Optional[int]:
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=timeout) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            return None

    def wait_healthy(self, timeout: float = VLLM_START_TIMEOUT) -> float:
        """Block until /health answers 200; return the seconds it took. Fails the test with the log tail."""
        assert self.process is not None, "start() first"
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.health_status() == 200:
                return time.monotonic() - started
            if self.process.poll() is not None:
                pytest.fail(f"vLLM exited with code {self.process.returncode} before it was healthy\n{self.log_tail()}")
            time.sleep(0.2)
        pytest.fail(f"vLLM not healthy on {self.url} after {timeout:.0f} s\n{self.log_tail()}")

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError as exc:
            return f"(no log at {self.log_path}: {exc})"
        return f"--- last {lines} lines of {self.log_path} ---\n" + "\n".join(text[-lines:])

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 30.0) -> Optional[int]:
        """SIGTERM the server (it stops its worker processes itself); SIGKILL the group if it hangs."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        # workers left behind by a crash (the broken model kills the engine) go with the group
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        return self.process.returncode


class VllmServers:
    """Starts servers for a test (or a class/module) and stops every one of them afterwards."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.servers: List[VllmServer] = []

    def launch(self, model: str = "tiny", **kwargs: Any) -> VllmServer:
        """Start without waiting (for tests that start something before the server is up)."""
        server = VllmServer(fixture_model(model), self.workdir / f"{model}-{len(self.servers)}", **kwargs)
        self.servers.append(server)
        return server.start()

    def start(self, model: str = "tiny", **kwargs: Any) -> VllmServer:
        """Start and wait until /health answers 200."""
        server = self.launch(model, **kwargs)
        server.wait_healthy()
        return server

    def stop_all(self) -> None:
        for server in self.servers:
            server.stop()


@pytest.fixture
def vllm_servers(tmp_path_factory: pytest.TempPathFactory):
    servers = VllmServers(tmp_path_factory.mktemp("vllm"))
    yield servers
    servers.stop_all()


@pytest.fixture(scope="session")
def vllm_servers_session(tmp_path_factory: pytest.TempPathFactory):
    """For class-, module- or session-scoped server fixtures (share one server across tests)."""
    servers = VllmServers(tmp_path_factory.mktemp("vllm-shared"))
    yield servers
    servers.stop_all()


# -- ansible-playbook ------------------------------------------------------------------------------


@dataclass
class PlaybookResult:
    rc: int
    stdout: str
    stderr: str
    duration: float
    exited_at: float  # epoch seconds when ansible-playbook exited
    output: Dict[str, Any] = field(default_factory=dict)  # the ansible.posix.json document

    def task_results(self, host: str = "localhost") -> List[Dict[str, Any]]:
        results = []
        for play in self.output.get("plays", []):
            for task in play.get("tasks", []):
                if host in task.get("hosts", {}):
                    results.append(task["hosts"][host])
        return results

    @property
    def result(self) -> Dict[str, Any]:
        """The last task's result on localhost."""
        results = self.task_results()
        assert results, (
            f"no task results (rc={self.rc})\nstdout:\n{self.stdout[-3000:]}\nstderr:\n{self.stderr[-3000:]}"
        )
        return results[-1]


def task_name(task: Dict[str, Any]) -> str:
    """The name of a task of an ansible.posix.json report without its '<role> : ' prefix."""
    return task["task"]["name"].split(" : ", 1)[-1]


def report_failures(report: Dict[str, Any]) -> List[str]:
    """'[task] msg' for every failed host result of an ansible.posix.json report, and for every failed
    loop item in it; the task name without its '<role> : ' prefix."""
    messages = []
    for play in report.get("plays", []):
        for task in play.get("tasks", []):
            for result in task.get("hosts", {}).values():
                if result.get("failed"):
                    name = task_name(task)
                    messages.append(f"[{name}] {result.get('msg', '')}")
                    messages.extend(
                        f"[{name}] {item.get('msg', '')}" for item in result.get("results", []) if item.get("failed")
                    )
    return messages


def ansible_env(extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    env = dict(os.environ)
    env.update(
        ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
        ANSIBLE_COLLECTIONS_PATH=str(ROOT / ".collections"),
        ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_RETRY_FILES_ENABLED="0",
    )
    env.update(extra or {})
    return env


def write_playbook(tasks: List[Dict[str, Any]], directory: Path, python: str = TARGET_PYTHON) -> Path:
    play = {
        "name": "integration test",
        "hosts": "localhost",
        "connection": "local",
        "gather_facts": False,
        "vars": {"ansible_python_interpreter": python},
        "tasks": tasks,
    }
    path = Path(tempfile.mkstemp(prefix="playbook-", suffix=".yml", dir=directory)[1])
    path.write_text(yaml.safe_dump([play], sort_keys=False))
    return path


class PlaybookRun:
    """An ansible-playbook process running in the background (on localhost unless given an inventory)."""

    def __init__(
        self,
        playbook: Path,
        check: bool = False,
        env: Optional[Dict[str, str]] = None,
        *,
        inventory: str = "localhost,",
        args: Sequence[str] = (),
        cwd: Path = ROOT,
    ) -> None:
        ansible_playbook = Path(sys.executable).parent / "ansible-playbook"
        cmd = [str(ansible_playbook), "-i", inventory, str(playbook), *args]
        if check:
            cmd.append("--check")
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=ansible_env(env),
            cwd=str(cwd),
        )

    def wait(self, timeout: float = 600) -> PlaybookResult:
        try:
            stdout, stderr = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            stdout, stderr = self.process.communicate()
            pytest.fail(f"ansible-playbook ran longer than {timeout} s\n{stdout[-3000:]}\n{stderr[-3000:]}")
        exited_at = time.time()
        result = PlaybookResult(self.process.returncode, stdout, stderr, time.monotonic() - self.started, exited_at)
        start = stdout.find("{")
        try:
            result.output = json.loads(stdout[start:]) if start >= 0 else {}
        except ValueError:
            pytest.fail(f"ansible-playbook output is not JSON (rc={result.rc})\n{stdout[-3000:]}\n{stderr[-3000:]}")
        return result


@pytest.fixture
def start_playbook(tmp_path: Path):
    """start_playbook(tasks, check=False) -> PlaybookRun, already running."""
    runs: List[PlaybookRun] = []

    def start(tasks: List[Dict[str, Any]], check: bool = False, env: Optional[Dict[str, str]] = None) -> PlaybookRun:
        run = PlaybookRun(write_playbook(tasks, tmp_path), check=check, env=env)
        runs.append(run)
        return run

    yield start
    for run in runs:
        if run.process.poll() is None:
            run.process.kill()
            run.process.communicate()


@pytest.fixture
def run_playbook(start_playbook):
    """run_playbook(tasks, check=False, timeout=600) -> PlaybookResult."""

    def run(tasks: List[Dict[str, Any]], check: bool = False, timeout: float = 600, **kwargs: Any) -> PlaybookResult:
        return start_playbook(tasks, check=check, **kwargs).wait(timeout=timeout)

    return run


@pytest.fixture
def run_module(run_playbook):
    """run_module("llmops.platform.openai_health", {...}) -> (result dict of the task, PlaybookResult)."""

    def run(module: str, args: Dict[str, Any], check: bool = False, **kwargs: Any):
        playbook = run_playbook([{"name": module, module: args}], check=check, **kwargs)
        return playbook.result, playbook

    return run


# -- one run of a role against one inventory host per test case -------------------------------------


class VariableCase(NamedTuple):
    """A bad setting: the overrides (host vars on top of the valid baseline) and what must fail."""

    overrides: Dict[str, Any]
    variable: str  # the failure message names it (a plan message starts with it)
    reason: str = ""  # and says this (proves the case fails for the intended reason)


class CaseRun(NamedTuple):
    """ONE ansible-playbook run against every case host."""

    rc: int
    report: Dict[str, Any]  # the ansible.posix.json document
    output: str  # stdout and stderr together: what a secret must never reach
    seconds: float


# Host vars that run a case host's tasks on this controller, with the Python that runs Ansible.
LOCAL_HOST = {"ansible_connection": "local", "ansible_python_interpreter": "{{ ansible_playbook_python }}"}


def case_hosts(names: Iterable[str]) -> Dict[str, str]:
    """Case name -> its inventory host (case-000, case-001, ... in the order given)."""
    return {name: f"case-{index:03d}" for index, name in enumerate(names)}


def case_overrides(
    hosts: Dict[str, str], cases: Dict[str, VariableCase], valid_cases: Dict[str, Dict[str, Any]]
) -> Dict[str, Dict[str, Any]]:
    """Inventory host (from `case_hosts`) -> the overrides of its case: a bad case's, or a valid configuration."""
    return {host: cases[name].overrides if name in cases else valid_cases[name] for name, host in hosts.items()}


def secrets_in(value: Any, mark: str) -> List[str]:
    """Every string in a case's overrides (keys and values, at any depth) that carries `mark`."""
    if isinstance(value, str):
        return [value] if mark in value else []
    if isinstance(value, dict):
        return secrets_in(list(value.values()), mark) + secrets_in(list(value), mark)
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in secrets_in(v, mark)]
    return []


def run_role_cases(
    role: str,
    tag: str,
    baseline_vars: Dict[str, Any],
    hosts_vars: Dict[str, Dict[str, Any]],
    workdir: Path,
    *,
    forks: int = 10,
) -> CaseRun:
    """Play the tasks of `role` tagged `tag` against every host of `hosts_vars` in ONE ansible-playbook run.

    The inventory (written to `workdir`) gives all hosts `baseline_vars` and each host its own vars; the
    ansible.posix.json callback reports every host's results. Fails the test when no report comes back.
    """
    inventory = workdir / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"all": {"vars": baseline_vars, "hosts": hosts_vars}}, sort_keys=False))
    playbook = workdir / "play.yml"
    playbook.write_text(yaml.safe_dump([{"name": "Preflight", "hosts": "all", "gather_facts": False, "roles": [role]}]))
    args = ["--tags", tag, "--forks", str(forks)]
    result = PlaybookRun(playbook, inventory=str(inventory), args=args, cwd=workdir).wait(timeout=600)
    assert result.output.get("stats"), (
        f"no JSON report (rc {result.rc})\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return CaseRun(result.rc, result.output, result.stdout + result.stderr, result.duration)


def host_report(report: Dict[str, Any], host: str) -> Dict[str, Any]:
    """The report with only this host's results."""
    return {
        "plays": [
            {"tasks": [{**t, "hosts": {host: t["hosts"][host]}} for t in play["tasks"] if host in t["hosts"]]}
            for play in report.get("plays", [])
        ]
    }


def leaked(output: str, secrets: Iterable[str]) -> List[str]:
    """The secrets found in the output as they are or JSON-escaped (newlines as \\n)."""
    return [s for s in secrets if s in output or json.dumps(s)[1:-1] in output]


def assert_fails_in_variable_checks(
    run: CaseRun,
    case: str,
    host: str,
    expected: VariableCase,
    *,
    variable_checks: Tuple[str, ...],
    plan_task: str,
    secrets: Sequence[str] = (),
) -> List[str]:
    """A bad case's host failed, and only in tasks that check variables (names starting with one of
    `variable_checks`, each written '[Task name'); a failure names `expected.variable` and says
    `expected.reason`, and a failure of the plan task (name starting with `plan_task`) starts with the
    variable; nothing changed before the one failure; none of `secrets` reached the output.
    Returns the host's failure messages."""
    variable, reason = expected.variable, expected.reason
    assert run.rc != 0, f"{case}: ansible-playbook exited 0 although a host failed"
    messages = report_failures(host_report(run.report, host))
    assert messages, f"{case} ({host}): no failed task"
    assert all(m.startswith(variable_checks) for m in messages), f"{case}: not a variable check: {messages}"
    named = [m for m in messages if variable in m]
    assert named, f"{case}: no failure names {variable}: {messages}"
    # The plan's message starts with the variable (after Ansible's "...filter ... failed: ").
    plan = [m for m in named if m.startswith("[" + plan_task)]
    assert not plan or any(f"failed: {variable}" in m for m in plan), f"{case}: does not start with {variable}: {plan}"
    assert any(reason in m for m in named), f"{case}: the failure does not say {reason!r}: {named}"
    stats = run.report["stats"][host]
    assert stats["changed"] == 0, f"{case}: something changed before the failure: {stats}"
    assert stats["failures"] == 1, f"{case}: {stats}"
    assert not leaked(run.output, secrets), f"{case}: a secret leaked into the output"
    return messages


def assert_passes_variable_checks(
    run: CaseRun,
    case: str,
    host: str,
    *,
    allowed_failures: Tuple[str, ...] = (),
    secrets: Sequence[str] = (),
) -> Dict[str, Any]:
    """A valid case's host failed in no task but those named in `allowed_failures` ('[Task name'
    prefixes: host checks a controller cannot pass; when empty, the host ran tasks and failed none),
    changed nothing, and none of `secrets` reached the output. Returns the host's stats."""
    messages = report_failures(host_report(run.report, host))
    unexpected = [m for m in messages if not (allowed_failures and m.startswith(allowed_failures))]
    assert not unexpected, f"{case}: {messages}"
    stats = run.report["stats"][host]
    assert stats["changed"] == 0, f"{case}: {stats}"
    if not allowed_failures:
        assert stats["failures"] == 0 and stats["ok"] > 0, f"{case}: {stats}"
    assert not leaked(run.output, secrets), f"{case}: a secret leaked into the output"
    return stats


def assert_one_run_for_every_case(
    run: CaseRun, hosts: Dict[str, str], *, mark: str, what: str, max_seconds: float = 180
) -> None:
    """Every case host is in the one run's stats, no `what` (a string carrying `mark`) reached the
    output, and the run stayed quick (CI time)."""
    assert set(run.report["stats"]) == set(hosts.values())
    assert mark not in run.output, f"{what} reached the output"
    assert run.seconds < max_seconds, f"the preflight run took {run.seconds:.0f} s"
