"""Pytest fixtures and helpers for tests that talk to the Kubernetes API emulator.

Use from any test module (pytest runs in importlib mode, so put tests/k8s on sys.path first)::

    sys.path.insert(0, str(ROOT / "tests" / "k8s"))
    from k8s_harness import k8s_emulator, run_playbook  # noqa: F401  (the import registers the fixture)

``k8s_emulator`` starts tests/k8s/emulator.py as a separate process on a free 127.0.0.1 port with its
own kubeconfig, exactly as molecule does, and stops it at teardown. It yields an ``Emulator`` with the
URL, the kubeconfig path and small helpers to read objects and write a status.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
# Next to this harness, and the integration helpers (one reader of ansible-playbook's JSON report).
for folder in (HERE, HERE.parent / "integration"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

import emulator as emu  # noqa: E402
from itest_support import report_failures  # noqa: E402


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
    env = {
        **os.environ,
        "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_COLLECTIONS_PATH": str(ROOT / ".collections"),
        "ANSIBLE_NOCOLOR": "1",
    }
    proc = subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout, check=False)
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


def written_objects(emulator: Emulator, paths: Sequence[str]) -> List[str]:
    """Every object the emulator holds under these API collection paths, as 'path/name'."""
    return [f"{path}/{o['metadata']['name']}" for path in paths for o in emulator.items(path)]


def assert_failed_before_apply(
    run: PlaybookRun, emulator: Emulator, paths: Sequence[str], *, case: str, variable: str, secret: str
) -> None:
    """A role's preflight stopped the play: it failed naming `variable`, changed nothing, wrote no
    object under `paths`, and never printed `secret`."""
    assert run.rc != 0, f"{case}: the play succeeded\n{run.output[-3000:]}"
    messages = run.failures()
    assert messages, f"{case}: no failed task in the report\n{run.output[-3000:]}"
    assert any(variable in m for m in messages), f"{case}: no failure names {variable}: {messages}"
    assert run.stats.get("changed", 0) == 0, f"{case}: something changed before the failure: {run.stats}"
    written = written_objects(emulator, paths)
    assert written == [], f"{case}: objects were written: {written}"
    assert secret not in run.output, f"{case}: a secret leaked into the output"
