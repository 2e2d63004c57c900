"""How fast does llmops.platform.openai_health notice that a real vLLM became ready?

Each run launches a real vLLM CPU server (tiny fixture model) and, right after it, ansible-playbook with
the module. An independent observer thread polls /health every 10 ms and records the first HTTP 200.
Reported per run and as the median:

  lag      module's finished_at - observer's first 200 (what the polling costs; includes /v1/models
           and one real completion, which a readiness check must send)
  ready lag module's ready_at - observer's first 200 (the last probe succeeded; /version comes after)
  exit lag ansible-playbook process exit - observer's first 200 (what a playbook author waits)
  attempts health requests the module sent, and its polls per second while waiting

Target: median lag <= 0.5 s while polling at <= 4 requests/second. The script prints figures and the
verdict; it does not assert (timings depend on the machine).

    scripts/run python benchmarks/readiness_lag.py --runs 5
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]
TARGET_LAG_S = 0.5
TARGET_POLLS_PER_S = 4.0
OBSERVER_PERIOD_S = 0.010


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Observer(threading.Thread):
    """Polls /health every 10 ms; remembers the wall-clock time of the first 200."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url + "/health"
        self.first_200: Optional[float] = None
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set() and self.first_200 is None:
            sent = time.time()
            try:
                with urllib.request.urlopen(self.url, timeout=1) as response:
                    if response.status == 200:
                        # the 200 existed by the time we asked at the latest; count it from the send
                        self.first_200 = sent
                        return
            except (urllib.error.URLError, OSError):
                pass
            self._stop_event.wait(max(0.0, OBSERVER_PERIOD_S - (time.time() - sent)))

    def stop(self) -> None:
        self._stop_event.set()


def vllm_command(port: int, model: Path) -> List[str]:
    python = Path(os.environ["LLMOPS_VLLM_VENV"]) / "bin" / "python"
    return [
        str(python), "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model), "--served-model-name", "tiny",
        "--host", "127.0.0.1", "--port", str(port),
        "--max-model-len", "256", "--dtype", "float32", "--max-num-seqs", "4",
        "--enforce-eager", "--kv-cache-memory-bytes", "64M",
    ]  # fmt: skip


def playbook_text(url: str, timeout: float, python: str) -> str:
    play = [
        {
            "name": "readiness lag benchmark",
            "hosts": "localhost",
            "connection": "local",
            "gather_facts": False,
            "vars": {"ansible_python_interpreter": python},
            "tasks": [
                {
                    "name": "wait for vLLM",
                    "llmops.platform.openai_health": {"url": url, "expected_models": ["tiny"], "timeout": timeout},
                }
            ],
        }
    ]
    return json.dumps(play, indent=2)  # JSON is YAML


def one_run(index: int, model: Path, workdir: Path, timeout: float, python: str) -> Dict[str, Any]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    playbook = workdir / f"playbook-{index}.yml"
    playbook.write_text(playbook_text(url, timeout, python))
    log_path = workdir / f"vllm-{index}.log"
    env = dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        VLLM_NO_USAGE_STATS="1",
        VLLM_TARGET_DEVICE="cpu",
        VLLM_CACHE_ROOT=str(workdir / "vllm-cache"),
    )
    ansible_env = dict(
        os.environ,
        ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
        ANSIBLE_COLLECTIONS_PATH=str(ROOT / ".collections"),
        ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
        ANSIBLE_NOCOLOR="1",
    )
    observer = Observer(url)
    observer.start()
    with log_path.open("wb") as log:
        launched = time.time()
        server = subprocess.Popen(
            vllm_command(port, model), stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    ansible_playbook = str(Path(sys.executable).parent / "ansible-playbook")
    module_started = time.time()
    try:
        proc = subprocess.run(
            [ansible_playbook, "-i", "localhost,", str(playbook)],
            capture_output=True,
            text=True,
            env=ansible_env,
            cwd=str(ROOT),
            timeout=timeout + 120,
            check=False,
        )
        exited = time.time()
        observer.join(timeout=5)
    finally:
        observer.stop()
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()
    out = json.loads(proc.stdout[proc.stdout.find("{") :])
    result = out["plays"][0]["tasks"][0]["hosts"]["localhost"]
    if proc.returncode != 0 or not result.get("ready") or observer.first_200 is None:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-30:])
        raise SystemExit(f"run {index}: module failed: {result.get('msg')}\n{tail}")
    first = observer.first_200
    waiting = result["ready_at"] - module_started
    return dict(
        run=index,
        server_healthy_after=first - launched,
        lag=result["finished_at"] - first,
        lag_ready=result["ready_at"] - first,
        exit_lag=exited - first,
        attempts=result["health_attempts"],
        polls_per_second=result["polls_per_second"],
        overall_rate=result["health_attempts"] / waiting if waiting > 0 else 0.0,
        completion_ms=result["latencies"]["completion"],
        version_ms=result["latencies"]["version"],
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="vLLM starts (>= 5 for a meaningful median)")
    parser.add_argument("--timeout", type=float, default=240, help="module timeout per run, seconds")
    parser.add_argument("--python", default="/usr/bin/python3", help="interpreter the module runs with")
    parser.add_argument("--json", type=Path, help="also write the per-run figures here")
    args = parser.parse_args()
    for name in ("LLMOPS_VLLM_VENV", "LLMOPS_FIXTURES"):
        if not os.environ.get(name):
            parser.error(f"${name} is not set: run through scripts/run")
    model = Path(os.environ["LLMOPS_FIXTURES"]) / "models" / "tiny"

    rows = []
    with tempfile.TemporaryDirectory(prefix="readiness-lag-") as tmp:
        for index in range(1, args.runs + 1):
            row = one_run(index, model, Path(tmp), args.timeout, args.python)
            rows.append(row)
            print(f"run {index}/{args.runs}: lag {row['lag']:.3f} s", file=sys.stderr, flush=True)

    header = (
        f"{'run':>3}  {'healthy after':>13}  {'lag (s)':>8}  {'ready lag':>9}  {'exit lag':>8}  "
        f"{'attempts':>8}  {'polls/s':>7}  {'attempts/s':>10}  {'completion ms':>13}  {'version ms':>10}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['run']:>3}  {r['server_healthy_after']:>12.2f}s  {r['lag']:>8.3f}  {r['lag_ready']:>9.3f}  "
            f"{r['exit_lag']:>8.3f}  {r['attempts']:>8}  {r['polls_per_second']:>7.2f}  {r['overall_rate']:>10.2f}  "
            f"{r['completion_ms']:>13.1f}  {r['version_ms']:>10.1f}"
        )
    median_lag = statistics.median(r["lag"] for r in rows)
    median_exit = statistics.median(r["exit_lag"] for r in rows)
    max_rate = max(r["polls_per_second"] for r in rows)
    print("-" * len(header))
    print(
        f"median lag {median_lag:.3f} s (first /health 200 -> module finished_at), median exit lag "
        f"{median_exit:.3f} s, max polls/s {max_rate:.2f}"
    )
    ok = median_lag <= TARGET_LAG_S and max_rate <= TARGET_POLLS_PER_S
    print(
        f"target: median lag <= {TARGET_LAG_S} s and <= {TARGET_POLLS_PER_S:g} polls/s -> {'MET' if ok else 'NOT MET'}"
    )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
