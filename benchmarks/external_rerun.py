"""Idempotent re-run time of playbooks/external.yml on 1 and on 2 real systemd hosts.

Boots two nspawn test hosts, deploys the external layout once (installing vLLM: minutes), then times
re-runs that must change nothing: N runs limited to one host, N runs on both. Prints each run's wall
time and changed count, the medians, the 2-host/1-host ratio, and the hardened unit's
`systemd-analyze security` exposure. Prints figures; asserts nothing about time.

    scripts/run python benchmarks/external_rerun.py [--runs 3] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLI = ROOT / "tests" / "hosts" / "nspawn_hosts.py"
PREFIX = "bench"
HOSTS = ["bench-1", "bench-2"]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def playbook(state: Path, limit: str | None, quiet: bool = True) -> tuple[float, int, int]:
    cmd = [
        "ansible-playbook",
        "-i", str(ROOT / "inventories" / "demo"),
        "-i", str(state / "inventory.yml"),
        "-i", str(state / "groups.yml"),
        str(ROOT / "playbooks" / "external.yml"),
    ]  # fmt: skip
    if limit:
        cmd += ["--limit", limit]
    start = time.monotonic()
    # Stream the first deploy's output (a person watching sees progress) and keep it for the recap.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if not quiet:
            print(line, end="", flush=True)
    proc.wait()
    elapsed = time.monotonic() - start
    output = "".join(lines)
    if proc.returncode != 0:
        sys.exit(f"external.yml failed (rc={proc.returncode}):\n{output[-4000:]}")
    recap = re.findall(r"changed=(\d+)", output)
    return elapsed, sum(int(c) for c in recap), len(recap)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="leave the hosts up")
    args = parser.parse_args()
    cache = Path(os.environ["LLMOPS_CACHE"])
    state = cache / "bench-external"
    fixtures = os.environ["LLMOPS_FIXTURES"]
    os.environ.setdefault("LLMOPS_DEMO_API_KEY", "benchmark-key-0123456789")
    os.environ["LLMOPS_TLS_CA_DIR"] = str(state / "tls")
    try:
        log("booting 2 test hosts")
        subprocess.run(
            ["python3", str(CLI), "create", "--prefix", PREFIX, "--state-dir", str(state),
             *[f"--host={h}" for h in HOSTS], f"--bind-ro={fixtures}:/srv/fixtures", "--wheelhouse"],
            check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        (state / "groups.yml").write_text("---\nvllm_hosts:\n  hosts:\n" + "".join(f"    {h}:\n" for h in HOSTS))
        log("first deploy on both hosts (installs vLLM from the wheelhouse; minutes)")
        first, changed, _hosts = playbook(state, None, quiet=False)
        log(f"first deploy: {first:.1f} s, changed={changed}")
        rows = []
        for label, limit in (("1 host", HOSTS[0]), ("2 hosts", None)):
            for i in range(args.runs):
                elapsed, changed, hosts = playbook(state, limit)
                rows.append((label, i + 1, elapsed, changed, hosts))
                log(f"{label} run {i + 1}: {elapsed:.2f} s, changed={changed} on {hosts} host(s)")
        exposure = subprocess.run(
            ["ansible", "-i", str(state / "inventory.yml"), HOSTS[0], "-m", "ansible.builtin.command",
             "-a", "systemd-analyze security --no-pager vllm@main.service"],
            capture_output=True, text=True, check=False, cwd=ROOT,
        ).stdout  # fmt: skip
        exposure_line = next((ln for ln in exposure.splitlines() if "Overall exposure" in ln), exposure[-300:])
    finally:
        if not args.keep:
            subprocess.run(["python3", str(CLI), "destroy", "--prefix", PREFIX, "--state-dir", str(state)],
                           check=False, stdout=subprocess.DEVNULL)  # fmt: skip
    print()
    print(f"{'hosts':8} {'run':>3} {'seconds':>8} {'changed':>8}")
    for label, run, elapsed, changed, _hosts in rows:
        print(f"{label:8} {run:>3} {elapsed:>8.2f} {changed:>8}")
    one = statistics.median(r[2] for r in rows if r[0] == "1 host")
    two = statistics.median(r[2] for r in rows if r[0] == "2 hosts")
    print(f"\nmedian idempotent re-run: 1 host {one:.2f} s, 2 hosts {two:.2f} s (ratio {two / one:.2f})")
    print("targets: 1 host <= 6 s, 2 hosts <= 1.2x 1 host")
    print(f"every re-run changed nothing: {all(r[3] == 0 for r in rows)}")
    print(f"unit exposure: {exposure_line.strip()}")
    print(
        json.dumps(
            {"first_deploy_s": round(first, 2), "rerun_1_host_s": round(one, 2), "rerun_2_hosts_s": round(two, 2)}
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
