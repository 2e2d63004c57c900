"""Pytest fixtures and helpers for tests that talk to the Kubernetes API emulator.

Use from any test module (pytest runs in importlib mode, so put tests/k8s on sys.path first)::

    sys.path.insert(0, str(ROOT / "tests" / "k8s"))
    from k8s_harness import k8s_emulator, run_playbook  # noqa: F401  (the import registers the fixture)

``k8s_emulator`` starts tests/k8s/emulator.py as a separate process on a free 127.0.0.1 port with its
own kubeconfig, exactly as molecule does, and stops it at teardown. It yields an ``Emulator`` with the
URL, the kubeconfig path and small helpers to read objects and write a status.

``run_role`` plays a role (or one of its task files) against an emulator; ``assert_failed_before_apply``,
``assert_applied`` and ``assert_predicted_without_writing`` judge such a run by what the emulator holds.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import pytest
import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
# Next to this harness, and the integration helpers (one reader of ansible-playbook's JSON report).
for folder in (HERE, HERE.parent / "integration"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

import emulator as emu  # noqa: E402
from itest_support import ansible_env, leaked, report_failures  # noqa: E402


@dataclass
class Emulator:
    url: str
    kubeconfig: Path
    pidfile: Path

    def get(self, path: str) -> Dict[str, Any]:
        return emu.request(self.url, "GET", path)

    def exists(self, path: str) -> bool:
        try:
            self.get(path)
        except RuntimeError as exc:
            if "HTTP 404" in str(exc):
                return False
            raise
        return True

    def items(self, path: str) -> List[Dict[str, Any]]:
        return self.get(path)["items"]

    def create(self, path: str, obj: Dict[str, Any]) -> Dict[str, Any]:
        return emu.request(self.url, "POST", path, obj)

    def set_status(self, object_path: str, status: Dict[str, Any]) -> Dict[str, Any]:
        return emu.set_status(self.url, object_path, status)


def wait_for(what: str, check: Callable[[], Any], timeout: float = 30.0, interval: float = 0.2) -> Any:
    """Poll until ``check()`` is truthy; return its value (the tests of the emulator, the node and the layout)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@pytest.fixture
def k8s_emulator(tmp_path: Path):
    kubeconfig = tmp_path / "emulator" / "kubeconfig"
    kubeconfig.parent.mkdir()
    pidfile = kubeconfig.parent / "emulator.pid"
    url = emu.start_background(kubeconfig, pidfile)
    try:
        yield Emulator(url, kubeconfig, pidfile)
    finally:
        emu.stop_background(pidfile)


def run_playbook(
    playbook: Path,
    *,
    cwd: Path,
    extra_vars: Optional[Dict[str, Any]] = None,
    args: Optional[List[str]] = None,
    timeout: int = 300,
) -> PlaybookRun:
    """Run ansible-playbook against localhost with the ansible.posix.json callback."""
    command = ["ansible-playbook", "-i", "localhost,", str(playbook)]
    if extra_vars:
        varsfile = cwd / f"vars-{len(list(cwd.glob('vars-*.json')))}.json"
        varsfile.write_text(json.dumps(extra_vars))
        command += ["-e", f"@{varsfile}"]
    command += args or []
    proc = subprocess.run(
        command, capture_output=True, text=True, env=ansible_env(), cwd=cwd, timeout=timeout, check=False
    )
    report = json.loads(proc.stdout) if proc.stdout.strip().startswith("{") else {}
    return PlaybookRun(proc.returncode, report, proc.stdout + proc.stderr)


@dataclass
class PlaybookRun:
    rc: int
    report: Dict[str, Any]
    output: str

    @property
    def stats(self) -> Dict[str, Any]:
        return self.report.get("stats", {}).get("localhost", {})

    def results(self, task_name: str) -> List[Dict[str, Any]]:
        """Every host result of the tasks whose name ends with ``task_name``."""
        found = []
        for play in self.report.get("plays", []):
            for task in play.get("tasks", []):
                if task["task"]["name"].split(" : ", 1)[-1] == task_name:
                    found.extend(task["hosts"].values())
        return found

    def failures(self) -> List[str]:
        return report_failures(self.report)


def role_play(role: str, tasks_from: Optional[str] = None) -> str:
    """A play on localhost (with the Python that runs Ansible) of `role`, or with `tasks_from` of that
    file of the role only (include_role)."""
    play: Dict[str, Any] = {
        "hosts": "localhost",
        "connection": "local",
        "gather_facts": False,
        "vars": {"ansible_python_interpreter": "{{ ansible_playbook_python }}"},
    }
    if tasks_from is None:
        play["roles"] = [role]
    else:
        play["tasks"] = [{"ansible.builtin.include_role": {"name": role, "tasks_from": tasks_from}}]
    return yaml.safe_dump([play], sort_keys=False)


def run_role(
    emulator: Emulator,
    workdir: Path,
    role: str,
    extra_vars: Dict[str, Any],
    *,
    tasks_from: Optional[str] = None,
    args: Optional[List[str]] = None,
) -> PlaybookRun:
    """Play `role` (see role_play) against the emulator: `<role>_kubeconfig` is its kubeconfig."""
    play = workdir / "play.yml"
    play.write_text(role_play(role, tasks_from))
    kubeconfig = {role.rsplit(".", 1)[-1] + "_kubeconfig": str(emulator.kubeconfig)}
    return run_playbook(play, cwd=workdir, extra_vars={**extra_vars, **kubeconfig}, args=args)


def written_objects(emulator: Emulator, paths: Sequence[str]) -> List[str]:
    """Every object the emulator holds under these API collection paths, as 'path/name'."""
    return [f"{path}/{o['metadata']['name']}" for path in paths for o in emulator.items(path)]


def assert_failed_before_apply(
    run: PlaybookRun, emulator: Emulator, paths: Sequence[str], *, case: str, variable: str, secrets: Sequence[str]
) -> None:
    """A role's preflight stopped the play: it failed naming `variable`, changed nothing, wrote no
    object under `paths`, and printed none of `secrets`."""
    assert run.rc != 0, f"{case}: the play succeeded\n{run.output[-3000:]}"
    messages = run.failures()
    assert messages, f"{case}: no failed task in the report\n{run.output[-3000:]}"
    assert any(variable in m for m in messages), f"{case}: no failure names {variable}: {messages}"
    assert run.stats.get("changed", 0) == 0, f"{case}: something changed before the failure: {run.stats}"
    written = written_objects(emulator, paths)
    assert written == [], f"{case}: objects were written: {written}"
    assert not leaked(run.output, secrets), f"{case}: a secret leaked into the output"


def assert_applied(
    run: PlaybookRun, emulator: Emulator, paths: Sequence[str], expected: Sequence[str], *, secrets: Sequence[str]
) -> List[str]:
    """The play succeeded and changed something, the emulator holds every `expected` object ('path/name',
    as written_objects lists those under `paths`), and none of `secrets` was printed. Returns the objects."""
    assert run.rc == 0, run.output[-3000:]
    assert run.stats["changed"] > 0, run.stats
    written = written_objects(emulator, paths)
    missing = [name for name in expected if name not in written]
    assert not missing, f"not written: {missing}; written: {written}"
    assert not leaked(run.output, secrets), "a secret leaked into the output"
    return written


def assert_predicted_without_writing(
    run: PlaybookRun, emulator: Emulator, paths: Sequence[str], *, secrets: Sequence[str]
) -> None:
    """A first --check run on an empty cluster: it succeeded, predicted changes (at least the namespace
    and one object in it), wrote no object under `paths`, and printed none of `secrets`."""
    assert run.rc == 0, run.output[-3000:]
    assert run.stats["changed"] >= 2, run.stats
    assert written_objects(emulator, paths) == []
    assert not leaked(run.output, secrets), "a secret leaked into the output"
