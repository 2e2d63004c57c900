"""Real systemd test hosts (tests/hosts/nspawn_hosts.py) driven by the collection's own playbooks.

`booted_fleet(...)` boots a set of nspawn hosts (cleaning up a set an interrupted run left behind),
writes the inventory groups, yields a `Fleet` and destroys the hosts afterwards. `Fleet.playbook(...)`
runs a playbook of this repository against them with the ansible.posix.json callback and returns
(rc, output, parsed report); `changed` and `failures` read that report. Each fleet has its own local
CA (the demo inventory's vllm_host_tls_local_ca_dir, through LLMOPS_TLS_CA_DIR): `Fleet.request(...)`
talks to an instance through its TLS and API-key front, verifying the certificate with that CA.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

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
        self.env = {"LLMOPS_TLS_CA_DIR": str(state / "tls"), **(env or {})}
        # More inventory sources (e.g. a directory with group_vars/host_vars), after the generated ones.
        self.inventories: List[Path] = []

    def add_group_vars(self, group: str, values: Dict[str, Any]) -> None:
        """One more inventory source after the others: group_vars for `group` (they win over the demo inventory's)."""
        inventory = self.state / f"group-vars-{len(self.inventories)}"
        (inventory / "group_vars").mkdir(parents=True, exist_ok=True)
        (inventory / "hosts.yml").write_text(json.dumps({group: {"hosts": {}}}))
        (inventory / "group_vars" / f"{group}.yml").write_text(json.dumps(values))
        self.inventories.append(inventory)

    @property
    def ca(self) -> Path:
        return self.state / "tls" / "ca.pem"

    def request(
        self, path: str, host: Optional[str] = None, key: Optional[str] = None, body: Optional[dict] = None,
        *, method: Optional[str] = None, port: int = 8000, timeout: float = 60,
    ) -> Tuple[int, Any]:  # fmt: skip
        """(status, parsed JSON or text) of a request through the instance's TLS front, certificate verified."""
        address = self.addresses[host] if host else self.address
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(
            f"https://{address}:{port}{path}", data=None if body is None else json.dumps(body).encode(),
            headers=headers, method=method,
        )  # fmt: skip
        context = ssl.create_default_context(cafile=str(self.ca))
        try:
            with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode(errors="replace")

    def answer(self, key: str, host: Optional[str] = None, prompt: str = "hello world", model: str = "tiny") -> str:
        """A temperature-0 completion through the front (the tiny models answer deterministically)."""
        status, payload = self.request(
            "/v1/completions", host, key, {"model": model, "prompt": prompt, "max_tokens": 8, "temperature": 0}
        )
        assert status == 200, f"completion answered HTTP {status}: {payload}"
        return payload["choices"][0]["text"]

    @property
    def address(self) -> str:
        return next(iter(self.addresses.values()))

    def _command(self, name: str, extra: dict, args: List[str], callback: str) -> tuple[List[str], dict]:
        # A vars file of its own per run: runs may overlap (concurrent promotions).
        fd, varsfile = tempfile.mkstemp(prefix="extra-", suffix=".json", dir=self.state)
        with os.fdopen(fd, "w") as handle:
            json.dump(extra, handle)
        env = {**os.environ, **self.env, "ANSIBLE_STDOUT_CALLBACK": callback}
        inventories = [ROOT / "inventories" / "demo", self.state / "inventory.yml", self.state / "groups.yml"]
        inventories += self.inventories
        cmd = ["ansible-playbook", *[f"--inventory={i}" for i in inventories], str(ROOT / "playbooks" / name)]
        cmd += ["-e", f"@{varsfile}", *args]
        return cmd, env

    def playbook(
        self, name: str, *args: str, callback: str = "ansible.posix.json", **extra: object
    ) -> tuple[int, str, dict]:
        """Run playbooks/NAME; the report is parsed when the callback is ansible.posix.json."""
        cmd, env = self._command(name, extra, list(args), callback)
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=1200, check=False)
        report = json.loads(proc.stdout) if proc.stdout.lstrip().startswith("{") else {}
        return proc.returncode, proc.stdout + proc.stderr, report

    def start_playbook(self, name: str, **extra: object) -> subprocess.Popen:
        cmd, env = self._command(name, extra, [], "ansible.posix.json")
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)

    def ssh(self, command: str, host: Optional[str] = None, stdin: Optional[str] = None, check: bool = True) -> str:
        address = self.addresses[host] if host else self.address
        proc = subprocess.run(
            ["ssh", "-i", str(self.state / "id_ed25519"), "-o", "StrictHostKeyChecking=no",
             "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", f"root@{address}", command],
            input=stdin, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert proc.returncode == 0 or not check, f"{command}: {proc.stderr}"
        return proc.stdout

    def current(self, host: Optional[str] = None, link: str = "current") -> str:
        return self.ssh(f"readlink {MODEL_DIR}/{link} || true", host).strip()


def booted_fleet(
    prefix: str, groups: Dict[str, List[str]], wheelhouse: bool = False, bind_ro: Optional[List[str]] = None,
    env: Optional[Dict[str, str]] = None, *, vllm_layer: bool = False,
) -> Iterator[Fleet]:  # fmt: skip
    """Boot the hosts named in `groups` (group -> hosts), yield a Fleet, destroy them afterwards.

    With `vllm_layer`, the hosts start with the vLLM virtualenv the role installs already in place
    (tests/hosts/vllm_layer.py, given by tests/run_all.sh in $LLMOPS_TEST_VLLM_LAYER), so the role skips the
    install; without that variable (a test file run on its own) they install it."""
    if os.geteuid() != 0:
        pytest.skip("needs root to boot systemd-nspawn test hosts")
    # A fixed state dir: a run that was interrupted before its teardown is cleaned up here.
    state = Path(os.environ["LLMOPS_CACHE"]) / "test-hosts" / prefix
    destroy = [sys.executable, str(CLI), "destroy", "--prefix", prefix, "--state-dir", str(state)]
    subprocess.run(destroy, check=False, capture_output=True, timeout=300)
    hosts = list(dict.fromkeys(h for members in groups.values() for h in members))
    create = [sys.executable, str(CLI), "create", "--prefix", prefix, "--state-dir", str(state)]
    create += [f"--host={h}" for h in hosts] + [f"--bind-ro={b}" for b in bind_ro or []]
    layer = os.environ.get("LLMOPS_TEST_VLLM_LAYER", "")
    if vllm_layer and layer:
        create.append(f"--layer={layer}")
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
