"""vllm_k8s tasks_from gate on the API emulator, with vLLM renamed: the gate looks for the Deployment and Service
by vllm_k8s's own variables (no copy of them anywhere else), skips saying so when no pod is ready, says in check
mode what it would probe, and fails naming vllm_k8s_kubectl_binary when kubectl does not run. The completion itself
through a real kubectl port-forward is tests/k8s/test_internal_layout.py's (it needs the test node and vLLM)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Dict

import emulator as emu
import pytest
from k8s_harness import Emulator, role_play, run_playbook

NS = "llm-training"
NAME = "chat-engine"
DEPLOYMENTS = f"/apis/apps/v1/namespaces/{NS}/deployments"


def gate(emulator: Emulator, tmp_path: Path, *args: str, **variables: Any):
    play = tmp_path / "gate.yml"
    play.write_text(role_play("llmops.platform.vllm_k8s", "gate"))
    extra: Dict[str, Any] = {
        "vllm_k8s_kubeconfig": str(emulator.kubeconfig),
        "vllm_k8s_name": NAME,
        "vllm_k8s_service_port": 8080,
        "vllm_k8s_port_forward_state_dir": str(tmp_path / "port-forward"),
        **variables,
    }
    return run_playbook(play, cwd=tmp_path, extra_vars=extra, args=list(args))


def messages(run) -> str:
    return "\n".join(
        str(result.get("msg", ""))
        for play in run.report.get("plays", [])
        for task in play["tasks"]
        for result in task["hosts"].values()
    )


@pytest.fixture
def deployment(k8s_emulator: Emulator) -> str:
    """The renamed vLLM Deployment, with no ready pod yet; returns its path."""
    k8s_emulator.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    labels = {"app.kubernetes.io/name": "vllm", "app.kubernetes.io/instance": NAME}
    k8s_emulator.create(
        DEPLOYMENTS,
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": NAME},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "vllm", "image": "vllm/vllm-openai:v0.32.0"}]},
                },
            },
        },
    )
    return f"{DEPLOYMENTS}/{NAME}"


def make_ready(emulator: Emulator, path: str) -> None:
    emulator.set_status(path, emu.deployment_available_status(1, emulator.get(path)["metadata"]["generation"]))


def test_no_ready_pod_skips_the_gate_saying_so(k8s_emulator: Emulator, deployment: str, tmp_path: Path) -> None:
    run = gate(k8s_emulator, tmp_path)
    assert run.rc == 0, run.output[-3000:]
    assert f"HEALTH GATE SKIPPED: Deployment {NS}/{NAME} has no ready pod" in messages(run), messages(run)


def test_check_mode_says_what_it_would_probe(k8s_emulator: Emulator, deployment: str, tmp_path: Path) -> None:
    make_ready(k8s_emulator, deployment)
    run = gate(k8s_emulator, tmp_path, "--check")
    assert run.rc == 0 and run.stats["changed"] == 0, run.output[-3000:]
    assert f"completion for merged-model to Service {NS}/{NAME}:8080" in messages(run), messages(run)
    assert not (tmp_path / "port-forward").exists(), "check mode started a forward"


def test_a_controller_without_kubectl_fails_naming_the_variable(
    k8s_emulator: Emulator, deployment: str, tmp_path: Path
) -> None:
    make_ready(k8s_emulator, deployment)
    run = gate(k8s_emulator, tmp_path, vllm_k8s_kubectl_binary="/nonexistent/kubectl")
    assert run.rc != 0
    failures = "\n".join(run.failures())
    assert "vllm_k8s_kubectl_binary" in failures and "/nonexistent/kubectl" in failures, failures
    assert "vllm-gate" in failures, failures


def test_the_default_name_is_not_looked_for(k8s_emulator: Emulator, deployment: str, tmp_path: Path) -> None:
    """With vllm_k8s_name at its default the renamed Deployment is not vLLM's: the gate says which one it missed."""
    run = gate(k8s_emulator, tmp_path, vllm_k8s_name="vllm-inference")
    assert run.rc != 0
    failures = "\n".join(run.failures())
    assert f"No Deployment {NS}/vllm-inference (from vllm_k8s_name)" in failures, failures


FAKE_KUBECTL = """#!/bin/sh
# kubectl stand-in: `version` answers, `port-forward ... LOCAL:PORT` serves HTTP on LOCAL (404 everywhere: no vLLM).
[ "$1" = version ] && exit 0
for arg in "$@"; do last="$arg"; done
exec {python} -m http.server "${{last%%:*}}" --bind 127.0.0.1
"""


def test_the_forward_is_stopped_when_the_completion_fails(
    k8s_emulator: Emulator, deployment: str, tmp_path: Path
) -> None:
    """The gate's forward is started and, whatever openai_health says, stopped again (its pidfile gone)."""
    make_ready(k8s_emulator, deployment)
    kubectl = tmp_path / "kubectl"
    kubectl.write_text(FAKE_KUBECTL.format(python=sys.executable))
    kubectl.chmod(0o755)
    local = emu.free_port()
    settings = {"vllm_k8s_kubectl_binary": str(kubectl), "vllm_k8s_gate_timeout": 10, "vllm_k8s_gate_local_port": local}
    run = gate(k8s_emulator, tmp_path, **settings)
    assert run.rc != 0
    failures = "\n".join(run.failures())
    assert "/health kept answering HTTP 404" in failures and "label" not in failures, failures
    started = [
        i["stdout"]
        for r in run.results("Start each forward in the background")
        for i in r.get("results", [])
        if not i.get("skipped")
    ]
    stopped = [
        i["stdout"]
        for r in run.results("Stop the port forwards started here")
        for i in r.get("results", [])
        if not i.get("skipped")
    ]
    assert started == ["started"] and stopped == ["stopped"], (started, stopped)
    assert not (tmp_path / "port-forward" / "vllm-gate.pid").exists()
