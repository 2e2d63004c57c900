"""playbooks/cost_report.yml on the ADR-002 example inventory (inventories/cost-example) reproduces the ADR's cost
comparison: ~$1,950 (2 + 2 A100, external) against ~$1,461 (3 shared, internal) a week at $2.9 per GPU-hour.
A re-run changes nothing, and check mode writes nothing. The computation's edge cases are unit tests
(tests/unit/plugins/module_utils/test_gpu_cost.py); this is the playbook as operators run it, on the controller
only (no host of the inventory is contacted).
"""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_playbook(out: Path, *args: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_COLLECTIONS_PATH": str(ROOT / ".collections"),
    }
    command = [
        "ansible-playbook",
        "-i",
        str(ROOT / "inventories" / "cost-example"),
        str(ROOT / "playbooks" / "cost_report.yml"),
        "-e",
        f"llmops_cost_output_dir={out}",
        "-e",
        f"ansible_python_interpreter={sys.executable}",
        *args,
    ]
    proc = subprocess.run(command, capture_output=True, text=True, env=env, check=False, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    return proc


def test_the_adr_example_from_its_inventory(tmp_path: Path) -> None:
    out = tmp_path / "report"
    check = run_playbook(out, "--check")
    assert not out.exists(), "check mode wrote the report"
    assert "1,948.80" in check.stdout and "1,461.60" in check.stdout

    run_playbook(out)
    rows = list(csv.DictReader(io.StringIO((out / "gpu-cost.csv").read_text())))
    layouts = {r["layout"]: r for r in rows if r["kind"] == "layout"}
    assert layouts["A external"]["gpus"] == "4"
    assert layouts["A external"]["cost_per_period"] == "1948.80"  # ADR: ~$1,950
    assert layouts["B internal"]["gpus"] == "3"
    assert layouts["B internal"]["cost_per_period"] == "1461.60"  # ADR: ~$1,461
    assert layouts["B internal"]["saving_per_period"] == "487.20"  # ADR: ~$489 (from its rounded figures)
    assert layouts["B internal"]["saving_pct"] == "25.00"  # ADR: ~25 %
    assert layouts["B internal"]["saving_per_year"] == "25334.40"  # ADR: ~$25k
    pools = [r for r in rows if r["kind"] == "pool"]
    # The inference hosts' GPUs come from their vllm_host_instances devices.
    assert {r["pool"]: r["gpus"] for r in pools}["inference host 1"] == "1"
    assert sum(int(r["gpus"]) for r in pools) == 7
    markdown = (out / "gpu-cost.md").read_text()
    assert "| A external | 4 | 672 | 1,948.80 |" in markdown
    assert "| B internal | 3 | 504 | 1,461.60 |" in markdown
    assert oct((out / "gpu-cost.csv").stat().st_mode & 0o777) == "0o644"

    again = run_playbook(out)
    assert "changed=0" in again.stdout, again.stdout[-2000:]
