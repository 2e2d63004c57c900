"""Bad variables make vllm_k8s fail before anything is applied, naming the variable.

Every case is one inventory host (``case-NNN``, ``ansible_connection: local``) whose host vars are one bad
setting on top of a valid configuration, and ONE ansible-playbook run (``--tags vllm_k8s_preflight``) plays
the real role against all of them; the tests then read each host's results. A bad host must fail in a
variable check (the argument spec, the one-pass plan of plugins/module_utils/k8s_plan.py or the helm binary
check), in a message that names the variable and says why, with changed=0 and no key in the output.

The cases aim at values of the right type that break the platform, in particular what the Kubernetes API
emulator accepts and a real API server refuses (names, label syntax, quantities, tolerations, strategies,
environment types): the emulator validates nothing, so preflight must. The valid controls pass every check
and render (the render tasks are tagged always).

A few cases (EMULATOR_CASES) also run the WHOLE role, every tag, against its own Kubernetes API emulator:
the play fails, nothing changes and the emulator holds no object. The valid baseline, on the same harness,
does create the objects, so the "nothing created" check can fail.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest
import yaml
from itest_support import (
    LOCAL_HOST,
    CaseRun,
    assert_fails_in_variable_checks,
    assert_one_run_for_every_case,
    assert_passes_variable_checks,
    case_hosts,
    case_overrides,
    run_role_cases,
    secrets_in,
)
from itest_support import VariableCase as Case

ROOT = Path(__file__).resolve().parents[3]
if str(ROOT / "tests" / "k8s") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests" / "k8s"))

import k8s_harness  # noqa: E402
import validate  # noqa: E402
from k8s_harness import Emulator  # noqa: E402

# Registers the fixture in this module (pytest finds fixtures by module attribute).
k8s_emulator = k8s_harness.k8s_emulator

ROLE = "llmops.platform.vllm_k8s"
KEY = "s3cret-k8s-test-key"
KEY_MARK = "s3cret"  # in every key, token and credential a case sets: none may reach the output
VALID = {"vllm_k8s_api_key": KEY, "vllm_k8s_wait": False}
DIGEST = "sha256:" + "0123456789abcdef" * 4
RESOURCES = {"requests": {"cpu": "8", "memory": "32Gi"}, "limits": {"cpu": "16", "memory": "64Gi"}}


def resources(**sections: Dict[str, Any]) -> Dict[str, Any]:
    return {"vllm_k8s_resources": {**RESOURCES, **sections}}


def neighbour(kind: str, name: str, variable: str) -> Dict[str, str]:
    """An object training_cluster owns, as it reports it (training_cluster_objects)."""
    return {"kind": kind, "name": name, "variable": variable, "namespace": "llm-training"}


CASES: Dict[str, Case] = {
    # --- kept from the one-run-per-case version of this file ------------------------------------------
    "mode not a choice": Case({"vllm_k8s_mode": "kustomize"}, "vllm_k8s_mode"),
    "namespace not a DNS label": Case({"vllm_k8s_namespace": "LLM_Training"}, "vllm_k8s_namespace"),
    "name too long": Case({"vllm_k8s_name": "v" * 60}, "vllm_k8s_name"),
    "negative replicas": Case({"vllm_k8s_replicas": -1}, "vllm_k8s_replicas"),
    "model load timeout too short": Case({"vllm_k8s_model_load_timeout": 5}, "vllm_k8s_model_load_timeout"),
    "startup period longer than the load timeout": Case(
        {"vllm_k8s_model_load_timeout": 60, "vllm_k8s_startup_probe_period": 120}, "vllm_k8s_startup_probe_period"
    ),
    "tensor parallel size zero": Case(
        {"vllm_k8s_server": {"tensor_parallel_size": 0}}, "vllm_k8s_server.tensor_parallel_size"
    ),
    "misspelled server key": Case({"vllm_k8s_server": {"max_model_length": 4096}}, "vllm_k8s_server.max_model_length"),
    "api key in extra_args": Case(
        {"vllm_k8s_server": {"extra_args": ["--api-key", "x"]}}, "vllm_k8s_server.extra_args"
    ),
    "loopback host": Case({"vllm_k8s_server": {"host": "127.0.0.1"}}, "vllm_k8s_server.host"),
    "declared LoRA adapter outside the model volume": Case(
        {"vllm_k8s_lora_adapters": [{"name": "sql", "path": "/srv/adapters/sql", "rank": 8}]},
        "vllm_k8s_lora_adapters[0].path",
        "model volume",
    ),
    "LoRA adapter rank above max_lora_rank": Case(
        {
            "vllm_k8s_lora_adapters": [{"name": "sql", "path": "/storage/adapters/sql", "rank": 64}],
            "vllm_k8s_server": {"max_lora_rank": 16},
        },
        "vllm_k8s_lora_adapters[0].rank",
        "above max_lora_rank",
    ),
    "api key in the plain environment": Case({"vllm_k8s_environment": {"VLLM_API_KEY": "x"}}, "vllm_k8s_environment"),
    "negative gpus": Case({"vllm_k8s_gpus": -1}, "vllm_k8s_gpus"),
    "root user": Case({"vllm_k8s_run_as_user": 0}, "vllm_k8s_run_as_user"),
    "image tag with a space": Case({"vllm_k8s_image_tag": "v0.32 latest"}, "vllm_k8s_image_tag"),
    "pull policy not a choice": Case({"vllm_k8s_image_pull_policy": "Sometimes"}, "vllm_k8s_image_pull_policy"),
    "shm size not a quantity": Case({"vllm_k8s_shm_size": "lots"}, "vllm_k8s_shm_size"),
    "tolerations not a list of mappings": Case({"vllm_k8s_tolerations": ["nvidia.com/gpu"]}, "vllm_k8s_tolerations"),
    "no key and no secret": Case({"vllm_k8s_api_key": "", "vllm_k8s_api_key_secret_name": ""}, "vllm_k8s_api_key"),
    "helm mode without helm": Case(
        {
            "vllm_k8s_mode": "helm",
            "vllm_k8s_helm_binary": "/nonexistent/helm",
            "vllm_k8s_pod_security_level": "baseline",
        },
        "vllm_k8s_helm_binary",
    ),
    # --- names a real API server refuses (the emulator takes any string) -------------------------------
    "name starting with a digit (the Service needs a DNS-1035 label)": Case(
        {"vllm_k8s_name": "8b-chat"}, "vllm_k8s_name", "DNS-1035"
    ),
    "namespace of the control plane": Case({"vllm_k8s_namespace": "kube-system"}, "vllm_k8s_namespace", "reserved"),
    "secret name with an empty DNS label": Case(
        {"vllm_k8s_api_key_secret_name": "vllm..key"}, "vllm_k8s_api_key_secret_name", "DNS-1123 subdomain"
    ),
    "secret key with a space": Case(
        {"vllm_k8s_api_key_secret_key": "api key"}, "vllm_k8s_api_key_secret_key", "Secret key"
    ),
    "runtime class with capitals": Case(
        {"vllm_k8s_runtime_class_name": "NVIDIA"}, "vllm_k8s_runtime_class_name", "DNS-1123 subdomain"
    ),
    # --- labels and selectors --------------------------------------------------------------------------
    "label value with a slash": Case(
        {"vllm_k8s_labels": {"team": "ml/platform"}}, "vllm_k8s_labels.team", "label value"
    ),
    "label value that is a boolean": Case({"vllm_k8s_labels": {"canary": True}}, "vllm_k8s_labels.canary", "strings"),
    "label key with two slashes": Case(
        {"vllm_k8s_labels": {"example.com/team/name": "ml"}}, "vllm_k8s_labels", "not a label key"
    ),
    "label that overrides the role's selector label": Case(
        {"vllm_k8s_labels": {"app.kubernetes.io/instance": "other"}}, "vllm_k8s_labels", "set by the role"
    ),
    "node selector value that is a number": Case(
        {"vllm_k8s_node_selector": {"nvidia.com/gpu.count": 1}}, "vllm_k8s_node_selector", "strings"
    ),
    "namespace selector that matches every namespace": Case(
        {"vllm_k8s_network_policy_namespace_labels": [{}]},
        "vllm_k8s_network_policy_namespace_labels[0]",
        "EVERY namespace",
    ),
    # --- quantities and resources ----------------------------------------------------------------------
    "memory in millibytes": Case(
        resources(requests={"cpu": "8", "memory": "32768m"}), "vllm_k8s_resources.requests.memory", "milli"
    ),
    "memory request above its limit": Case(
        resources(requests={"cpu": "8", "memory": "96Gi"}), "vllm_k8s_resources.requests.memory", "more than the limit"
    ),
    "lowercase binary suffix": Case(
        resources(limits={"cpu": "16", "memory": "64gi"}),
        "vllm_k8s_resources.limits.memory",
        "not a Kubernetes quantity",
    ),
    "GPU limit written into the resources": Case(
        resources(limits={"cpu": "16", "memory": "64Gi", "nvidia.com/gpu": "2"}), "vllm_k8s_resources", "vllm_k8s_gpus"
    ),
    "fractional extended resource": Case(
        resources(requests={"example.com/fpga": "0.5"}, limits={"example.com/fpga": "0.5"}),
        "vllm_k8s_resources",
        "whole number",
    ),
    "resource name without a domain": Case(
        resources(requests={"cpu": "8", "gpu": "1"}), "vllm_k8s_resources.requests.gpu", "not a container resource"
    ),
    "GPU resource without a domain": Case(
        {"vllm_k8s_gpu_resource": "gpu"}, "vllm_k8s_gpu_resource", "domain-qualified"
    ),
    "fewer GPUs than tensor parallel workers": Case(
        {"vllm_k8s_gpus": 1, "vllm_k8s_server": {"tensor_parallel_size": 2}}, "vllm_k8s_gpus", "one GPU per worker"
    ),
    "shm size in millibytes": Case({"vllm_k8s_shm_size": "16000m"}, "vllm_k8s_shm_size", "milli"),
    # --- scheduling and rollout rules of the API server ------------------------------------------------
    "toleration Exists with a value": Case(
        {"vllm_k8s_tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "value": "true"}]},
        "vllm_k8s_tolerations[0].value",
        "must be empty",
    ),
    "tolerationSeconds without NoExecute": Case(
        {"vllm_k8s_tolerations": [{"key": "x", "operator": "Exists", "effect": "NoSchedule", "tolerationSeconds": 60}]},
        "vllm_k8s_tolerations[0].tolerationSeconds",
        "NoExecute",
    ),
    "rolling update that can never progress": Case(
        {"vllm_k8s_strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 0}}},
        "vllm_k8s_strategy.rollingUpdate.maxUnavailable",
        "may not be 0",
    ),
    "Recreate strategy with rollingUpdate": Case(
        {"vllm_k8s_strategy": {"type": "Recreate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}},
        "vllm_k8s_strategy.rollingUpdate",
        "Recreate",
    ),
    "PodDisruptionBudget that blocks every drain": Case(
        {"vllm_k8s_pdb_max_unavailable": 0}, "vllm_k8s_pdb_max_unavailable", "block every node drain"
    ),
    "PodDisruptionBudget above 100%": Case(
        {"vllm_k8s_pdb_max_unavailable": "150%"}, "vllm_k8s_pdb_max_unavailable", "100%"
    ),
    "replicas as a string": Case({"vllm_k8s_replicas": "2"}, "vllm_k8s_replicas", "must be an integer"),
    # --- secrets in the plain environment, and values a real server refuses there ------------------------
    "Hugging Face token in the plain environment": Case(
        {"vllm_k8s_environment": {"HF_TOKEN": f"hf_{KEY_MARK}0123456789abcdefghij"}},
        "vllm_k8s_environment.HF_TOKEN",
        "put it in a Secret",
    ),
    "database URL with a password in the environment": Case(
        {"vllm_k8s_environment": {"RESULTS_DB": f"postgresql://app:{KEY_MARK}-pw@db.internal/vllm"}},
        "vllm_k8s_environment.RESULTS_DB",
        "credentials",
    ),
    "token-shaped value under an innocent name": Case(
        {"vllm_k8s_environment": {"EXTRA": f"hf_{KEY_MARK}ABCDEFGHIJKLMNOPQRSTUV"}},
        "vllm_k8s_environment.EXTRA",
        "token",
    ),
    "number in the environment": Case(
        {"vllm_k8s_environment": {"OMP_NUM_THREADS": 8}}, "vllm_k8s_environment.OMP_NUM_THREADS", "quote it"
    ),
    "environment name with a space": Case(
        {"vllm_k8s_environment": {"MY VAR": "1"}}, "vllm_k8s_environment", "not an environment variable name"
    ),
    "api key with spaces": Case(
        {"vllm_k8s_api_key": f"{KEY_MARK} key with spaces 0123456789"}, "vllm_k8s_api_key", "HTTP header"
    ),
    "chart repository URL with credentials": Case(
        {"vllm_k8s_helm_chart_repo_url": f"https://ci:{KEY_MARK}@charts.example.test/vllm"},
        "vllm_k8s_helm_chart_repo_url",
        "credentials",
    ),
    # --- the model volume --------------------------------------------------------------------------------
    "model outside the model volume": Case(
        {"vllm_k8s_model_path": "/models/merged-model"}, "vllm_k8s_model_path", "not inside the model volume"
    ),
    "model path that walks out with ..": Case(
        {"vllm_k8s_model_path": "/storage/../etc/merged-model"}, "vllm_k8s_model_path", "'..'"
    ),
    "Hugging Face id while the hub is offline": Case(
        {"vllm_k8s_model_path": "meta-llama/Llama-3.2-3B-Instruct"}, "vllm_k8s_model_path", "HF_HUB_OFFLINE"
    ),
    "LoRA adapter outside the model volume": Case(
        {"vllm_k8s_server": {"enable_lora": True, "lora_modules": {"sql": "/adapters/sql"}}},
        "vllm_k8s_server.lora_modules.sql",
        "not inside the model volume",
    ),
    "model volume over /usr": Case({"vllm_k8s_pvc_mount_path": "/usr"}, "vllm_k8s_pvc_mount_path", "system directory"),
    "model volume on the pod's home": Case(
        {"vllm_k8s_pvc_mount_path": "/home/vllm"}, "vllm_k8s_pvc_mount_path", "overlaps the pod's own mount"
    ),
    "helm mode with the volume where the chart mounts its own": Case(
        {
            "vllm_k8s_mode": "helm",
            "vllm_k8s_apply": False,
            "vllm_k8s_pvc_mount_path": "/data",
            "vllm_k8s_model_path": "/data/merged-model",
        },
        "vllm_k8s_pvc_mount_path",
        "/data",
    ),
    # --- images --------------------------------------------------------------------------------------
    "repository carrying a tag": Case(
        {"vllm_k8s_image_repository": "vllm/vllm-openai:v0.32.0"}, "vllm_k8s_image_repository", "carries a tag"
    ),
    "repository carrying a digest": Case(
        {"vllm_k8s_image_repository": f"vllm/vllm-openai@{DIGEST}"}, "vllm_k8s_image_repository", "image_digest"
    ),
    "repository with capitals": Case(
        {"vllm_k8s_image_repository": "Vllm/vllm-openai"}, "vllm_k8s_image_repository", "not an image repository"
    ),
    "digest too short": Case({"vllm_k8s_image_digest": "sha256:0123abcd"}, "vllm_k8s_image_digest", "64"),
    "latest without a digest": Case({"vllm_k8s_image_tag": "latest"}, "vllm_k8s_image_tag", "not a version"),
    # --- probes and timeouts ---------------------------------------------------------------------------
    "rollout wait shorter than the model load": Case(
        {"vllm_k8s_wait": True, "vllm_k8s_wait_timeout": 600}, "vllm_k8s_wait_timeout", "gives up"
    ),
    "liveness timeout longer than its period": Case(
        {"vllm_k8s_liveness_probe_timeout": 30}, "vllm_k8s_liveness_probe_timeout", "must not exceed"
    ),
    "completion liveness with a one-second timeout": Case(
        {"vllm_k8s_liveness_probe_timeout": 1}, "vllm_k8s_liveness_probe_timeout", "at least 2 s"
    ),
    "liveness interpreter with shell syntax": Case(
        {"vllm_k8s_liveness_python": "python3; rm -rf /"}, "vllm_k8s_liveness_python", "argv[0]"
    ),
    "liveness completion as a string": Case(
        {"vllm_k8s_liveness_completion": "maybe"}, "vllm_k8s_liveness_completion", "boolean"
    ),
    "model storage mounted over the probe script": Case(
        {"vllm_k8s_pvc_mount_path": "/etc/llmops", "vllm_k8s_model_path": "/etc/llmops/m"},
        "vllm_k8s_pvc_mount_path",
        "/etc/llmops",
    ),
    # --- stopping the pod: preStop drain, then vLLM's shutdown_timeout, within the grace period ----------
    "vLLM drain longer than the termination grace period": Case(
        {"vllm_k8s_server": {"shutdown_timeout": 120}, "vllm_k8s_termination_grace_seconds": 120},
        "vllm_k8s_termination_grace_seconds",
        "kills vLLM before it has drained",
    ),
    "grace period shorter than the preStop drain": Case(
        {"vllm_k8s_drain_seconds": 45, "vllm_k8s_termination_grace_seconds": 30},
        "vllm_k8s_termination_grace_seconds",
        "not longer than vllm_k8s_drain_seconds",
    ),
    "negative drain seconds": Case({"vllm_k8s_drain_seconds": -1}, "vllm_k8s_drain_seconds", "at least 0"),
    "drain seconds as a duration string": Case({"vllm_k8s_drain_seconds": "30s"}, "vllm_k8s_drain_seconds"),
    # --- Pod Security Admission ------------------------------------------------------------------------
    "unknown pod security level": Case({"vllm_k8s_pod_security_level": "strict"}, "vllm_k8s_pod_security_level"),
    "pod security version without the v": Case(
        {"vllm_k8s_pod_security_version": "1.33"}, "vllm_k8s_pod_security_version", "v1.33"
    ),
    "restricted namespace for the chart's unchecked pods": Case(
        {"vllm_k8s_mode": "helm", "vllm_k8s_apply": False}, "vllm_k8s_pod_security_level", "cannot check"
    ),
    "helm mode with a name too long for the chart's Service": Case(
        {"vllm_k8s_mode": "helm", "vllm_k8s_apply": False, "vllm_k8s_name": "v" * 48}, "vllm_k8s_name", "engine"
    ),
    # === a second review (issue 10 item 9): each of these was accepted before it ===========================
    # --- what the platform shares with the rest of the cluster ---------------------------------------------
    "the cluster's default namespace (the role labels it)": Case(
        {"vllm_k8s_namespace": "default"}, "vllm_k8s_namespace", "default namespace"
    ),
    "named default (the namespace's default ServiceAccount)": Case(
        {"vllm_k8s_name": "default"}, "vllm_k8s_name", "ServiceAccount"
    ),
    "toleration that tolerates every taint": Case(
        {"vllm_k8s_tolerations": [{"operator": "Exists"}]}, "vllm_k8s_tolerations[0].key", "every taint"
    ),
    "negative tolerationSeconds (evicted at once)": Case(
        {"vllm_k8s_tolerations": [{"key": "x", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": -5}]},
        "vllm_k8s_tolerations[0].tolerationSeconds",
        "negative",
    ),
    # --- secrets in the plain environment and in the container's args ---------------------------------------
    "an *_KEY in the plain environment": Case(
        {"vllm_k8s_environment": {"OPENAI_KEY": f"{KEY_MARK}0123456789abcdef"}},
        "vllm_k8s_environment.OPENAI_KEY",
        "put it in a Secret",
    ),
    "database URL with the password as a query parameter": Case(
        {"vllm_k8s_environment": {"RESULTS_DB": f"postgresql://db.internal/vllm?user=app&password={KEY_MARK}"}},
        "vllm_k8s_environment.RESULTS_DB",
        "password",
    ),
    "JDBC URL with credentials": Case(
        {"vllm_k8s_environment": {"RESULTS_JDBC": f"jdbc:postgresql://app:{KEY_MARK}@db.internal/vllm"}},
        "vllm_k8s_environment.RESULTS_JDBC",
        "credentials",
    ),
    "private key in the plain environment": Case(
        {
            "vllm_k8s_environment": {
                "SSH_IDENTITY": f"-----BEGIN OPENSSH PRIVATE KEY-----\n{KEY_MARK}\n-----END OPENSSH PRIVATE KEY-----"
            }
        },
        "vllm_k8s_environment.SSH_IDENTITY",
        "private key",
    ),
    "API key in a server argument's URL query": Case(
        {
            "vllm_k8s_server": {
                "extra_args": ["--otlp-traces-endpoint", f"https://otel.example.test/v1/traces?api_key={KEY_MARK}"]
            }
        },
        "vllm_k8s_server.extra_args[1]",
        "key or token parameter",
    ),
    # --- where vLLM writes: a read-only root file system and a read-only model volume ----------------------
    "vLLM cache on the read-only model volume": Case(
        {"vllm_k8s_environment": {"VLLM_CACHE_ROOT": "/storage/vllm-cache"}},
        "vllm_k8s_environment.VLLM_CACHE_ROOT",
        "read-only",
    ),
    "HOME on the read-only root file system": Case(
        {"vllm_k8s_environment": {"HOME": "/root"}}, "vllm_k8s_environment.HOME", "root file system"
    ),
    "Hugging Face cache at a relative path": Case(
        {"vllm_k8s_environment": {"HF_HOME": ".cache/huggingface"}}, "vllm_k8s_environment.HF_HOME", "absolute"
    ),
    "liveness probe variable set twice": Case(
        {"vllm_k8s_environment": {"WATCHDOG_URL": "http://127.0.0.1:9000"}},
        "vllm_k8s_environment.WATCHDOG_URL",
        "liveness probe",
    ),
    "model volume over the CA certificates": Case(
        {"vllm_k8s_pvc_mount_path": "/etc/ssl", "vllm_k8s_model_path": "/etc/ssl/merged-model"},
        "vllm_k8s_pvc_mount_path",
        "CA certificates",
    ),
    "render directory /etc (created with the role's mode)": Case(
        {"vllm_k8s_render_dir": "/etc"}, "vllm_k8s_render_dir", "system directory"
    ),
    # --- what a real API server or the Prometheus operator refuses -------------------------------------------
    "rolling update of 00% and 0 (never progresses)": Case(
        {"vllm_k8s_strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "00%", "maxUnavailable": 0}}},
        "vllm_k8s_strategy.rollingUpdate.maxUnavailable",
        "may not be 0",
    ),
    "PodDisruptionBudget of 00%": Case(
        {"vllm_k8s_pdb_max_unavailable": "00%"}, "vllm_k8s_pdb_max_unavailable", "block every node drain"
    ),
    "ServiceMonitor interval with units out of order": Case(
        {"vllm_k8s_service_monitor_interval": "30s1m"}, "vllm_k8s_service_monitor_interval", "Prometheus duration"
    ),
    # --- programs and images -------------------------------------------------------------------------------
    "command with its argument in one word": Case(
        {"vllm_k8s_command": ["vllm serve"]}, "vllm_k8s_command[0]", "whitespace"
    ),
    "moving image tag nightly": Case({"vllm_k8s_image_tag": "nightly"}, "vllm_k8s_image_tag", "moving tag"),
    # --- issue 10 item 4: vLLM's names against the objects training_cluster owns (no mirrored settings) -----
    "a training WebUI named like the vLLM Deployment": Case(
        {"vllm_k8s_neighbour_objects": [neighbour("Deployment", "vllm-inference", "training_cluster_webui_name")]},
        "vllm_k8s_name",
        "training_cluster_webui_name's Deployment",
    ),
    "a training Secret named like the vLLM key Secret": Case(
        {"vllm_k8s_neighbour_objects": [neighbour("Secret", "vllm-api-key", "training_cluster_hf_token_secret_name")]},
        "vllm_k8s_api_key_secret_name",
        "training_cluster_hf_token_secret_name's Secret",
    ),
    "a renamed vLLM named like the training ConfigMap": Case(
        {
            "vllm_k8s_name": "llama-factory",
            "vllm_k8s_neighbour_objects": [
                neighbour("ConfigMap", "llama-factory-model", "training_cluster_config_map_name")
            ],
        },
        "vllm_k8s_name",
        "model record",
    ),
    "a neighbour object without a name": Case(
        {"vllm_k8s_neighbour_objects": [{"kind": "Service"}]}, "vllm_k8s_neighbour_objects[0]", "kind and name"
    ),
    "the gate's forward on ui.yml's vLLM port": Case(
        {"vllm_k8s_gate_local_port": 8000}, "vllm_k8s_gate_local_port", "cannot bind"
    ),
    "the vLLM forward on every interface": Case(
        {"vllm_k8s_port_forward_address": "0.0.0.0"}, "vllm_k8s_port_forward_address", "loopback"
    ),
    "kubectl with flags in the program name": Case(
        {"vllm_k8s_kubectl_binary": "kubectl --context prod"}, "vllm_k8s_kubectl_binary", "whitespace"
    ),
    "a gate with no time to load a completion": Case({"vllm_k8s_gate_timeout": 3}, "vllm_k8s_gate_timeout", "10"),
    "a GPU sharing mode the ADR does not have": Case(
        {"vllm_k8s_gpu_sharing": {"mode": "vgpu"}}, "vllm_k8s_gpu_sharing.mode", "must be one of"
    ),
    "tensor parallel 2 on MIG partitions": Case(
        {"vllm_k8s_gpu_sharing": {"mode": "mig"}, "vllm_k8s_server": {"tensor_parallel_size": 2}},
        "vllm_k8s_gpus",
        "one MIG partition",
    ),
    "a MIG profile in capitals": Case(
        {"vllm_k8s_gpu_sharing": {"mode": "mig", "inference_profile": "1G.10GB"}},
        "vllm_k8s_gpu_sharing.inference_profile",
        "MIG profile",
    ),
    "GPU preemption in helm mode": Case(
        {
            "vllm_k8s_gpu_sharing": {"mode": "preemption"},
            "vllm_k8s_mode": "helm",
            "vllm_k8s_apply": False,
            "vllm_k8s_pod_security_level": "baseline",
        },
        "vllm_k8s_gpu_sharing.mode",
        "needs vllm_k8s_mode manifests",
    ),
}
OLD_CASES = 19
# The cases before the second review: it added at least 20 here (and 30 in test_training_cluster_preflight.py).
BEFORE_SECOND_REVIEW = 79

# Valid configurations: they pass every variable check and render.
VALID_CASES: Dict[str, Dict[str, Any]] = {
    "the defaults": {},
    "image pinned by digest": {"vllm_k8s_image_digest": DIGEST},
    "latest pinned by digest": {"vllm_k8s_image_tag": "latest", "vllm_k8s_image_digest": DIGEST},
    "image from a registry with a port": {"vllm_k8s_image_repository": "registry.internal:5000/ml/vllm-openai"},
    "one monitoring namespace and a percentage budget": {
        "vllm_k8s_network_policy_namespace_labels": [{"kubernetes.io/metadata.name": "monitoring"}],
        "vllm_k8s_pdb_max_unavailable": "50%",
    },
    "Recreate strategy": {"vllm_k8s_strategy": {"type": "Recreate"}},
    "NoExecute toleration with seconds": {
        "vllm_k8s_tolerations": [
            {
                "key": "node.kubernetes.io/unreachable",
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": 300,
            }
        ],
    },
    "environment that is not secret": {
        "vllm_k8s_environment": {"TOKENIZERS_PARALLELISM": "false", "VLLM_LOGGING_LEVEL": "INFO"},
    },
    "caches on the pod's writable mounts, a key file by path": {
        "vllm_k8s_environment": {
            "VLLM_CACHE_ROOT": "/tmp/vllm-cache",
            "HF_HOME": "/home/vllm/hf",
            "SSL_KEY_FILE": "/etc/llmops/tls.key",
        },
    },
    "a taint tolerated by key, a ServiceMonitor interval in order": {
        "vllm_k8s_tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
        "vllm_k8s_service_monitor_interval": "1m30s",
    },
    "Hugging Face id with the hub online": {
        "vllm_k8s_model_path": "Qwen/Qwen2.5-0.5B-Instruct",
        "vllm_k8s_environment": {"HF_HUB_OFFLINE": "0"},
    },
    "two GPUs for tensor parallel 2": {"vllm_k8s_gpus": 2, "vllm_k8s_server": {"tensor_parallel_size": 2}},
    "quantities in every notation": {
        "vllm_k8s_resources": {
            "requests": {"cpu": "500m", "memory": "1.5G", "example.com/fpga": 1},
            "limits": {"cpu": 2, "memory": "2e9", "example.com/fpga": 1},
        },
        "vllm_k8s_shm_size": "8Gi",
    },
    "helm mode rendered only": {
        "vllm_k8s_mode": "helm",
        "vllm_k8s_apply": False,
        "vllm_k8s_pod_security_level": "baseline",
    },
    "no preStop drain and an explicit grace period": {
        "vllm_k8s_drain_seconds": 0,
        "vllm_k8s_termination_grace_seconds": 5,
    },
    "baseline pinned to a release": {
        "vllm_k8s_pod_security_level": "baseline",
        "vllm_k8s_pod_security_version": "v1.31",
    },
    "GPU sharing by time-slicing": {"vllm_k8s_gpu_sharing": {"mode": "time_slicing", "replicas": 2}},
    "GPU sharing by preemption, inference wins": {
        "vllm_k8s_gpu_sharing": {"mode": "preemption", "winner": "inference"}
    },
}

# Tasks that check variables: a bad case must fail in one of these.
VARIABLE_CHECKS = (
    "[Validating arguments against arg spec",
    "[Check every variable",
    "[Require the helm binary",
    "[Require manifests mode for GPU preemption",
)
PLAN_TASK = "Check every variable"  # its failure message starts with the variable
HOSTS = case_hosts([*CASES, *VALID_CASES])


def valid_key(host: str) -> str:
    return f"{KEY_MARK}-valid-key-{host}"


@pytest.fixture(scope="module")
def preflight(tmp_path_factory: pytest.TempPathFactory) -> CaseRun:
    """One ansible-playbook run of the role's preflight against every case host."""
    work = tmp_path_factory.mktemp("vllm-k8s-preflight")
    baseline = {
        **LOCAL_HOST,
        "vllm_k8s_wait": False,
        # Nothing here talks to a cluster: only the preflight (and the render, tagged always) runs.
        "vllm_k8s_kubeconfig": str(work / "no-such-kubeconfig"),
    }
    overrides = case_overrides(HOSTS, CASES, VALID_CASES)
    hosts = {host: {"vllm_k8s_api_key": valid_key(host), **overrides[host]} for host in overrides}
    return run_role_cases(ROLE, "vllm_k8s_preflight", baseline, hosts, work)


@pytest.mark.parametrize("case", list(CASES))
def test_bad_variable_fails_in_preflight_naming_it(preflight: CaseRun, case: str) -> None:
    host = HOSTS[case]
    secrets = [valid_key(host), *secrets_in(CASES[case].overrides, KEY_MARK)]
    assert_fails_in_variable_checks(
        preflight, case, host, CASES[case], variable_checks=VARIABLE_CHECKS, plan_task=PLAN_TASK, secrets=secrets
    )


@pytest.mark.parametrize("case", list(VALID_CASES))
def test_valid_variables_pass_the_variable_checks(preflight: CaseRun, case: str) -> None:
    host = HOSTS[case]
    assert_passes_variable_checks(preflight, case, host, secrets=[valid_key(host)])


def test_one_run_for_every_case(preflight: CaseRun) -> None:
    """Every case host is in the one run's stats, no key reached the output, and the run stays quick (CI time)."""
    assert_one_run_for_every_case(preflight, HOSTS, mark=KEY_MARK, what="a key, token or credential")
    assert len(CASES) - OLD_CASES >= 30
    assert len(CASES) - BEFORE_SECOND_REVIEW >= 20


# ---- the whole role against the API emulator -----------------------------------------------------------
EMULATOR_CASES = (
    "mode not a choice",  # the argument spec
    "namespace selector that matches every namespace",  # the plan
    "Hugging Face token in the plain environment",  # the plan, with a secret that must not leak
    "memory request above its limit",  # what only a real API server would refuse
    "helm mode without helm",  # the controller check
)

# Everything the role can write, by API path.
WRITTEN = (
    "/api/v1/namespaces",
    "/api/v1/secrets",
    "/apis/apps/v1/deployments",
    "/api/v1/services",
    "/apis/networking.k8s.io/v1/networkpolicies",
    "/apis/policy/v1/poddisruptionbudgets",
)


def run_role(emulator: Emulator, tmp_path: Path, overrides: dict, args: Optional[List[str]] = None):
    return k8s_harness.run_role(emulator, tmp_path, ROLE, {**VALID, **overrides}, args=args)


@pytest.mark.parametrize("case", EMULATOR_CASES)
def test_bad_variable_fails_before_anything_is_applied(k8s_emulator: Emulator, tmp_path: Path, case: str) -> None:
    overrides, variable = CASES[case].overrides, CASES[case].variable
    run = run_role(k8s_emulator, tmp_path, overrides)
    secrets = [KEY, *secrets_in(overrides, KEY_MARK)]
    k8s_harness.assert_failed_before_apply(run, k8s_emulator, WRITTEN, case=case, variable=variable, secrets=secrets)


def test_valid_variables_apply_the_objects(k8s_emulator: Emulator, tmp_path: Path) -> None:
    run = run_role(k8s_emulator, tmp_path, {})
    expected = ["/apis/apps/v1/deployments/vllm-inference", "/api/v1/secrets/vllm-api-key"]
    k8s_harness.assert_applied(run, k8s_emulator, WRITTEN, expected, secrets=[KEY])


def test_first_check_mode_run_predicts_without_writing(k8s_emulator: Emulator, tmp_path: Path) -> None:
    """On an empty cluster a dry run cannot create objects in the not-yet-existing namespace; the role
    predicts the creations instead of failing, and writes nothing."""
    run = run_role(k8s_emulator, tmp_path, {}, args=["--check"])
    k8s_harness.assert_predicted_without_writing(run, k8s_emulator, WRITTEN, secrets=[KEY])


def test_a_digest_pins_the_container_and_the_helm_values(tmp_path: Path) -> None:
    """vllm_k8s_image_digest: the Deployment runs repository:tag@digest (valid for a strict validator),
    the Helm values carry tag@digest (the chart writes repository:tag)."""
    varsfile = tmp_path / "vars.json"
    varsfile.write_text(json.dumps({"vllm_k8s_api_key": KEY, "vllm_k8s_image_digest": DIGEST}))
    out = validate.render_role("vllm_k8s", [f"@{varsfile}"], tmp_path)
    docs = {p.name: yaml.safe_load(p.read_text()) for p in sorted(out.glob("*.yaml"))}
    deployment = next(d for n, d in docs.items() if d.get("kind") == "Deployment")
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == f"vllm/vllm-openai:v0.32.0@{DIGEST}", image
    assert validate.validate_manifest(deployment) == [], "the pinned Deployment is not valid"
    spec = docs["helm-values.yaml"]["servingEngineSpec"]["modelSpec"][0]
    assert f"{spec['repository']}:{spec['tag']}" == image
