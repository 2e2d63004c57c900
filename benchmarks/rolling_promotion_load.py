"""Requests dropped during a rolling model promotion across two real hosts under continuous load.

Boots two nspawn test hosts, deploys the external layout (tiny model) on both, then starts a client
that sends completions continuously, round-robin across the two hosts the way a load balancer would,
moving a request to the other host when its connection fails (refused, reset, closed mid-request).
While it runs, playbooks/promote.yml rolls tiny-v2 across the fleet one host at a time. Prints the
requests sent, moved to the other host, and failed (failed = no host could answer it), and which
model version answered before and after, and whether the hosts' liveness watchdogs (on, with their
defaults) restarted anything (they must not: load is not a hang). Prints figures; asserts nothing.

    scripts/run python benchmarks/rolling_promotion_load.py [--keep]
"""

from __future__ import annotations

import argparse
import collections
import http.client
import json
import os
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CLI = ROOT / "tests" / "hosts" / "nspawn_hosts.py"
PREFIX = "load"
HOSTS = ["load-1", "load-2"]
KEY = "load-benchmark-key-0123456789"
CONNECTION_ERRORS = (ConnectionError, http.client.RemoteDisconnected, http.client.IncompleteRead, TimeoutError)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def playbook(state: Path, name: str, **extra: str) -> int:
    cmd = ["ansible-playbook", "-i", str(ROOT / "inventories" / "demo"), "-i", str(state / "inventory.yml"),
           "-i", str(state / "groups.yml"), str(ROOT / "playbooks" / name)]  # fmt: skip
    for key, value in extra.items():
        cmd += ["-e", f"{key}={value}"]
    return subprocess.run(cmd, cwd=ROOT, check=False, stdout=subprocess.DEVNULL).returncode


# Each host's TLS front is verified with the benchmark fleet's own CA (set in main()).
TLS: list[ssl.SSLContext] = []


def complete(address: str) -> str:
    request = urllib.request.Request(
        f"https://{address}:8000/v1/completions",
        data=json.dumps({"model": "tiny", "prompt": "hello world", "max_tokens": 4, "temperature": 0}).encode(),
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30, context=TLS[0]) as response:
        return json.load(response)["choices"][0]["text"]


def is_connection_error(exc: BaseException) -> bool:
    if isinstance(exc, urllib.error.HTTPError):
        # The host's proxy answers 503 itself while its engine is down: nothing reached vLLM, so a balancer
        # retries it elsewhere, like a refused connection.
        return exc.code == 503 and "vLLM" not in exc.read().decode(errors="replace")
    if isinstance(exc, urllib.error.URLError):
        return isinstance(exc.reason, (*CONNECTION_ERRORS, OSError))
    return isinstance(exc, CONNECTION_ERRORS)


def refused(exc: BaseException) -> bool:
    if isinstance(exc, urllib.error.HTTPError):
        return True  # the proxy's own 503: the engine was not listening
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    return isinstance(reason, ConnectionRefusedError)


class Client(threading.Thread):
    """Round-robin across the hosts; on a connection error, the request moves to the other host."""

    def __init__(self, addresses: list[str], pool_dir: Path) -> None:
        super().__init__(daemon=True)
        self.addresses = addresses
        # The balancer's pool: a host is out while the drain hook's file <host>.drained exists.
        self.pool_dir = pool_dir
        self.stop = threading.Event()
        self.sent = self.moved = 0
        # Why requests moved: refused (the host is not listening: stopped, or still loading) or cut after
        # the request was sent (the connection closed under it: what a load balancer must retry too).
        self.moved_why: collections.Counter[str] = collections.Counter()
        self.failed: list[str] = []
        self.answers: list[tuple[float, str]] = []

    def run(self) -> None:
        turn = 0
        deadline = time.monotonic() + 1800  # bounded, whatever happens
        while not self.stop.is_set() and time.monotonic() < deadline:
            self.sent += 1
            live = [a for h, a in zip(HOSTS, self.addresses) if not (self.pool_dir / f"{h}.drained").exists()]
            live = live or self.addresses
            first = live[turn % len(live)]
            order = [first] + [a for a in self.addresses if a != first]
            turn += 1
            for attempt, address in enumerate(order):
                try:
                    self.answers.append((time.monotonic(), complete(address)))
                    break
                except Exception as exc:
                    if attempt == 0 and is_connection_error(exc):
                        self.moved += 1
                        self.moved_why["refused" if refused(exc) else "cut mid-request"] += 1
                        continue
                    self.failed.append(f"{address}: {exc!r}")
                    break
            time.sleep(0.02)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", action="store_true", help="leave the hosts up")
    parser.add_argument(
        "--shutdown-timeout", type=int, default=None, help="override the servers' drain time (vLLM --shutdown-timeout)"
    )
    parser.add_argument(
        "--drain-hooks",
        action="store_true",
        help="take each host out of the client's pool around its restart (vllm_host_drain_tasks / undrain)",
    )
    args = parser.parse_args()
    state = Path(os.environ["LLMOPS_CACHE"]) / "bench-load"
    fixtures = Path(os.environ["LLMOPS_FIXTURES"]) / "models"
    os.environ["LLMOPS_DEMO_API_KEY"] = KEY
    os.environ["LLMOPS_TLS_CA_DIR"] = str(state / "tls")
    subprocess.run(["python3", str(CLI), "destroy", "--prefix", PREFIX, "--state-dir", str(state)],
                   check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        log("booting 2 test hosts")
        create = ["python3", str(CLI), "create", "--prefix", PREFIX, "--state-dir", str(state), "--wheelhouse"]
        subprocess.run(create + [f"--host={h}" for h in HOSTS], check=True, stdout=subprocess.DEVNULL)
        # Two vLLM CPU engines on one small controller: left to "auto" (or given a core each), vLLM pins its
        # OpenMP threads and its front-end processes to fixed cores, and the busy host's engine starved the
        # one being promoted (its engine process sat runnable on the busy core for minutes). Unpinned, one
        # OpenMP thread each, the kernel balances the two hosts over the cores.
        groups = {"vllm_hosts": {"hosts": {h: {"vllm_host_environment": {
            "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "VLLM_CPU_OMP_THREADS_BIND": "nobind",
            "OMP_NUM_THREADS": "1"}} for h in HOSTS}}}  # fmt: skip
        if args.shutdown_timeout is not None:
            demo = yaml.safe_load((ROOT / "inventories" / "demo" / "group_vars" / "vllm_hosts.yml").read_text())
            defaults = {**demo["vllm_host_server_defaults"], "shutdown_timeout": args.shutdown_timeout}
            for host_vars in groups["vllm_hosts"]["hosts"].values():
                host_vars["vllm_host_server_defaults"] = defaults
        (state / "groups.yml").write_text(json.dumps(groups))
        hosts = json.loads((state / "state.json").read_text())["hosts"]
        addresses = [hosts[h]["ip"] for h in HOSTS]
        log("deploying tiny on both hosts (external.yml)")
        if playbook(state, "external.yml", model_sync_source=str(fixtures / "tiny")) != 0:
            sys.exit("external.yml failed")
        TLS.append(ssl.create_default_context(cafile=str(state / "tls" / "ca.pem")))
        before = complete(addresses[0])
        pool_dir = state / "lb-pool"
        pool_dir.mkdir(exist_ok=True)
        hooks = {}
        if args.drain_hooks:
            hooks = {"vllm_host_drain_tasks": str(ROOT / "benchmarks" / "lb_hooks" / "drain.yml"),
                     "vllm_host_undrain_tasks": str(ROOT / "benchmarks" / "lb_hooks" / "undrain.yml"),
                     "lb_pool_dir": str(pool_dir)}  # fmt: skip
        client = Client(addresses, pool_dir)
        client.start()
        time.sleep(3)
        log("promoting tiny-v2 one host at a time under load (promote.yml)")
        started = time.monotonic()
        rc = playbook(state, "promote.yml", model_sync_source=str(fixtures / "tiny-v2"), **hooks)
        promotion_s = time.monotonic() - started
        time.sleep(3)
        client.stop.set()
        client.join()
        after = [complete(a) for a in addresses]
        watchdog = {}
        for host, address in zip(HOSTS, addresses):
            out = subprocess.run(
                ["ssh", "-i", str(state / "id_ed25519"), "-o", "StrictHostKeyChecking=no",
                 "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", f"root@{address}",
                 "journalctl -o cat -u vllm-watchdog@main | grep -c 'killing PID' || true; "
                 "journalctl -o cat -u vllm-watchdog@main | grep -c 'probe .* failed' || true"],
                capture_output=True, text=True, check=False,
            ).stdout.split()  # fmt: skip
            watchdog[host] = {"restarts by the watchdog": out[0] if out else "?", "failed probes": out[1:2]}
    finally:
        if not args.keep:
            subprocess.run(["python3", str(CLI), "destroy", "--prefix", PREFIX, "--state-dir", str(state)],
                           check=False, stdout=subprocess.DEVNULL)  # fmt: skip
    versions = collections.Counter("v1" if text == before else "v2" for _t, text in client.answers)
    print()
    print(f"drain hooks: {'on' if args.drain_hooks else 'off'}; vLLM --shutdown-timeout: {args.shutdown_timeout}")
    print(f"promote.yml exit code {rc}, {promotion_s:.1f} s for 2 hosts (serial 1)")
    print(f"requests sent {client.sent}, moved to the other host {client.moved} {dict(client.moved_why)},"
          f" failed {len(client.failed)}")  # fmt: skip
    print(f"answers by version during the run: {dict(versions)}")
    print(f"after: both hosts answer v2: {all(a != before for a in after) and len(set(after)) == 1}")
    print(f"liveness watchdogs (on, defaults) during the run: {watchdog}")
    for failure in client.failed[:10]:
        print(f"  failed: {failure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
