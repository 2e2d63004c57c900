"""training_cluster's preflight, and the role against its own Kubernetes API emulator.

1. Bad variables fail in preflight, naming the variable. Every case is one inventory host (``case-NNN``,
   ``ansible_connection: local``) whose host vars are one bad setting on top of a valid configuration,
   and ONE ansible-playbook run (``--tags training_cluster_preflight``) plays the real role against all
   of them. A bad host must fail in a variable check (the argument spec or the one-pass plans of
   plugins/module_utils/k8s_plan.py), in a message that names the variable and says why, with changed=0
   and no token or password in the output. The cases aim at values of the right type that break the
   platform, in particular what the API emulator accepts and a real API server refuses (names, labels,
   quantities, tolerations, environment types). The valid controls pass every check and render.
2. A few of those cases (EMULATOR_CASES) run the WHOLE role against the emulator: the play fails, nothing
   changes and the emulator holds no object. The valid baseline does create the objects, so the
   "nothing created" check can fail.
3. The Job paths of tasks_from train: the play creates the Job and polls it; the test, acting as the
   Job controller, writes Complete or Failed through the API. Complete passes; Failed fails at once
   with the reason and the pod's last log lines. A re-run replaces the previous Job.

The emulator has no pod log subresource; for the Failed path this module runs it with a small
extension that serves a Pod's log from the annotation llmops.test/log (the only stand-in here).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import pytest
from itest_support import (
    LOCAL_HOST,
    CaseRun,
    ansible_env,
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
K8S = ROOT / "tests" / "k8s"
if str(K8S) not in sys.path:
    sys.path.insert(0, str(K8S))

import emulator as emu  # noqa: E402
import k8s_harness  # noqa: E402
from itest_support import report_failures  # noqa: E402
from k8s_harness import Emulator  # noqa: E402

# Registers the fixture in this module (pytest finds fixtures by module attribute).
k8s_emulator = k8s_harness.k8s_emulator

ROLE = "llmops.platform.training_cluster"
HF = "hf_s3cret_preflight_token"
KEY_MARK = "s3cret"  # in every token, password and credential a case sets: none may reach the output
VALID = {
    "training_cluster_image": "registry.example.test/llm/llama-factory-train:0.9.5",
    "training_cluster_hf_token": HF,
}
DIGEST = "sha256:" + "0123456789abcdef" * 4
STATIC_NFS = {
    "training_cluster_storage_mode": "static_nfs",
    "training_cluster_nfs_server": "nfs1",
    "training_cluster_nfs_path": "/export/llm",
}

CASES: Dict[str, Case] = {
    # --- kept from the one-run-per-case version of this file ------------------------------------------
    "no image": Case({"training_cluster_image": ""}, "training_cluster_image"),
    "namespace not a DNS label": Case({"training_cluster_namespace": "LLM_Training"}, "training_cluster_namespace"),
    "storage mode not a choice": Case({"training_cluster_storage_mode": "hostpath"}, "training_cluster_storage_mode"),
    "static nfs without a server": Case({"training_cluster_storage_mode": "static_nfs"}, "training_cluster_nfs_server"),
    "static nfs with a relative path": Case(
        {**STATIC_NFS, "training_cluster_nfs_path": "x"}, "training_cluster_nfs_path"
    ),
    "storage size not a quantity": Case({"training_cluster_storage_size": "lots"}, "training_cluster_storage_size"),
    "root user": Case({"training_cluster_run_as_user": 0}, "training_cluster_run_as_user"),
    "token in the plain environment": Case(
        {"training_cluster_environment": {"HF_TOKEN": "x"}}, "training_cluster_environment"
    ),
    "fp16 on the cpu": Case(
        {"training_cluster_use_cpu": True, "training_cluster_precision": "fp16"}, "training_cluster_use_cpu"
    ),
    "learning rate above one": Case({"training_cluster_learning_rate": 2.0}, "training_cluster_learning_rate"),
    "no dataset": Case({"training_cluster_dataset": []}, "training_cluster_dataset"),
    "database backend without a uri": Case(
        {"training_cluster_mlflow_backend": "database"}, "training_cluster_mlflow_database_uri"
    ),
    "tolerations not a list of mappings": Case(
        {"training_cluster_tolerations": ["nvidia.com/gpu"]}, "training_cluster_tolerations"
    ),
    "negative gpus": Case({"training_cluster_train_gpus": -1}, "training_cluster_train_gpus"),
    "merge over the adapter": Case(
        {"training_cluster_merged_model_dir": "/storage/output/lora-adapter"}, "training_cluster_merged_model_dir"
    ),
    "same name for both jobs": Case(
        {"training_cluster_merge_job_name": "llama-factory-train"}, "training_cluster_merge_job_name"
    ),
    "resource quantity malformed": Case(
        {"training_cluster_train_resources": {"requests": {"cpu": "eight"}}}, "training_cluster_train_resources"
    ),
    # --- the served model, the training output and the shared volume ------------------------------------
    "training output that contains the served model": Case(
        {"training_cluster_adapter_dir": "/storage/models"},
        "training_cluster_merged_model_dir",
        "is inside the training output",
    ),
    "served model directory that contains the training output": Case(
        {"training_cluster_merged_model_dir": "/storage/output"},
        "training_cluster_merged_model_dir",
        "contains the training output",
    ),
    "train_extra output_dir the merge does not read": Case(
        {"training_cluster_train_extra": {"output_dir": "/storage/output/other"}},
        "training_cluster_train_extra.output_dir",
        "the merge reads it from",
    ),
    "merge_extra export_dir over the training output": Case(
        {"training_cluster_merge_extra": {"export_dir": "/storage/output/lora-adapter/merged"}},
        "training_cluster_merge_extra.export_dir",
        "is inside the training output",
    ),
    "training output that holds the datasets": Case(
        {"training_cluster_dataset_dir": "/storage/output/lora-adapter/data"},
        "training_cluster_adapter_dir",
        "datasets",
    ),
    "merge into the base model's directory": Case(
        {"training_cluster_base_model": "/storage/models/merged-model"},
        "training_cluster_merged_model_dir",
        "base model",
    ),
    "adapter outside the shared volume": Case(
        {"training_cluster_adapter_dir": "/output/lora-adapter"}, "training_cluster_adapter_dir", "shared volume"
    ),
    "served model outside the shared volume": Case(
        {"training_cluster_merged_model_dir": "/models/merged-model"},
        "training_cluster_merged_model_dir",
        "shared volume",
    ),
    "configs mounted inside the shared volume": Case(
        {"training_cluster_config_mount_path": "/storage/config"}, "training_cluster_config_mount_path", "overlaps"
    ),
    "configs mounted under the pod's /tmp": Case(
        {"training_cluster_config_mount_path": "/tmp/config"}, "training_cluster_config_mount_path", "own mount"
    ),
    "shared volume on the pod's home": Case(
        {"training_cluster_storage_mount_path": "/home/llama"}, "training_cluster_storage_mount_path", "own mount"
    ),
    "MLflow data inside the served model": Case(
        {"training_cluster_mlflow_storage_path": "/storage/models"}, "training_cluster_mlflow_storage_path", "overlaps"
    ),
    # --- values a shell script or a config file carries unquoted ----------------------------------------
    "MLflow path with a space (reaches sh -c)": Case(
        {"training_cluster_mlflow_storage_path": "/storage/ml flow"}, "training_cluster_mlflow_storage_path", "unquoted"
    ),
    "MLflow path with a command substitution": Case(
        {"training_cluster_mlflow_storage_path": "/storage/mlflow$(id)"},
        "training_cluster_mlflow_storage_path",
        "unquoted",
    ),
    "train_extra key that is YAML": Case(
        {"training_cluster_train_extra": {"report_to: none\nlr": 1}}, "training_cluster_train_extra", "bare YAML key"
    ),
    # --- secrets ------------------------------------------------------------------------------------------
    "tracking URI with credentials": Case(
        {"training_cluster_mlflow_tracking_uri": f"https://trainer:{KEY_MARK}-pw@mlflow.example.test"},
        "training_cluster_mlflow_tracking_uri",
        "credentials",
    ),
    "database URL in the plain environment": Case(
        {"training_cluster_environment": {"RESULTS_DB": f"postgresql://mlflow:{KEY_MARK}@db.internal/runs"}},
        "training_cluster_environment.RESULTS_DB",
        "credentials",
    ),
    "W&B key in the plain environment": Case(
        {"training_cluster_environment": {"WANDB_API_KEY": f"{KEY_MARK}0123456789"}},
        "training_cluster_environment.WANDB_API_KEY",
        "put it in a Secret",
    ),
    "token with a space": Case(
        {"training_cluster_hf_token": f"hf_{KEY_MARK} token"}, "training_cluster_hf_token", "HTTP"
    ),
    # --- port forwards -------------------------------------------------------------------------------
    "port-forward on every interface": Case(
        {"training_cluster_port_forward_address": "0.0.0.0"}, "training_cluster_port_forward_address", "loopback"
    ),
    "port-forward on a LAN address": Case(
        {"training_cluster_port_forward_address": "192.168.1.10"}, "training_cluster_port_forward_address", "network"
    ),
    "port-forward on the IPv6 loopback (unbracketed in the forward's URL)": Case(
        {"training_cluster_port_forward_address": "::1"}, "training_cluster_port_forward_address", "IPv6"
    ),
    "two forwards on one local port": Case(
        {"training_cluster_port_forward_mlflow_port": 7860}, "training_cluster_port_forward_mlflow_port", "cannot bind"
    ),
    # --- names a real API server refuses, and names that clash ---------------------------------------
    "WebUI name starting with a digit (Service: DNS-1035)": Case(
        {"training_cluster_webui_name": "7860-webui"}, "training_cluster_webui_name", "DNS-1035"
    ),
    "namespace of the control plane": Case(
        {"training_cluster_namespace": "kube-public"}, "training_cluster_namespace", "reserved"
    ),
    "PVC name with an empty DNS label": Case(
        {"training_cluster_pvc_name": "llama..storage"}, "training_cluster_pvc_name", "DNS-1123 subdomain"
    ),
    "pull secret with a space": Case(
        {"training_cluster_image_pull_secrets": ["reg cred"]}, "training_cluster_image_pull_secrets[0]", "subdomain"
    ),
    "merge Job named like the training Job": Case(
        {"training_cluster_merge_job_name": "llama-factory-train"}, "training_cluster_merge_job_name", "deletes"
    ),
    "label key with a space": Case(
        {"training_cluster_labels": {"cost center": "ml"}}, "training_cluster_labels", "label key"
    ),
    "node selector value with a space": Case(
        {"training_cluster_node_selector": {"pool": "gpu nodes"}}, "training_cluster_node_selector.pool", "label value"
    ),
    # --- quantities, tolerations, images, timeouts ---------------------------------------------------
    "CPU request above its limit": Case(
        {"training_cluster_merge_resources": {"requests": {"cpu": "8"}, "limits": {"cpu": "4"}}},
        "training_cluster_merge_resources.requests.cpu",
        "more than the limit",
    ),
    "WebUI memory in millibytes": Case(
        {"training_cluster_webui_resources": {"requests": {"memory": "512m"}}},
        "training_cluster_webui_resources.requests.memory",
        "milli",
    ),
    "storage size in millibytes": Case(
        {"training_cluster_storage_size": "500m"}, "training_cluster_storage_size", "milli"
    ),
    "GPU on the MLflow server": Case(
        {"training_cluster_mlflow_resources": {"limits": {"nvidia.com/gpu": "1"}}},
        "training_cluster_mlflow_resources",
        "no GPU",
    ),
    "toleration with no key and Equal": Case(
        {"training_cluster_tolerations": [{"operator": "Equal", "value": "x", "effect": "NoSchedule"}]},
        "training_cluster_tolerations[0].operator",
        "Exists",
    ),
    "NFS mount option with a space": Case(
        {**STATIC_NFS, "training_cluster_nfs_mount_options": ["nfsvers=4.1 hard"]},
        "training_cluster_nfs_mount_options[0]",
        "without spaces",
    ),
    "image without a tag": Case(
        {"training_cluster_image": "registry.example.test/llm/llama-factory-train"},
        "training_cluster_image",
        "not pinned",
    ),
    "image with a short digest": Case(
        {"training_cluster_image": "registry.example.test/llm/train@sha256:0123abcd"}, "training_cluster_image", "64"
    ),
    "image path with capitals": Case(
        {"training_cluster_image": "registry.example.test/LLM/train:0.9.5"}, "training_cluster_image", "lowercase"
    ),
    "MLflow image latest": Case(
        {"training_cluster_mlflow_image": "ghcr.io/mlflow/mlflow:latest"}, "training_cluster_mlflow_image", "not pinned"
    ),
    "poll interval longer than the merge timeout": Case(
        {"training_cluster_merge_timeout": 60, "training_cluster_job_poll_interval": 120},
        "training_cluster_job_poll_interval",
        "training_cluster_merge_timeout",
    ),
    # --- the namespace lockdown: Pod Security Admission, ServiceAccounts, NetworkPolicies ----------------
    "unknown pod security level": Case(
        {"training_cluster_pod_security_level": "strict"}, "training_cluster_pod_security_level"
    ),
    "pod security version that is no Kubernetes release": Case(
        {"training_cluster_pod_security_version": "1.33"}, "training_cluster_pod_security_version", "v1.33"
    ),
    "MLflow open to every namespace": Case(
        {"training_cluster_mlflow_allowed_sources": [{"namespaceSelector": {}}]},
        "training_cluster_mlflow_allowed_sources[0].namespaceSelector",
        "EVERY namespace",
    ),
    "WebUI open to every address": Case(
        {"training_cluster_webui_allowed_sources": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]},
        "training_cluster_webui_allowed_sources[0].ipBlock.cidr",
        "every address",
    ),
    "ipBlock and selector in one peer": Case(
        {"training_cluster_webui_allowed_sources": [{"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}]},
        "training_cluster_webui_allowed_sources[0]",
        "API server refuses",
    ),
    "ipBlock except outside its cidr": Case(
        {"training_cluster_webui_allowed_sources": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.0.0.0/8"]}}]},
        "training_cluster_webui_allowed_sources[0].ipBlock.except[0]",
        "strictly inside",
    ),
    "WebUI named like the training Job (one ServiceAccount for two workloads)": Case(
        {"training_cluster_webui_name": "llama-factory-train"}, "training_cluster_train_job_name", "one ServiceAccount"
    ),
    # === a second review (issue 10 item 9): each of these was accepted before it ===========================
    # --- the training output, the served model, the datasets and the model the configs read ----------------
    "training output inside the datasets directory": Case(
        {"training_cluster_adapter_dir": "/storage/data/lora-adapter"},
        "training_cluster_adapter_dir",
        "inside the datasets directory",
    ),
    "served model inside the datasets directory": Case(
        {"training_cluster_merged_model_dir": "/storage/data/merged-model"},
        "training_cluster_merged_model_dir",
        "inside the datasets directory",
    ),
    "train_extra dataset_dir in the served model's directory": Case(
        {"training_cluster_train_extra": {"dataset_dir": "/storage/models/merged-model"}},
        "training_cluster_train_extra.dataset_dir",
        "holds the datasets",
    ),
    "merge_extra reading its model from the served model's directory": Case(
        {"training_cluster_merge_extra": {"model_name_or_path": "/storage/models/merged-model"}},
        "training_cluster_merge_extra.model_name_or_path",
        "overwrites",
    ),
    "train_extra training another model than the merge applies the adapter to": Case(
        {"training_cluster_train_extra": {"model_name_or_path": "/storage/models/llama-3.2-3b"}},
        "training_cluster_train_extra.model_name_or_path",
        "fits only the model",
    ),
    # --- what the platform shares with the rest of the cluster ---------------------------------------------
    "the cluster's default namespace (labels and a default deny for everyone)": Case(
        {"training_cluster_namespace": "default"}, "training_cluster_namespace", "default namespace"
    ),
    "MLflow named default (the namespace's default ServiceAccount)": Case(
        {"training_cluster_mlflow_name": "default"}, "training_cluster_mlflow_name", "ServiceAccount"
    ),
    "training Job named default (the namespace's default ServiceAccount)": Case(
        {"training_cluster_train_job_name": "default"}, "training_cluster_train_job_name", "ServiceAccount"
    ),
    "pull secret named like the token Secret the role writes": Case(
        {"training_cluster_image_pull_secrets": ["hf-token"]},
        "training_cluster_image_pull_secrets[0]",
        "dockerconfigjson",
    ),
    "toleration of every NoSchedule taint": Case(
        {"training_cluster_tolerations": [{"operator": "Exists", "effect": "NoSchedule"}]},
        "training_cluster_tolerations[0].key",
        "every NoSchedule taint",
    ),
    # --- who may connect -------------------------------------------------------------------------------
    "MLflow open to every pod of the namespace (empty podSelector)": Case(
        {"training_cluster_mlflow_allowed_sources": [{"podSelector": {}}]},
        "training_cluster_mlflow_allowed_sources[0].podSelector",
        "EVERY pod",
    ),
    "WebUI open to its own namespace without a podSelector": Case(
        {
            "training_cluster_webui_allowed_sources": [
                {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "llm-training"}}}
            ]
        },
        "training_cluster_webui_allowed_sources[0].namespaceSelector",
        "EVERY pod",
    ),
    "WebUI open to half the IPv4 internet": Case(
        {"training_cluster_webui_allowed_sources": [{"ipBlock": {"cidr": "0.0.0.0/1"}}]},
        "training_cluster_webui_allowed_sources[0].ipBlock.cidr",
        "most of the internet",
    ),
    "MLflow open to all global IPv6 addresses": Case(
        {"training_cluster_mlflow_allowed_sources": [{"ipBlock": {"cidr": "2000::/3"}}]},
        "training_cluster_mlflow_allowed_sources[0].ipBlock.cidr",
        "most of the internet",
    ),
    # --- secrets in the plain environment, the configs and the tracking URI --------------------------------
    "database password in the plain environment (*_PASS)": Case(
        {"training_cluster_environment": {"DB_PASS": f"{KEY_MARK}-pw"}},
        "training_cluster_environment.DB_PASS",
        "put it in a Secret",
    ),
    "storage connection string with its account key": Case(
        {
            "training_cluster_environment": {
                "AZURE_STORAGE_CONNECTION_STRING": f"DefaultEndpointsProtocol=https;AccountName=a;AccountKey={KEY_MARK}"
            }
        },
        "training_cluster_environment.AZURE_STORAGE_CONNECTION_STRING",
        "key or token parameter",
    ),
    "Authorization header in the plain environment": Case(
        {"training_cluster_environment": {"EXTRA_HEADERS": f"Authorization: Bearer {KEY_MARK}0123456789"}},
        "training_cluster_environment.EXTRA_HEADERS",
        "Authorization header",
    ),
    "GitLab token under an innocent name": Case(
        {"training_cluster_environment": {"GIT_REMOTE": f"glpat-{KEY_MARK}ABCDEFGHIJKLMNOP"}},
        "training_cluster_environment.GIT_REMOTE",
        "access token",
    ),
    "Hugging Face token in train_extra (the ConfigMap)": Case(
        {"training_cluster_train_extra": {"hf_hub_token": f"hf_{KEY_MARK}0123456789abcdefghij"}},
        "training_cluster_train_extra.hf_hub_token",
        "ConfigMap",
    ),
    "hub token in merge_extra (the ConfigMap)": Case(
        {"training_cluster_merge_extra": {"hub_token": f"{KEY_MARK}-hub"}},
        "training_cluster_merge_extra.hub_token",
        "ConfigMap",
    ),
    "tracking URI with an access token in its query": Case(
        {"training_cluster_mlflow_tracking_uri": f"https://mlflow.example.test/?access_token={KEY_MARK}"},
        "training_cluster_mlflow_tracking_uri",
        "token parameter",
    ),
    "WebUI port overridden in the environment (set twice)": Case(
        {"training_cluster_environment": {"GRADIO_SERVER_PORT": "8080"}},
        "training_cluster_environment.GRADIO_SERVER_PORT",
        "WebUI",
    ),
    # --- mounts, the NFS volume, directories and programs on the controller --------------------------------
    "configs mounted over /etc/hosts": Case(
        {"training_cluster_config_mount_path": "/etc/hosts"}, "training_cluster_config_mount_path", "kubelet"
    ),
    "read-only NFS mount of the shared volume": Case(
        {**STATIC_NFS, "training_cluster_nfs_mount_options": ["nfsvers=4.1", "ro"]},
        "training_cluster_nfs_mount_options[1]",
        "read-only",
    ),
    "NFS server on the loopback (each node itself)": Case(
        {**STATIC_NFS, "training_cluster_nfs_server": "127.0.0.1"}, "training_cluster_nfs_server", "node itself"
    ),
    "static NFS volume with reclaim policy Delete": Case(
        {**STATIC_NFS, "training_cluster_pv_reclaim_policy": "Delete"}, "training_cluster_pv_reclaim_policy", "Retain"
    ),
    "render directory / (created with the role's mode)": Case(
        {"training_cluster_render_dir": "/"}, "training_cluster_render_dir", "system directory"
    ),
    "port-forward state directory /tmp (made 0700)": Case(
        {"training_cluster_port_forward_state_dir": "/tmp"}, "training_cluster_port_forward_state_dir", "system"
    ),
    "kubectl with flags in the program name": Case(
        {"training_cluster_kubectl_binary": "kubectl --context prod"}, "training_cluster_kubectl_binary", "whitespace"
    ),
    "MLflow image on the moving tag main": Case(
        {"training_cluster_mlflow_image": "ghcr.io/mlflow/mlflow:main"}, "training_cluster_mlflow_image", "moving tag"
    ),
    # --- following the Jobs ----------------------------------------------------------------------------
    "Job TTL 0 (the Job is gone before the wait reads it)": Case(
        {"training_cluster_job_ttl_seconds": 0}, "training_cluster_job_ttl_seconds", "TTL controller"
    ),
    "pending timeout 0 (every pod starts Pending)": Case(
        {"training_cluster_job_pending_timeout": 0}, "training_cluster_job_pending_timeout", "Pending"
    ),
    # --- versioned merges (files/model-version.py) --------------------------------------------------------
    "model versions off the shared volume": Case(
        {"training_cluster_model_versions_dir": "/models/versions"},
        "training_cluster_model_versions_dir",
        "shared volume",
    ),
    "model versions inside the link path": Case(
        {"training_cluster_model_versions_dir": "/storage/models/merged-model/versions"},
        "training_cluster_model_versions_dir",
        "link",
    ),
    "model versions holding the datasets (pruning deletes them)": Case(
        {"training_cluster_model_versions_dir": "/storage"}, "training_cluster_model_versions_dir", "shared volume"
    ),
    "model versions inside the training output": Case(
        {"training_cluster_model_versions_dir": "/storage/output/lora-adapter/versions"},
        "training_cluster_model_versions_dir",
        "training output",
    ),
    "model version with a path separator": Case(
        {"training_cluster_model_version": "../served"}, "training_cluster_model_version", "not a version name"
    ),
    "model version with a trailing newline": Case(
        {"training_cluster_model_version": "v1\n"}, "training_cluster_model_version", "control characters"
    ),
    "model version starting with a dash (an option to the Job's command)": Case(
        {"training_cluster_model_version": "--keep=0"}, "training_cluster_model_version", "not a version name"
    ),
    "negative keep count": Case({"training_cluster_model_keep": -1}, "training_cluster_model_keep", "at least 0"),
    "protected version with a slash": Case(
        {"training_cluster_model_protect": ["v1/.."]}, "training_cluster_model_protect[0]", "not a version name"
    ),
    "merge export_dir set by hand (the versioned merge sets it)": Case(
        {"training_cluster_merge_extra": {"export_dir": "/storage/models/other"}},
        "training_cluster_merge_extra.export_dir",
        "versioned merge",
    ),
    "a GPU sharing mode the ADR does not have": Case(
        {"training_cluster_gpu_sharing": {"mode": "mps"}}, "training_cluster_gpu_sharing.mode", "must be one of"
    ),
    "two GPUs for a training pod on MIG partitions": Case(
        {"training_cluster_gpu_sharing": {"mode": "mig"}, "training_cluster_train_gpus": 2},
        "training_cluster_train_gpus",
        "one MIG partition",
    ),
    "one pool for training and inference": Case(
        {"training_cluster_gpu_sharing": {"mode": "affinity", "inference_pool": "training"}},
        "training_cluster_gpu_sharing.inference_pool",
        "must differ from training_pool",
    ),
    "a time-slicing replica count of one": Case(
        {"training_cluster_gpu_sharing": {"mode": "time_slicing", "replicas": 1}},
        "training_cluster_gpu_sharing.replicas",
        "at least 2",
    ),
}
OLD_CASES = 17
# The cases before the second review: it added at least 30 here (and 20 in test_vllm_k8s_preflight.py). 70 then;
# 5 of them went with the mirrored training_cluster_vllm_* and gate settings (vLLM's names are checked by vllm_k8s
# against training_cluster_objects now: test_vllm_k8s_preflight.py).
BEFORE_SECOND_REVIEW = 65

# Valid configurations: they pass every variable check and render.
VALID_CASES: Dict[str, Dict[str, Any]] = {
    "the defaults": {},
    "image pinned by digest": {"training_cluster_image": f"registry.example.test/llm/train@{DIGEST}"},
    "image from a registry with a port, tag and digest": {
        "training_cluster_image": f"registry.internal:5000/llm/train:0.9.5@{DIGEST}"
    },
    "static NFS on an IP with a database backend": {
        **STATIC_NFS,
        "training_cluster_nfs_server": "10.20.0.5",
        "training_cluster_mlflow_backend": "database",
        "training_cluster_mlflow_database_uri": f"postgresql://mlflow:{KEY_MARK}@db/mlflow",
        "training_cluster_mlflow_tracking_username": "trainer",
        "training_cluster_mlflow_tracking_password": f"{KEY_MARK}-tracking",
    },
    "base model on the shared volume": {"training_cluster_base_model": "/storage/models/llama-3.2-3b"},
    "base model and datasets inside the image": {
        "training_cluster_base_model": "/opt/models/llama-3.2-3b",
        "training_cluster_dataset_dir": "/opt/data",
    },
    "port-forward on localhost": {"training_cluster_port_forward_address": "localhost"},
    "environment that is not secret": {
        "training_cluster_environment": {"TOKENIZERS_PARALLELISM": "false", "MLFLOW_TRACKING_PASSWORD_FILE": "/x"}
    },
    "people reach the WebUI from the office and MLflow from a namespace": {
        "training_cluster_webui_allowed_sources": [{"ipBlock": {"cidr": "10.20.0.0/16", "except": ["10.20.5.0/24"]}}],
        "training_cluster_mlflow_allowed_sources": [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "data-science"}}}
        ],
    },
    "baseline, no NetworkPolicies": {
        "training_cluster_pod_security_level": "baseline",
        "training_cluster_pod_security_version": "v1.31",
        "training_cluster_network_policy": False,
    },
    "the same model for training and merge, kept Jobs, a private IPv6 range": {
        "training_cluster_train_extra": {"model_name_or_path": "/storage/models/llama-3.2-3b"},
        "training_cluster_merge_extra": {"model_name_or_path": "/storage/models/llama-3.2-3b"},
        "training_cluster_job_ttl_seconds": 3600,
        "training_cluster_mlflow_allowed_sources": [{"ipBlock": {"cidr": "fd00::/8"}}],
    },
    "one WebUI and MLflow port forward when MLflow is off": {
        "training_cluster_mlflow_enabled": False,
        "training_cluster_report_to": "none",
        "training_cluster_port_forward_mlflow_port": 7860,
    },
    "GPU sharing by node affinity": {"training_cluster_gpu_sharing": {"mode": "affinity"}},
    "GPU sharing by MIG, one partition per pod": {
        "training_cluster_gpu_sharing": {"mode": "mig", "training_profile": "2g.20gb"},
        "training_cluster_merge_gpus": 1,
    },
}

# Tasks that check variables: a bad case must fail in one of these.
VARIABLE_CHECKS = (
    "[Validating arguments against arg spec",
    "[Check the LLaMA-Factory variables",
    "[Check every platform variable",
    "[Check the GPU sharing variables",
)
PLAN_TASK = "Check "  # both plan tasks: their failure message starts with the variable
HOSTS = case_hosts([*CASES, *VALID_CASES])


@pytest.fixture(scope="module")
def preflight(tmp_path_factory: pytest.TempPathFactory) -> CaseRun:
    """One ansible-playbook run of the role's preflight against every case host."""
    work = tmp_path_factory.mktemp("training-cluster-preflight")
    baseline = {
        **LOCAL_HOST,
        **VALID,
        # Nothing here talks to a cluster: only the preflight (and the render, tagged always) runs.
        "training_cluster_kubeconfig": str(work / "no-such-kubeconfig"),
    }
    hosts = case_overrides(HOSTS, CASES, VALID_CASES)
    return run_role_cases(ROLE, "training_cluster_preflight", baseline, hosts, work)


@pytest.mark.parametrize("case", list(CASES))
def test_bad_variable_fails_in_preflight_naming_it(preflight: CaseRun, case: str) -> None:
    secrets = [HF, *secrets_in(CASES[case].overrides, KEY_MARK)]
    assert_fails_in_variable_checks(
        preflight, case, HOSTS[case], CASES[case], variable_checks=VARIABLE_CHECKS, plan_task=PLAN_TASK, secrets=secrets
    )


@pytest.mark.parametrize("case", list(VALID_CASES))
def test_valid_variables_pass_the_variable_checks(preflight: CaseRun, case: str) -> None:
    host = HOSTS[case]
    assert_passes_variable_checks(preflight, case, host, secrets=[HF, *secrets_in(VALID_CASES[case], KEY_MARK)])


def test_one_run_for_every_case(preflight: CaseRun) -> None:
    """Every case host is in the one run's stats, no secret reached the output, and the run stays quick (CI time)."""
    assert_one_run_for_every_case(preflight, HOSTS, mark=KEY_MARK, what="a token, password or credential")
    assert len(CASES) - OLD_CASES >= 30
    assert len(CASES) - BEFORE_SECOND_REVIEW >= 30


# ---- the whole role against the API emulator -----------------------------------------------------------
EMULATOR_CASES = (
    "no image",  # the plan
    "namespace not a DNS label",  # what only a real API server would refuse
    "database URL in the plain environment",  # a credential that must not leak
    "training output that contains the served model",  # the LLaMA-Factory plan
    "port-forward on every interface",
)

WRITTEN = (
    "/api/v1/namespaces",
    "/api/v1/secrets",
    "/api/v1/persistentvolumes",
    "/api/v1/persistentvolumeclaims",
    "/api/v1/configmaps",
    "/apis/apps/v1/deployments",
    "/api/v1/services",
    "/apis/batch/v1/jobs",
)
JOB = "/apis/batch/v1/namespaces/llm-training/jobs/llama-factory-train"


def run_role(emulator: Emulator, tmp_path: Path, overrides: dict, args: Optional[List[str]] = None):
    return k8s_harness.run_role(emulator, tmp_path, ROLE, {**VALID, **overrides}, tasks_from="main", args=args)


@pytest.mark.parametrize("case", EMULATOR_CASES)
def test_bad_variable_fails_before_anything_is_applied(k8s_emulator: Emulator, tmp_path: Path, case: str) -> None:
    overrides, variable = CASES[case].overrides, CASES[case].variable
    run = run_role(k8s_emulator, tmp_path, overrides)
    secrets = [HF, *secrets_in(overrides, KEY_MARK)]
    k8s_harness.assert_failed_before_apply(run, k8s_emulator, WRITTEN, case=case, variable=variable, secrets=secrets)


def test_valid_variables_apply_then_change_nothing(k8s_emulator: Emulator, tmp_path: Path) -> None:
    run = run_role(k8s_emulator, tmp_path, {})
    expected = [
        "/api/v1/secrets/hf-token",
        "/api/v1/persistentvolumeclaims/llama-storage",
        "/apis/apps/v1/deployments/mlflow",
    ]
    k8s_harness.assert_applied(run, k8s_emulator, WRITTEN, expected, secrets=[HF])
    again = run_role(k8s_emulator, tmp_path, {})
    assert again.rc == 0 and again.stats["changed"] == 0, again.stats
    assert HF not in again.output


def test_first_check_mode_run_predicts_without_writing(k8s_emulator: Emulator, tmp_path: Path) -> None:
    run = run_role(k8s_emulator, tmp_path, {}, args=["--check"])
    k8s_harness.assert_predicted_without_writing(run, k8s_emulator, WRITTEN, secrets=[HF])


# ---- Job paths --------------------------------------------------------------------------------------
LOG_EMULATOR = textwrap.dedent(
    """\
    import asyncio, sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[1])
    import aiohttp.web
    import emulator as emu

    class LogEmulator(emu.LlmopsEmulator):
        async def __call__(self, raw_request):
            route = emu.parse_route(raw_request.path)
            if route and route.plural == "pods" and route.subresource == "log" and raw_request.method == "GET":
                pod = self.store.get(("", "pods", route.namespace, route.name))
                if pod is None:
                    error = emu.ApiError(404, "NotFound", f'pods "{route.name}" not found')
                    return aiohttp.web.json_response(error.body(), status=404)
                lines = (pod["metadata"].get("annotations") or {}).get("llmops.test/log", "").splitlines()
                tail = int(raw_request.query.get("tailLines", len(lines)))
                return aiohttp.web.Response(text="".join(line + "\\n" for line in lines[-tail:]))
            return await super().__call__(raw_request)

    emu.LlmopsEmulator = LogEmulator
    asyncio.run(emu._serve("127.0.0.1", 0, Path(sys.argv[2]), Path(sys.argv[3])))
    """
)


@pytest.fixture
def log_emulator(tmp_path: Path):
    state = tmp_path / "emulator"
    state.mkdir()
    script, kubeconfig, ready = state / "log_emulator.py", state / "kubeconfig", state / "url"
    script.write_text(LOG_EMULATOR)
    with open(state / "log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, str(script), str(K8S), str(kubeconfig), str(ready)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert proc.poll() is None and time.monotonic() < deadline, (state / "log").read_text()
            time.sleep(0.05)
        yield Emulator(ready.read_text().strip(), kubeconfig, state / "pid")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def start_train(emulator: Emulator, tmp_path: Path) -> subprocess.Popen:
    play = tmp_path / "train.yml"
    play.write_text(k8s_harness.role_play(ROLE, "train"))
    varsfile = tmp_path / "train-vars.json"
    varsfile.write_text(
        json.dumps(
            {
                **VALID,
                "training_cluster_kubeconfig": str(emulator.kubeconfig),
                "training_cluster_job_poll_interval": 1,
                "training_cluster_train_timeout": 120,
                "training_cluster_job_log_lines": 3,
            }
        )
    )
    proc = subprocess.Popen(
        ["ansible-playbook", "-i", "localhost,", str(play), "-e", f"@{varsfile}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=ansible_env(),
        cwd=tmp_path,
    )
    # The output is read as it comes (proc.lines), so a test can wait for what the play prints.
    proc.lines = []  # type: ignore[attr-defined]

    def read() -> None:
        for line in iter(proc.stdout.readline, ""):
            proc.lines.append(line)  # type: ignore[attr-defined]

    proc.reader = threading.Thread(target=read, daemon=True)  # type: ignore[attr-defined]
    proc.reader.start()  # type: ignore[attr-defined]
    return proc


def output_of(proc: subprocess.Popen) -> str:
    return "".join(proc.lines)  # type: ignore[attr-defined]


def wait_for_output(proc: subprocess.Popen, predicate: Callable[[str], bool], what: str, timeout: float = 120) -> None:
    def printed() -> bool:
        if any(predicate(line) for line in list(proc.lines)):  # type: ignore[attr-defined]
            return True
        assert proc.poll() is None, f"the play ended before it printed {what}:\n" + output_of(proc)[-3000:]
        return False

    k8s_harness.wait_for(what, printed, timeout=timeout)


def wait_for_job(emulator: Emulator, proc: subprocess.Popen, old_uid: str = "") -> dict:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, output_of(proc)[-3000:]
        try:
            job = emulator.get(JOB) if emulator.exists(JOB) else None
        except RuntimeError as exc:  # deleted between the two reads (a rerun replaces the finished Job)
            if "HTTP 404" not in str(exc):
                raise
            job = None
        if job and job["metadata"]["uid"] != old_uid:
            return job
        time.sleep(0.3)
    proc.kill()
    raise AssertionError("the play never created the Job")


def finish(proc: subprocess.Popen) -> tuple:
    proc.wait(timeout=180)
    proc.reader.join(timeout=30)  # type: ignore[attr-defined]
    output = output_of(proc)
    report = json.loads(output[output.index("{") :]) if "{" in output else {}
    return proc.returncode, report, output


def test_job_complete_passes_and_a_rerun_replaces_the_job(log_emulator: Emulator, tmp_path: Path) -> None:
    proc = start_train(log_emulator, tmp_path)
    job = wait_for_job(log_emulator, proc)
    spec = job["spec"]["template"]["spec"]["containers"][0]
    assert spec["command"] == ["llamafactory-cli", "train", "/config/train.yaml"]
    log_emulator.set_status(JOB, emu.job_finished_status("Complete"))
    rc, report, output = finish(proc)
    assert rc == 0, output[-3000:]
    assert report["stats"]["localhost"]["failures"] == 0
    # A second run deletes the finished Job and creates a new one (Jobs are immutable).
    proc = start_train(log_emulator, tmp_path)
    second = wait_for_job(log_emulator, proc, old_uid=job["metadata"]["uid"])
    assert "status" not in second or not second["status"].get("conditions")
    log_emulator.set_status(JOB, emu.job_finished_status("Complete"))
    rc, _report, output = finish(proc)
    assert rc == 0, output[-3000:]


def test_job_failed_fails_at_once_with_the_pod_log(log_emulator: Emulator, tmp_path: Path) -> None:
    proc = start_train(log_emulator, tmp_path)
    wait_for_job(log_emulator, proc)
    log = "\n".join(["loading model", "step 1/4", "step 2/4", "torch.OutOfMemoryError: CUDA out of memory", "exiting"])
    for name, text in (("llama-factory-train-old01", "an older attempt"), ("llama-factory-train-new02", log)):
        log_emulator.create(
            "/api/v1/namespaces/llm-training/pods",
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": name,
                    "labels": {"job-name": "llama-factory-train"},
                    "annotations": {"llmops.test/log": text},
                },
                "spec": {"containers": [{"name": "train", "image": "x"}]},
            },
        )
        time.sleep(1.1)  # creationTimestamp has one-second resolution: the second pod is the newest
    started = time.monotonic()
    log_emulator.set_status(JOB, emu.job_finished_status("Failed"))
    rc, report, output = finish(proc)
    assert rc != 0, output[-3000:]
    assert time.monotonic() - started < 60, "the play did not fail at once"
    messages = "\n".join(report_failures(report))
    assert "llama-factory-train FAILED (BackoffLimitExceeded" in messages, messages
    assert "pod llama-factory-train-new02" in messages, messages
    assert "torch.OutOfMemoryError: CUDA out of memory" in messages and "exiting" in messages, messages
    assert "step 1/4" not in messages, "more than training_cluster_job_log_lines lines were included"
    assert HF not in output


def test_a_job_whose_pod_cannot_pull_its_image_fails_at_once(log_emulator: Emulator, tmp_path: Path) -> None:
    """The pod reports ErrImagePull (as the kubelet does for an image that does not exist): the wait stops at
    once, naming the reason and the kubelet's message, instead of waiting out training_cluster_train_timeout."""
    proc = start_train(log_emulator, tmp_path)
    wait_for_job(log_emulator, proc)
    pod = log_emulator.create(
        "/api/v1/namespaces/llm-training/pods",
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "llama-factory-train-pull1", "labels": {"job-name": "llama-factory-train"}},
            "spec": {"containers": [{"name": "train", "image": "registry.example.test/llm/llama-factory-train:0.9.5"}]},
        },
    )
    # The play polls every second: once it has seen the pod waiting (and said so), the pull fails.
    wait_for_output(proc, lambda line: "[train]" in line and "Pending" in line, "the pod waiting in Pending")
    started = time.monotonic()
    waiting = {
        "reason": "ErrImagePull",
        "message": "manifest for registry.example.test/llm/llama-factory-train:0.9.5 not found",
    }
    log_emulator.set_status(
        f"/api/v1/namespaces/llm-training/pods/{pod['metadata']['name']}",
        {
            "phase": "Pending",
            "containerStatuses": [{"name": "train", "ready": False, "restartCount": 0, "state": {"waiting": waiting}}],
        },
    )
    rc, report, output = finish(proc)
    assert rc != 0, output[-3000:]
    assert time.monotonic() - started < 30, "the play did not fail at once"
    messages = "\n".join(report_failures(report))
    assert "CANNOT START: pod llama-factory-train-pull1 ErrImagePull: the image cannot be pulled" in messages, messages
    assert "manifest for registry.example.test/llm/llama-factory-train:0.9.5 not found" in messages, messages
    # A person watching saw the pod's state while it waited.
    assert "[train]" in output and "Pending" in output, output[-2000:]
