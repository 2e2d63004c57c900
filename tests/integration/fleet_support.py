"""Real systemd test hosts (tests/hosts/nspawn_hosts.py) driven by the collection's own playbooks.

`booted_fleet(...)` boots a set of nspawn hosts (cleaning up a set an interrupted run left behind),
writes the inventory groups, yields a `Fleet` and destroys the hosts afterwards. `Fleet.playbook(...)`
runs a playbook of this repository against them with the ansible.posix.json callback and returns
(rc, output, parsed report); `changed` and `failures` read that report.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import pytest
from itest_support import report_failures

ROOT = Path(__file__).resolve().parents[2]
CLI = ROOT / "tests" / "hosts" / "nspawn_hosts.py"
MODEL_DIR = "/srv/vllm/models/merged-model"
if str(ROOT / ".collections") not in sys.path:
    sys.path.insert(0, str(ROOT / ".collections"))
from ansible_collections.llmops.platform.plugins.module_utils import model_manifest  # noqa: E402


class Fleet:
    def __init__(self, state: Path, addresses: Dict[str, str], env: Optional[Dict[str, str]] = None) -> None:
        self.state = state
        self.addresses = addresses
        self.env = env or {}

    @property
    def address(self) -> str:
        return next(iter(self.addresses.values()))

    def _command(self, name: str, varsfile: Path, extra: dict, args: List[str]) -> tuple[List[str], dict]:
        varsfile.write_text(json.dumps(extra))
        env = {**os.environ, **self.env, "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json"}
        inventories = [ROOT / "inventories" / "demo", self.state / "inventory.yml", self.state / "groups.yml"]
        cmd = ["ansible-playbook", *[f"--inventory={i}" for i in inventories], str(ROOT / "playbooks" / name)]
        cmd += ["-e", f"@{varsfile}", *args]
        return cmd, env

    def playbook(self, name: str, *args: str, **extra: object) -> tuple[int, str, dict]:
        cmd, env = self._command(name, self.state / "extra.json", extra, list(args))
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=1200, check=False)
        report = json.loads(proc.stdout) if proc.stdout.lstrip().startswith("{") else {}
        return proc.returncode, proc.stdout + proc.stderr, report

    def start_playbook(self, name: str, **extra: object) -> subprocess.Popen:
        cmd, env = self._command(name, self.state / "extra-started.json", extra, [])
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)

    def ssh(self, command: str, host: Optional[str] = None, stdin: Optional[str] = None) -> str:
        address = self.addresses[host] if host else self.address
        proc = subprocess.run(
            ["ssh", "-i", str(self.state / "id_ed25519"), "-o", "StrictHostKeyChecking=no",
             "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", f"root@{address}", command],
            input=stdin, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, f"{command}: {proc.stderr}"
        return proc.stdout

    def current(self, host: Optional[str] = None, link: str = "current") -> str:
        return self.ssh(f"readlink {MODEL_DIR}/{link} || true", host).strip()


def booted_fleet(
    prefix: str, groups: Dict[str, List[str]], wheelhouse: bool = False, bind_ro: Optional[List[str]] = None,
    env: Optional[Dict[str, str]] = None,
) -> Iterator[Fleet]:  # fmt: skip
    """Boot the hosts named in `groups` (group -> hosts), yield a Fleet, destroy them afterwards."""
    if os.geteuid() != 0:
        pytest.skip("needs root to boot systemd-nspawn test hosts")
    # A fixed state dir: a run that was interrupted before its teardown is cleaned up here.
    state = Path(os.environ["LLMOPS_CACHE"]) / "test-hosts" / prefix
    destroy = [sys.executable, str(CLI), "destroy", "--prefix", prefix, "--state-dir", str(state)]
    subprocess.run(destroy, check=False, capture_output=True, timeout=300)
    hosts = list(dict.fromkeys(h for members in groups.values() for h in members))
    create = [sys.executable, str(CLI), "create", "--prefix", prefix, "--state-dir", str(state)]
    create += [f"--host={h}" for h in hosts] + [f"--bind-ro={b}" for b in bind_ro or []]
    subprocess.run(create + (["--wheelhouse"] if wheelhouse else []), check=True, capture_output=True, timeout=900)
    (state / "groups.yml").write_text(json.dumps({g: {"hosts": {h: None for h in m}} for g, m in groups.items()}))
    known = json.loads((state / "state.json").read_text())["hosts"]
    try:
        yield Fleet(state, {h: known[h]["ip"] for h in hosts}, env)
    finally:
        subprocess.run(destroy, check=False, capture_output=True, timeout=300)


def changed(report: dict) -> int:
    return sum(s.get("changed", 0) for s in report.get("stats", {}).values())


def failures(report: dict) -> str:
    return "\n".join(report_failures(report))


def digest(path: Path) -> str:
    return model_manifest.inspect_model_dir(str(path))["content_digest"]
