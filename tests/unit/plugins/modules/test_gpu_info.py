"""llmops.platform.gpu_info: main() with run_command answering real nvidia-smi captures; the module via ansible."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[4]
if str(ROOT / ".collections") not in sys.path:
    sys.path.insert(0, str(ROOT / ".collections"))

from module_harness import run_main  # noqa: E402

from ansible_collections.llmops.platform.plugins.modules import gpu_info  # noqa: E402

DATA = ROOT / "tests" / "unit" / "data" / "nvidia-smi"
UUID = "GPU-43cb350c-607f-01b0-31bb-e036fa896010"
# The module's query is the captured field list; the capture with header and units is the same data.
QUERY_ROW = "0, GPU-43cb350c-607f-01b0-31bb-e036fa896010, NVIDIA H100 80GB HBM3, 81559, 0, 81079, 580.159.04, Enabled, Disabled, 9.0, 00000000:00:06.0, 0, 36, 115.67\n"  # noqa: E501
APPS_ROW = f"{UUID}, 427, python3, 2426\n"


class FakeNvidiaSmi:
    """Answers AnsibleModule.run_command with captured output, by command."""

    def __init__(self, query=QUERY_ROW, apps=APPS_ROW, xml=None, rc=None):
        self.answers = {
            "--query-gpu": (0, query, ""),
            "--query-compute-apps": (0, apps, ""),
            "-q": (0, (DATA / "smi_q.xml").read_text() if xml is None else xml, ""),
        }
        self.answers.update(rc or {})
        self.calls = []

    def __call__(self, args, **kwargs):
        self.calls.append(list(args))
        key = "-q" if args[1] == "-q" else args[1].split("=")[0]
        return self.answers[key]


def run_module(params, fake=None, binary="/usr/bin/nvidia-smi"):
    fake = fake or FakeNvidiaSmi()
    outcome = run_main(
        gpu_info.main,
        params,
        run_command=lambda self, args, **kw: fake(args, **kw),
        get_bin_path=lambda self, name, *a, **k: binary,
    )
    return outcome, fake


def test_reports_the_captured_h100():
    outcome, fake = run_module({})
    assert not outcome.failed
    result = outcome.result
    assert result["changed"] is False
    assert result["present"] is True
    assert result["nvidia_smi_path"] == "/usr/bin/nvidia-smi"
    assert result["count"] == 1
    assert result["driver_version"] == "580.159.04"
    assert result["cuda_version"] == "13.0"
    assert result["fabric_manager_required"] is False
    assert result["fabric_ready"] is True
    gpu = result["gpus"][0]
    assert gpu["index"] == 0
    assert gpu["name"] == "NVIDIA H100 80GB HBM3"
    assert gpu["memory_total_mib"] == 81559
    assert gpu["persistence_mode"] is True
    assert gpu["mig_mode"] == "Disabled"
    assert gpu["compute_mode"] == "Default"
    assert gpu["processes"] == [{"pid": 427, "process_name": "python3", "used_memory_mib": 2426}]
    assert [c[1].split("=")[0] for c in fake.calls] == ["--query-gpu", "--query-compute-apps", "-q"]


def test_check_mode_reads_the_same():
    outcome, fake = run_module({"_ansible_check_mode": True})
    assert not outcome.failed
    assert outcome.result["count"] == 1
    assert len(fake.calls) == 3


def test_absent_is_not_a_failure():
    outcome, fake = run_module({}, binary=None)
    assert not outcome.failed
    assert outcome.result["present"] is False
    assert outcome.result["count"] == 0
    assert fake.calls == []


def test_absent_fails_when_required():
    outcome, _fake = run_module({"required": True}, binary=None)
    assert outcome.failed
    assert "nvidia-smi was not found" in outcome.result["msg"]
    assert outcome.result["present"] is False


def test_explicit_path_that_does_not_exist(tmp_path):
    outcome, _fake = run_module({"nvidia_smi_path": str(tmp_path / "nvidia-smi"), "required": True})
    assert outcome.failed
    assert str(tmp_path / "nvidia-smi") in outcome.result["msg"]


def test_unparseable_output_names_the_line():
    outcome, _fake = run_module({}, FakeNvidiaSmi(query="0, GPU-x, NVIDIA H100\n"))
    assert outcome.failed
    assert "cannot parse nvidia-smi output" in outcome.result["msg"]
    assert "'0, GPU-x, NVIDIA H100'" in outcome.result["msg"]


def test_driver_failure_is_reported():
    message = "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver."
    outcome, _fake = run_module({}, FakeNvidiaSmi(rc={"--query-gpu": (9, message, "")}))
    assert outcome.failed
    assert "rc=9" in outcome.result["msg"]
    assert message in outcome.result["msg"]


def test_no_devices():
    fake = FakeNvidiaSmi(rc={"--query-gpu": (6, "No devices were found\n", "")})
    outcome, _fake = run_module({}, fake)
    assert not outcome.failed
    assert outcome.result["present"] is True
    assert outcome.result["count"] == 0
    outcome, _fake = run_module(
        {"required": True}, FakeNvidiaSmi(rc={"--query-gpu": (6, "No devices were found\n", "")})
    )
    assert outcome.failed
    assert "found no GPUs" in outcome.result["msg"]


def test_fabric_manager_not_started():
    xml = (DATA / "smi_q.xml").read_text().replace("<state>N/A</state>", "<state>Not Started</state>", 1)
    outcome, _fake = run_module({}, FakeNvidiaSmi(xml=xml))
    assert outcome.result["fabric_manager_required"] is True
    assert outcome.result["fabric_state"] == "Not Started"
    assert outcome.result["fabric_ready"] is False


# The real module through Ansible on this machine (no GPU here).


def ansible_adhoc(*module_args, env=None):
    command = [str(ROOT / "scripts" / "run"), "ansible", "localhost", "-m", "llmops.platform.gpu_info", "-o"]
    if module_args:
        command += ["-a", " ".join(module_args)]
    done = subprocess.run(
        command, capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, **(env or {})), check=False, timeout=120
    )
    _host, _sep, payload = done.stdout.partition("=>")
    return done.returncode, json.loads(payload) if payload.strip() else {}, done


@pytest.mark.skipif(
    any((Path(p) / "nvidia-smi").exists() for p in os.environ.get("PATH", "").split(":")), reason="host has nvidia-smi"
)
def test_ansible_without_nvidia_smi():
    rc, result, done = ansible_adhoc()
    assert rc == 0, done.stdout + done.stderr
    assert result["present"] is False
    assert result["changed"] is False
    rc, result, done = ansible_adhoc("required=true")
    assert rc != 0
    assert "nvidia-smi was not found (not in PATH) and required=true" in result["msg"]


def test_ansible_with_a_replaying_nvidia_smi(tmp_path):
    """The whole Ansible path (argv, environment, JSON) with a stand-in binary replaying the real captures."""
    (tmp_path / "query.csv").write_text(QUERY_ROW)
    (tmp_path / "apps.csv").write_text(APPS_ROW)
    script = tmp_path / "nvidia-smi"
    script.write_text(
        "#!/bin/sh\n"
        f'case "$1" in\n'
        f'  --query-gpu=*) exec cat "{tmp_path}/query.csv" ;;\n'
        f'  --query-compute-apps=*) exec cat "{tmp_path}/apps.csv" ;;\n'
        f'  -q) exec cat "{DATA}/smi_q.xml" ;;\n'
        '  *) echo "unexpected arguments: $*" >&2; exit 2 ;;\n'
        "esac\n"
    )
    script.chmod(0o755)
    rc, result, done = ansible_adhoc(f"nvidia_smi_path={script}", "required=true")
    assert rc == 0, done.stdout + done.stderr
    assert result["present"] is True
    assert result["count"] == 1
    assert result["cuda_version"] == "13.0"
    assert result["gpus"][0]["uuid"] == UUID
    assert result["gpus"][0]["processes"][0]["pid"] == 427
