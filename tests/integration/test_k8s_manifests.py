"""Every manifest vllm_k8s renders is valid, strictly, for several Kubernetes versions, and the
container runs exactly the arguments the shared server configuration renders (as vllm_host does).

The role runs in render-only mode (vllm_k8s_apply: false, vllm_k8s_render_dir), so no cluster is
involved: these are the files a real API server would be sent.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
for path in (ROOT / "tests" / "k8s", ROOT / ".collections"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import manifest_audit  # noqa: E402
import pod_security  # noqa: E402
import validate  # noqa: E402

from ansible_collections.llmops.platform.plugins.module_utils import vllm_server as vs  # noqa: E402

CONFIGS = {
    "default": {"vllm_k8s_api_key": "render-test-key"},
    "gpu-tp2": {
        "vllm_k8s_api_key": "render-test-key",
        "vllm_k8s_server": {
            "tensor_parallel_size": 2,
            "max_model_len": 8192,
            "dtype": "bfloat16",
            "enable_prefix_caching": True,
            "gpu_memory_utilization": 0.85,
            "shutdown_timeout": 45,
        },
        "vllm_k8s_lora_adapters": [
            {"name": "sql", "path": "/storage/adapters/sql/current", "rank": 32},
            {"name": "chat.v2", "path": "/storage/adapters/chat/current", "rank": 8},
        ],
        "vllm_k8s_lora_runtime_updating": True,
        "vllm_k8s_runtime_class_name": "nvidia",
        "vllm_k8s_model_revision": "sha256-abc",
        "vllm_k8s_network_policy_namespace_labels": [{"kubernetes.io/metadata.name": "monitoring"}],
        "vllm_k8s_service_monitor": True,
        "vllm_k8s_pdb_max_unavailable": "50%",
        "vllm_k8s_drain_seconds": 10,
        "vllm_k8s_pod_security_level": "baseline",
        "vllm_k8s_pod_security_version": "v1.33",
    },
    "existing-secret-no-extras": {
        "vllm_k8s_network_policy": False,
        "vllm_k8s_pdb": False,
        "vllm_k8s_create_namespace": False,
        "vllm_k8s_gpus": 4,
        "vllm_k8s_drain_seconds": 0,
        "vllm_k8s_termination_grace_seconds": 90,
    },
}
# name -> (preStop sleep seconds or None, terminationGracePeriodSeconds)
STOPPING = {"default": (30, 60), "gpu-tp2": (10, 10 + 45 + 30), "existing-secret-no-extras": (None, 90)}


def render(tmp_path: Path, overrides: dict) -> Path:
    varsfile = tmp_path / "vars.json"
    varsfile.write_text(json.dumps(overrides))
    return validate.render_role("vllm_k8s", [f"@{varsfile}"], tmp_path)


@pytest.fixture(scope="module", params=list(CONFIGS))
def rendered(request, tmp_path_factory) -> tuple:
    tmp = tmp_path_factory.mktemp(request.param)
    out = render(tmp, CONFIGS[request.param])
    docs = {p.name: yaml.safe_load(p.read_text()) for p in sorted(out.glob("*.yaml"))}
    return request.param, docs


def server_config(name: str) -> dict:
    """The vLLM server configuration the role builds for CONFIGS[name]: its defaults plus vllm_k8s_server."""
    return {
        "model": "/storage/models/merged-model",
        "served_model_name": "merged-model",
        "host": "0.0.0.0",
        "port": 8000,
        "device": "cuda",
        **CONFIGS[name].get("vllm_k8s_server", {}),
        "lora_adapters": CONFIGS[name].get("vllm_k8s_lora_adapters", []),
        "lora_runtime_updating": CONFIGS[name].get("vllm_k8s_lora_runtime_updating", False),
    }


def argv_settings(cfg: dict) -> dict:
    """A normalized configuration without the keys an argv cannot carry back: lora_adapters reach it as
    lora_modules (and max_lora_rank), lora_runtime_updating as the environment."""
    return {k: v for k, v in cfg.items() if k not in ("lora_adapters", "lora_runtime_updating")}


def manifests(docs: dict) -> dict:
    return {doc["kind"]: doc for name, doc in docs.items() if name != "helm-values.yaml"}


def test_every_manifest_is_valid_for_three_kubernetes_versions(rendered) -> None:
    name, docs = rendered
    objects = manifests(docs)
    expected = {"Deployment", "Service", "ServiceAccount"}
    if name != "existing-secret-no-extras":
        expected |= {"Namespace", "Secret", "NetworkPolicy", "PodDisruptionBudget"}
    assert expected <= set(objects), sorted(objects)
    assert len(validate.DEFAULT_VERSIONS) >= 3
    problems = [p for doc in objects.values() for p in validate.validate_manifest(doc, validate.DEFAULT_VERSIONS, name)]
    assert problems == [], "\n".join(map(str, problems))


def test_the_validator_rejects_what_a_strict_server_rejects() -> None:
    """The check above can fail: a misspelt field and a wrongly typed value are caught."""
    bad = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "x"},
        "spec": {"ports": [{"port": "http"}], "selektor": {}},
    }
    problems = validate.validate_manifest(bad)
    assert len(problems) == len(validate.DEFAULT_VERSIONS)
    monitor = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": "x"},
        "spec": {"selector": {}, "endpoints": [{"port": "http", "interval": "soon"}]},
    }
    assert validate.validate_manifest(monitor)


def test_container_args_are_the_shared_renderers(rendered) -> None:
    """The single source of truth: the container gets vllm_server_args of the same configuration that
    vllm_host renders into its systemd unit."""
    name, docs = rendered
    config = server_config(name)
    expected = vs.render_server_args(config)
    container = manifests(docs)["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == expected
    normalized = vs.normalize_server_config(config)
    assert argv_settings(vs.parse_server_args(container["args"])) == argv_settings(normalized)
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env.get("VLLM_ALLOW_RUNTIME_LORA_UPDATING") == ("True" if normalized["lora_runtime_updating"] else None)
    if name == "gpu-tp2":
        assert "--lora-modules" in expected and expected[expected.index("--max-lora-rank") + 1] == "32"
    # vllm_host builds the same list for its ExecStart (through vllm_systemd_exec_args).
    assert vs.systemd_exec_args(container["args"]) == vs.systemd_exec_args(expected)
    assert all(isinstance(word, str) for word in container["args"])


def test_probes_resources_and_security(rendered) -> None:
    name, docs = rendered
    pod = manifests(docs)["Deployment"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    startup = container["startupProbe"]
    assert startup["failureThreshold"] * startup["periodSeconds"] >= 1800
    tp = CONFIGS[name].get("vllm_k8s_server", {}).get("tensor_parallel_size", 1)
    gpus = str(CONFIGS[name].get("vllm_k8s_gpus", tp))
    assert container["resources"]["limits"]["nvidia.com/gpu"] == gpus
    assert all(isinstance(v, str) for part in container["resources"].values() for v in part.values())
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    env = {e["name"]: e for e in container["env"]}
    assert env["VLLM_API_KEY"] == {
        "name": "VLLM_API_KEY",
        "valueFrom": {"secretKeyRef": {"name": "vllm-api-key", "key": "api-key"}},
    }
    rendered_text = json.dumps(docs)
    assert "render-test-key" not in rendered_text, "the API key was written to the render directory"


def test_helm_values_come_from_the_same_configuration(rendered) -> None:
    name, docs = rendered
    values = docs["helm-values.yaml"]
    spec = values["servingEngineSpec"]["modelSpec"][0]
    config = server_config(name)
    # What the chart's template turns the values into, read back, is the same configuration, except for
    # prefix caching, which the chart always states (docs/vllm-server-config.md).
    effective = vs.parse_server_args(vs.effective_args_from_helm_model_spec(spec))
    expected = vs.normalize_server_config(config)
    if expected["enable_prefix_caching"] is None:
        expected["enable_prefix_caching"] = vs.HELM_PREFIX_CACHING_WHEN_UNSET
    assert argv_settings(effective) == argv_settings(expected)
    env = {e["name"]: e.get("value") for e in spec.get("env", [])}
    assert env.get("VLLM_ALLOW_RUNTIME_LORA_UPDATING") == ("True" if expected["lora_runtime_updating"] else None)
    assert values["servingEngineSpec"]["vllmApiKey"] == {"secretName": "vllm-api-key", "secretKey": "api-key"}
    assert spec["extraVolumes"][0]["persistentVolumeClaim"]["claimName"] == "llama-storage"


def test_the_pod_meets_the_restricted_pod_security_standard(rendered) -> None:
    """The Deployment's pod passes every control of the restricted profile (tests/k8s/pod_security.py), so the
    namespace can enforce restricted; the namespace carries the labels of the shared filter."""
    name, docs = rendered
    objects = manifests(docs)
    template = objects["Deployment"]["spec"]["template"]
    assert pod_security.restricted_violations(template) == []
    if "Namespace" in objects:
        level = CONFIGS[name].get("vllm_k8s_pod_security_level", "restricted")
        version = CONFIGS[name].get("vllm_k8s_pod_security_version", "latest")
        assert objects["Namespace"]["metadata"]["labels"] == {
            "pod-security.kubernetes.io/enforce": level,
            "pod-security.kubernetes.io/enforce-version": version,
            "pod-security.kubernetes.io/audit": "restricted",
            "pod-security.kubernetes.io/warn": "restricted",
        }


def test_no_api_token_no_api_permission_and_no_secret_on_a_command_line(rendered) -> None:
    """vLLM never calls the Kubernetes API: its own ServiceAccount, no token mounted (account and pod), no
    Role or binding. The API key reaches it only through the environment from the Secret."""
    _name, docs = rendered
    objects = [doc for key, doc in docs.items() if key != "helm-values.yaml"]
    assert manifest_audit.api_access_problems(objects) == []
    account = manifests(docs)["ServiceAccount"]
    assert account["metadata"]["name"] == "vllm-inference"
    assert account["automountServiceAccountToken"] is False
    assert manifest_audit.secret_exposure_problems(objects, ["render-test-key"]) == []


def test_stopping_drains_before_sigterm_within_the_grace_period(rendered) -> None:
    """A preStop sleep of vllm_k8s_drain_seconds (none at 0), then SIGTERM; the grace period covers the sleep,
    vLLM's own shutdown_timeout and its exit."""
    name, docs = rendered
    pod = manifests(docs)["Deployment"]["spec"]["template"]["spec"]
    drain, grace = STOPPING[name]
    container = pod["containers"][0]
    if drain is None:
        assert "lifecycle" not in container
    else:
        assert container["lifecycle"] == {"preStop": {"exec": {"command": ["sleep", str(drain)]}}}
    assert pod["terminationGracePeriodSeconds"] == grace
