"""Bad variables make vllm_host fail in preflight, before any change, naming the variable.

Each case runs the real role through ansible-playbook against localhost with one bad setting on top
of an otherwise valid configuration. The role validates variables before it looks at the host, so no
test host is needed; the play must fail, say which variable is wrong, and report changed=0.
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path

import pytest
from itest_support import report_failures

ROOT = Path(__file__).resolve().parents[3]

VALID = {
    "vllm_host_profile": "cpu",
    "vllm_host_api_key": "s3cret-test-key",
    "vllm_host_model_path": "/srv/models/tiny",
    "vllm_host_served_model_name": "tiny",
    "vllm_host_instances": [{"name": "main", "port": 8000}],
}

CASES = {
    "profile not a choice": ({"vllm_host_profile": "gpu"}, "vllm_host_profile"),
    "drain time beyond the stop timeout": (
        {"vllm_host_instances": [{"name": "main", "shutdown_timeout": 200}]},
        "vllm_host_stop_timeout",
    ),
    "negative drain time": (
        {"vllm_host_instances": [{"name": "main", "shutdown_timeout": -1}]},
        "vllm_host_instances[0].shutdown_timeout",
    ),
    "drain hook that does not exist": ({"vllm_host_drain_tasks": "/nonexistent/drain.yml"}, "vllm_host_drain_tasks"),
    "instances not a list": ({"vllm_host_instances": 5}, "vllm_host_instances"),
    "instance without name": ({"vllm_host_instances": [{"port": 8000}]}, "vllm_host_instances"),
    "instance name with spaces": ({"vllm_host_instances": [{"name": "Main Server"}]}, "vllm_host_instances"),
    "duplicate instance names": (
        {"vllm_host_instances": [{"name": "a", "port": 8000}, {"name": "a", "port": 8001}]},
        "vllm_host_instances",
    ),
    "duplicate ports": (
        {"vllm_host_instances": [{"name": "a", "port": 8000}, {"name": "b", "port": 8000}]},
        "vllm_host_instances",
    ),
    "port out of range": ({"vllm_host_instances": [{"name": "main", "port": 70000}]}, "vllm_host_instances[0].port"),
    "port not a number": ({"vllm_host_instances": [{"name": "main", "port": "http"}]}, "vllm_host_instances[0].port"),
    "gpu memory fraction above 1": (
        {
            "vllm_host_profile": "cuda",
            "vllm_host_gpu_check": False,
            "vllm_host_instances": [{"name": "main", "gpu_memory_utilization": 1.5}],
        },
        "vllm_host_instances[0].gpu_memory_utilization",
    ),
    "gpu memory fraction zero": (
        {
            "vllm_host_profile": "cuda",
            "vllm_host_gpu_check": False,
            "vllm_host_instances": [{"name": "main", "gpu_memory_utilization": 0}],
        },
        "vllm_host_instances[0].gpu_memory_utilization",
    ),
    "tensor parallel size zero": (
        {"vllm_host_instances": [{"name": "main", "tensor_parallel_size": 0}]},
        "vllm_host_instances[0].tensor_parallel_size",
    ),
    "unknown dtype": ({"vllm_host_server_defaults": {"dtype": "fp7"}}, "vllm_host_instances[0].dtype"),
    "misspelled server key": (
        {"vllm_host_instances": [{"name": "main", "max_model_length": 512}]},
        "vllm_host_instances[0].max_model_length",
    ),
    "api key in extra_args": (
        {"vllm_host_instances": [{"name": "main", "extra_args": ["--api-key", "x"]}]},
        "vllm_host_instances[0].extra_args",
    ),
    "missing model": ({"vllm_host_model_path": ""}, "vllm_host_instances[0].model"),
    "empty key where one is required": ({"vllm_host_api_key": ""}, "vllm_host_api_key"),
    "health timeout not an int": ({"vllm_host_health_timeout": "soon"}, "vllm_host_health_timeout"),
    "unknown health probe": ({"vllm_host_health_probes": ["ping"]}, "vllm_host_health_probes"),
    "disk threshold not an int": ({"vllm_host_min_free_disk_mb": "lots"}, "vllm_host_min_free_disk_mb"),
    # GPU checks against a replayed real H100 host (one GPU): see replaying_nvidia_smi().
    "tensor parallel size above the GPU count": (
        {"vllm_host_profile": "cuda", "vllm_host_instances": [{"name": "main", "tensor_parallel_size": 2}]},
        "vllm_host_instances",
    ),
    "device index the host does not have": (
        {"vllm_host_profile": "cuda", "vllm_host_instances": [{"name": "main", "devices": [3]}]},
        "vllm_host_instances",
    ),
}

DATA = ROOT / "tests" / "unit" / "data" / "nvidia-smi"


def replaying_nvidia_smi(directory: Path) -> Path:
    """An nvidia-smi that answers with the real captures of a one-GPU H100 host.

    The --query-gpu capture has units (``81559 MiB``); the role asks for ``nounits``, so they are
    stripped, nothing else changes.
    """
    row = (DATA / "smi_query_gpu.csv").read_text().splitlines()[1]
    values = [v.strip() for v in row.split(",")]
    values = [v.split(" ")[0] if v.endswith((" MiB", " %", " W")) else v for v in values]
    (directory / "query.csv").write_text(", ".join(values) + "\n")
    app = (DATA / "smi_compute_apps_busy.csv").read_text().splitlines()[1]
    pid, name, used, uuid = (v.strip() for v in app.split(","))
    (directory / "apps.csv").write_text(f"{uuid}, {pid}, {name}, {used.split(' ')[0]}\n")
    script = directory / "nvidia-smi"
    script.write_text(
        "#!/bin/sh\n"
        'case "$1" in\n'
        f'  --query-gpu=*) exec cat "{directory}/query.csv" ;;\n'
        f'  --query-compute-apps=*) exec cat "{directory}/apps.csv" ;;\n'
        f'  -q) exec cat "{DATA}/smi_q.xml" ;;\n'
        '  *) echo "unexpected arguments: $*" >&2; exit 2 ;;\n'
        "esac\n"
    )
    script.chmod(0o755)
    return script


# Preflight tasks that look at the host rather than the variables (this controller is not a systemd host).
HOST_CHECKS = (
    "[Require systemd",
    "[Require a supported operating system",
    "[Check the Python",
    "[Require free disk",
    "[Require the instruction sets",
)


def run_role(tmp_path: Path, overrides: dict) -> tuple[int, dict, str]:
    extra = {**VALID, "vllm_host_nvidia_smi_path": str(replaying_nvidia_smi(tmp_path)), **overrides}
    varsfile = tmp_path / "vars.json"
    varsfile.write_text(json.dumps(extra))
    playbook = tmp_path / "play.yml"
    playbook.write_text(
        textwrap.dedent(
            """\
            - hosts: localhost
              connection: local
              gather_facts: true
              vars:
                ansible_python_interpreter: "{{ ansible_playbook_python }}"
              roles:
                - llmops.platform.vllm_host
            """
        )
    )
    env = {
        **os.environ,
        "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_COLLECTIONS_PATH": str(ROOT / ".collections"),
    }
    proc = subprocess.run(
        # Only the preflight runs (tag), so even a valid configuration never installs anything here.
        ["ansible-playbook", "-i", "localhost,", str(playbook), "-e", f"@{varsfile}", "--tags", "vllm_host_preflight"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
        check=False,
    )
    report = json.loads(proc.stdout) if proc.stdout.strip().startswith("{") else {}
    return proc.returncode, report, proc.stdout + proc.stderr


@pytest.mark.parametrize("case", list(CASES))
def test_bad_variable_fails_in_preflight_naming_it(tmp_path: Path, case: str) -> None:
    overrides, variable = CASES[case]
    rc, report, output = run_role(tmp_path, overrides)
    assert rc != 0, f"{case}: the play succeeded\n{output[-3000:]}"
    messages = report_failures(report)
    assert messages, f"{case}: no failed task in the report\n{output[-3000:]}"
    assert any(variable in m for m in messages), f"{case}: no failure names {variable}: {messages}"
    stats = report["stats"]["localhost"]
    assert stats["changed"] == 0, f"{case}: something changed before the failure: {stats}"
    assert not any(m.startswith(HOST_CHECKS) for m in messages), f"{case}: failed on a host check: {messages}"
    assert "s3cret-test-key" not in output, f"{case}: the API key leaked into the output"


def test_one_gpu_host_passes_the_gpu_checks(tmp_path: Path) -> None:
    """Control for the GPU cases: the same replayed host with tensor_parallel_size 1 passes them."""
    rc, report, output = run_role(tmp_path, {"vllm_host_profile": "cuda"})
    messages = report_failures(report)
    assert not any("GPU" in m for m in messages), messages
    gpu_task = [
        t for p in report["plays"] for t in p["tasks"] if t["task"]["name"].endswith("Inventory the NVIDIA GPUs")
    ]
    assert gpu_task and gpu_task[0]["hosts"]["localhost"]["count"] == 1, output[-2000:]
    assert rc == 0 or all(m.startswith(HOST_CHECKS) for m in messages), messages


def test_valid_variables_pass_the_variable_checks(tmp_path: Path) -> None:
    """The baseline is valid: it passes every variable check (it may stop at a host check here)."""
    rc, report, output = run_role(tmp_path, {})
    messages = report_failures(report)
    assert report.get("stats"), output[-3000:]
    assert rc == 0 or all(m.startswith(HOST_CHECKS) for m in messages), f"{messages}\n{output[-2000:]}"
