"""vllm_k8s helm mode: the production-stack chart's values carry what the role's own Deployment carries.

The settings below are what roles/vllm_k8s/tasks/render.yml builds from the role's defaults
(tests/integration/roles/test_vllm_k8s_helm.py renders the role itself); each configuration checks the keys the
chart (vllm-stack 0.1.12) reads: hardening, strategy, environment, resources, probes, ports, router off, the API key.
"""

import copy
import json
import sys
from pathlib import Path

import jinja2
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[4]
if str(ROOT / ".collections") not in sys.path:
    sys.path.insert(0, str(ROOT / ".collections"))

from ansible_collections.llmops.platform.plugins.module_utils import vllm_helm as vh  # noqa: E402
from ansible_collections.llmops.platform.plugins.module_utils import vllm_server as vs  # noqa: E402

DEFAULTS = yaml.safe_load((ROOT / "roles" / "vllm_k8s" / "defaults" / "main.yml").read_text())
LABELS = {
    "app.kubernetes.io/name": "vllm",
    "app.kubernetes.io/instance": "vllm-inference",
    "app.kubernetes.io/component": "inference",
    "app.kubernetes.io/managed-by": "llmops.platform",
}
BASE_ENV = [
    {"name": "DO_NOT_TRACK", "value": "1"},
    {"name": "HF_HOME", "value": "/home/vllm/.cache/huggingface"},
    {"name": "HF_HUB_OFFLINE", "value": "1"},
    {"name": "HOME", "value": "/home/vllm"},
    {"name": "VLLM_CACHE_ROOT", "value": "/home/vllm/.cache/vllm"},
    {"name": "VLLM_NO_USAGE_STATS", "value": "1"},
    {"name": "XDG_CACHE_HOME", "value": "/home/vllm/.cache"},
]
KEY_ENV = {"name": "VLLM_API_KEY", "valueFrom": {"secretKeyRef": {"name": "vllm-api-key", "key": "api-key"}}}


def settings(server=None, **overrides):
    """render.yml's settings for the role defaults, a server configuration and overrides."""
    d = DEFAULTS
    cfg = vs.normalize_server_config(
        {"model": d["vllm_k8s_model_path"], "served_model_name": d["vllm_k8s_served_model_name"], **(server or {})}
    )
    gpus = 0 if cfg["device"] == "cpu" else cfg["tensor_parallel_size"] * cfg["pipeline_parallel_size"]
    out = {
        "config": cfg,
        "name": d["vllm_k8s_name"],
        "release": d["vllm_k8s_helm_release"],
        "image_repository": d["vllm_k8s_image_repository"],
        "image_tag": d["vllm_k8s_image_tag"],
        "image_pull_policy": d["vllm_k8s_image_pull_policy"],
        "replicas": d["vllm_k8s_replicas"],
        "gpus": gpus,
        "gpu_resource": d["vllm_k8s_gpu_resource"],
        "resources": copy.deepcopy(d["vllm_k8s_resources"]),
        "request_cpu": d["vllm_k8s_helm_request_cpu"],
        "request_memory": d["vllm_k8s_helm_request_memory"],
        "pvc_storage": d["vllm_k8s_helm_pvc_storage"],
        "labels": dict(LABELS),
        "env": [*BASE_ENV, KEY_ENV],
        "uses_key": True,
        "api_key_secret_name": d["vllm_k8s_api_key_secret_name"],
        "api_key_secret_key": d["vllm_k8s_api_key_secret_key"],
        "run_as_user": d["vllm_k8s_run_as_user"],
        "run_as_group": d["vllm_k8s_run_as_group"],
        "fs_group": d["vllm_k8s_fs_group"],
        "read_only_root_filesystem": d["vllm_k8s_read_only_root_filesystem"],
        "strategy": copy.deepcopy(d["vllm_k8s_strategy"]),
        "node_selector": dict(d["vllm_k8s_node_selector"]),
        "tolerations": copy.deepcopy(d["vllm_k8s_tolerations"]),
        "runtime_class_name": d["vllm_k8s_runtime_class_name"],
        "shm_size": d["vllm_k8s_shm_size"],
        "service_port": d["vllm_k8s_service_port"],
        "pvc_name": d["vllm_k8s_pvc_name"],
        "pvc_mount_path": d["vllm_k8s_pvc_mount_path"],
        "pvc_read_only": d["vllm_k8s_pvc_read_only"],
        "startup_probe_period": d["vllm_k8s_startup_probe_period"],
        "startup_failures": -(-d["vllm_k8s_model_load_timeout"] // d["vllm_k8s_startup_probe_period"]),
        "readiness_probe_period": d["vllm_k8s_readiness_probe_period"],
        "readiness_probe_failure_threshold": d["vllm_k8s_readiness_probe_failure_threshold"],
        "liveness_completion": d["vllm_k8s_liveness_completion"],
        "liveness_python": d["vllm_k8s_liveness_python"],
        "liveness_probe_period": d["vllm_k8s_liveness_probe_period"],
        "liveness_probe_timeout": d["vllm_k8s_liveness_probe_timeout"],
        "liveness_probe_failure_threshold": d["vllm_k8s_liveness_probe_failure_threshold"],
        "probe_configmap": "vllm-inference-probe",
        "probe_dir": "/etc/llmops",
        "probe_sha256": "0" * 64,
        "home": "/home/vllm",
        "revision_annotation": "llmops.io/model-revision",
        "revision": "v3",
        "service_account": d["vllm_k8s_name"],
        "extra_values": {},
    }
    out.update(overrides)
    return out


def engine_of(values):
    return values["servingEngineSpec"]


def model_of(values):
    (spec,) = values["servingEngineSpec"]["modelSpec"]
    return spec


def test_the_defaults_are_the_chart_version_and_sizes_the_docs_name():
    assert DEFAULTS["vllm_k8s_helm_chart_version"] == vh.CHART_VERSION == "0.1.12"
    assert DEFAULTS["vllm_k8s_helm_request_cpu"] is None and DEFAULTS["vllm_k8s_helm_request_memory"] is None
    assert DEFAULTS["vllm_k8s_helm_pvc_storage"] == "1Gi"


def test_default_gpu_configuration_is_hardened_like_the_manifests():
    values = vh.render_helm_values(settings())
    engine = engine_of(values)
    assert engine["containerSecurityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 2000,
        "runAsGroup": 2000,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert engine["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 2000,
        "runAsGroup": 2000,
        "fsGroup": 2000,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    # The role's strategy: a rollout needs no spare GPU (the chart's default is maxSurge 100%).
    assert engine["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}
    # The router and everything it brings (ServiceAccount, Role, RoleBinding, Service) is off.
    assert values["routerSpec"] == {"enableRouter": False}
    # The chart's default labels are deleted (null), the role's labels are on the engine's objects.
    assert engine["labels"] == {"environment": None, "release": None, **LABELS}
    assert engine["containerPort"] == 8000 and engine["servicePort"] == 8000
    assert engine["runtimeClassName"] == ""  # overrides the chart's default "nvidia"
    assert engine["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert engine["imagePullPolicy"] == "IfNotPresent"


def test_default_resources_come_from_vllm_k8s_resources_with_the_gpus():
    spec = model_of(vh.render_helm_values(settings()))
    assert (spec["requestCPU"], spec["requestMemory"], spec["limitCPU"], spec["limitMemory"]) == (8, "32Gi", 16, "64Gi")
    assert (spec["requestGPU"], spec["requestGPUType"]) == (1, "nvidia.com/gpu")
    assert spec["resources"] == {
        "requests": {"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": "1"},
        "limits": {"cpu": "16", "memory": "64Gi", "nvidia.com/gpu": "1"},
    }
    assert isinstance(spec["requestCPU"], int) and isinstance(spec["limitCPU"], int)  # integers in the chart schema


def test_default_probes_are_on_the_configured_port_with_the_role_settings():
    engine = engine_of(vh.render_helm_values(settings()))
    health = {"path": "/health", "port": 8000}
    assert engine["startupProbe"] == {
        "initialDelaySeconds": 0,
        "periodSeconds": 10,
        "timeoutSeconds": 5,
        "failureThreshold": 180,
        "httpGet": health,
    }
    assert engine["readinessProbe"] == {
        "initialDelaySeconds": 0,
        "periodSeconds": 10,
        "timeoutSeconds": 5,
        "failureThreshold": 3,
        "httpGet": health,
    }
    # The completion liveness probe (the role's ConfigMap), the chart's default httpGet removed with null.
    assert engine["livenessProbe"] == {
        "initialDelaySeconds": 0,
        "periodSeconds": 20,
        "timeoutSeconds": 5,
        "failureThreshold": 3,
        "exec": {"command": ["python3", "/etc/llmops/vllm-watchdog.py", "--liveness"]},
        "httpGet": None,
    }


def test_default_env_volumes_and_api_key_reference():
    values = vh.render_helm_values(settings(env=[*BASE_ENV, KEY_ENV, {"name": "MY_FLAG", "value": "x"}]))
    engine, spec = engine_of(values), model_of(values)
    names = [e["name"] for e in spec["env"]]
    # HF_HOME is the chart's (/data); the key is never a plain value, only the Secret reference.
    assert names == [
        "DO_NOT_TRACK",
        "HF_HUB_OFFLINE",
        "HOME",
        "VLLM_CACHE_ROOT",
        "VLLM_NO_USAGE_STATS",
        "XDG_CACHE_HOME",
        "MY_FLAG",
    ]
    assert all(set(e) == {"name", "value"} and isinstance(e["value"], str) for e in spec["env"])
    assert engine["vllmApiKey"] == {"secretName": "vllm-api-key", "secretKey": "api-key"}
    assert spec["serviceAccountName"] == "vllm-inference"
    assert spec["extraVolumes"][0] == {
        "name": "model-storage",
        "persistentVolumeClaim": {"claimName": "llama-storage", "readOnly": True},
    }
    mounts = {m["mountPath"]: m["name"] for m in spec["extraVolumeMounts"]}
    assert mounts == {"/storage": "model-storage", "/tmp": "tmp", "/home/vllm": "home", "/etc/llmops": "probe"}
    assert spec["podAnnotations"] == {"llmops.io/model-revision": "v3", "llmops.io/probe-sha256": "0" * 64}
    assert spec["nodeSelectorTerms"] == [
        {"matchExpressions": [{"key": "nvidia.com/gpu", "operator": "In", "values": ["true"]}]}
    ]
    assert (spec["name"], spec["pvcStorage"], spec["shmSize"]) == ("vllm-inference", "1Gi", "16Gi")


def test_no_key_required_sets_no_key_anywhere():
    env = BASE_ENV  # render.yml adds no VLLM_API_KEY entry when no key is used
    values = vh.render_helm_values(settings(uses_key=False, env=env))
    text = json.dumps(values)
    assert "vllmApiKey" not in text and "VLLM_API_KEY" not in text and "api-key" not in text


def test_other_port_reaches_container_service_and_every_probe():
    values = vh.render_helm_values(settings(server={"port": 9000}, service_port=80))
    engine = engine_of(values)
    assert engine["containerPort"] == 9000 and engine["servicePort"] == 80
    for probe in ("startupProbe", "readinessProbe"):
        assert engine[probe]["httpGet"]["port"] == 9000
    # The chart replays the port from containerPort: the args read back carry it.
    args = vs.effective_args_from_helm_model_spec(model_of(values), container_port=engine["containerPort"])
    assert vs.parse_server_args(args)["port"] == 9000


def test_tensor_parallel_custom_strategy_runtime_class_and_http_liveness():
    strategy = {"type": "Recreate"}
    values = vh.render_helm_values(
        settings(
            server={"tensor_parallel_size": 2, "max_model_len": 8192},
            gpus=2,
            strategy=strategy,
            runtime_class_name="nvidia",
            node_selector={"nvidia.com/gpu.product": "H100", "pool": "gpu"},
            liveness_completion=False,
            read_only_root_filesystem=False,
            labels={**LABELS, "team": "ml"},
        )
    )
    engine, spec = engine_of(values), model_of(values)
    assert engine["strategy"] == strategy
    assert engine["runtimeClassName"] == "nvidia"
    assert engine["containerSecurityContext"]["readOnlyRootFilesystem"] is False
    assert engine["labels"]["team"] == "ml"
    assert engine["livenessProbe"]["httpGet"] == {"path": "/health", "port": 8000}
    assert "exec" not in engine["livenessProbe"]
    assert spec["requestGPU"] == 2 and spec["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert spec["vllmConfig"]["tensorParallelSize"] == 2
    assert [e["key"] for e in spec["nodeSelectorTerms"][0]["matchExpressions"]] == ["nvidia.com/gpu.product", "pool"]
    assert "probe" not in {v["name"] for v in spec["extraVolumes"]}
    assert "llmops.io/probe-sha256" not in spec["podAnnotations"]


def test_cpu_device_requests_no_gpu_and_other_gpu_resources_keep_their_name():
    spec = model_of(vh.render_helm_values(settings(server={"device": "cpu"}, gpus=0)))
    assert spec["requestGPU"] == 0
    assert all("nvidia.com/gpu" not in section for section in spec["resources"].values())
    spec = model_of(vh.render_helm_values(settings(gpu_resource="nvidia.com/mig-3g.40gb")))
    assert spec["requestGPUType"] == "nvidia.com/mig-3g.40gb"
    assert spec["resources"]["requests"]["nvidia.com/mig-3g.40gb"] == "1"


def test_request_overrides_and_helm_values_merge_last():
    values = vh.render_helm_values(
        settings(
            request_cpu=4,
            request_memory="16Gi",
            extra_values={"servingEngineSpec": {"labels": {"tier": "gold"}}, "routerSpec": {"replicaCount": 2}},
        )
    )
    spec = model_of(values)
    assert (spec["requestCPU"], spec["requestMemory"]) == (4, "16Gi")
    assert spec["resources"]["requests"]["cpu"] == "4"
    assert values["servingEngineSpec"]["labels"]["tier"] == "gold"
    assert values["servingEngineSpec"]["labels"]["app.kubernetes.io/name"] == "vllm"  # merged, not replaced
    assert values["routerSpec"] == {"enableRouter": False, "replicaCount": 2}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}}, r"^vllm_k8s_resources\.requests\.cpu: .*whole"),
        ({"resources": {"requests": {"cpu": "1.5", "memory": "1Gi"}}}, r"^vllm_k8s_resources\.requests\.cpu"),
        ({"resources": {"requests": {"memory": "1Gi"}}}, r"^vllm_k8s_resources\.requests\.cpu: .*requires"),
        ({"resources": {"requests": {"cpu": "2"}}}, r"^vllm_k8s_resources\.requests\.memory"),
        ({"resources": {"requests": {"cpu": 2, "memory": "1Gi"}, "limits": {"cpu": "2500m"}}}, r"limits\.cpu"),
        ({"request_cpu": "two"}, r"^vllm_k8s_helm_request_cpu"),
        ({"env": [*BASE_ENV, {"name": "PYTHONHASHSEED", "value": "0"}]}, r"^vllm_k8s_environment\.PYTHONHASHSEED"),
        ({"env": [*BASE_ENV, {"name": "POD_IP", "value": "x"}]}, r"^vllm_k8s_environment\.POD_IP"),
        ({"pvc_mount_path": "/data"}, r"^vllm_k8s_pvc_mount_path: /data overlaps /data"),
        ({"pvc_mount_path": "/tmp/models"}, r"^vllm_k8s_pvc_mount_path"),
        ({"server": {"host": "::"}}, r"0\.0\.0\.0"),
    ],
)
def test_what_the_chart_cannot_take_fails_naming_the_variable(overrides, message):
    with pytest.raises(vh.HelmValuesError, match=message):
        vh.render_helm_values(settings(**overrides))


def test_names_are_the_charts_and_the_role_vars_agree():
    names = vh.helm_object_names("vllm", "vllm-inference")
    assert names["deployment"] == "vllm-vllm-inference-deployment-vllm"
    assert names["service"] == "vllm-vllm-inference-engine-service"
    role_vars = yaml.safe_load((ROOT / "roles" / "vllm_k8s" / "vars" / "main.yml").read_text())
    env = jinja2.Environment()  # noqa: S701 - names, not HTML
    for mode in ("helm", "manifests"):
        context = {"vllm_k8s_mode": mode, "vllm_k8s_helm_release": "prod", "vllm_k8s_name": "chat-8b"}
        deployment = env.from_string(role_vars["_vllm_k8s_deployment_name"]).render(context).strip()
        service = env.from_string(role_vars["_vllm_k8s_service_name"]).render(context).strip()
        expected = (
            vh.helm_object_names("prod", "chat-8b")
            if mode == "helm"
            else {"deployment": "chat-8b", "service": "chat-8b"}
        )
        assert (deployment, service) == (expected["deployment"], expected["service"])


def rendered_like_the_chart(values, names, *, container_security=None, drop_readiness=False, key=True, router=False):
    """What `helm template` prints for these values, written by hand for the check's tests (objects, not a chart)."""
    engine = values["servingEngineSpec"]
    container = {
        "name": "vllm",
        "image": "vllm/vllm-openai:v0.32.0",
        "securityContext": container_security or engine["containerSecurityContext"],
        "env": [{"name": "HF_HOME", "value": "/data"}]
        + ([{"name": "VLLM_API_KEY", "valueFrom": {"secretKeyRef": {"name": "k", "key": "k"}}}] if key else []),
        "startupProbe": engine["startupProbe"],
        "livenessProbe": {k: v for k, v in engine["livenessProbe"].items() if v is not None},
    }
    if not drop_readiness:
        container["readinessProbe"] = engine["readinessProbe"]
    docs = [
        {"kind": "Secret", "metadata": {"name": "vllm-secrets"}},
        {"kind": "PersistentVolumeClaim", "metadata": {"name": "vllm-vllm-inference-storage-claim"}},
        {
            "kind": "Deployment",
            "metadata": {"name": names["deployment"]},
            "spec": {
                "strategy": engine["strategy"],
                "template": {"spec": {"securityContext": engine["securityContext"], "containers": [container]}},
            },
        },
        {"kind": "Service", "metadata": {"name": names["service"]}},
        None,
    ]
    if router:
        docs.append({"kind": "Deployment", "metadata": {"name": "vllm-deployment-router"}})
    return docs


def test_template_check_accepts_what_the_values_ask_for_and_lists_the_rest():
    values = vh.render_helm_values(settings())
    names = vh.helm_object_names("vllm", "vllm-inference")
    result = vh.helm_template_problems(rendered_like_the_chart(values, names), values, names)
    assert result["problems"] == []
    assert result["objects"] == [
        "Secret/vllm-secrets",
        "PersistentVolumeClaim/vllm-vllm-inference-storage-claim",
        "Deployment/vllm-vllm-inference-deployment-vllm",
        "Service/vllm-vllm-inference-engine-service",
    ]
    assert "the chart also creates Secret/vllm-secrets" in result["notes"]


def test_template_check_finds_what_the_chart_did_not_take():
    values = vh.render_helm_values(settings())
    names = vh.helm_object_names("vllm", "vllm-inference")
    docs = rendered_like_the_chart(
        values, names, container_security={"runAsNonRoot": False}, drop_readiness=True, router=True
    )
    result = vh.helm_template_problems(docs, values, names)
    assert any("securityContext is {'runAsNonRoot': False}" in p for p in result["problems"])
    assert any("no readinessProbe" in n for n in result["notes"])
    assert "the chart also creates Deployment/vllm-deployment-router" in result["notes"]
    # Names the lifecycle tasks look for.
    other = vh.helm_object_names("vllm", "other")
    problems = vh.helm_template_problems(docs, values, other)["problems"]
    assert any("no Deployment vllm-other-deployment-vllm" in p for p in problems)
    assert any("no Service vllm-other-engine-service" in p for p in problems)
    # A key reference although none is required.
    no_key = vh.render_helm_values(settings(uses_key=False, env=BASE_ENV))
    problems = vh.helm_template_problems(rendered_like_the_chart(no_key, names), no_key, names)["problems"]
    assert problems == ["the vllm container has VLLM_API_KEY although no key is required"]


def test_merge_values_is_recursive_for_maps_only():
    merged = vh.merge_values({"a": {"b": 1, "c": [1]}, "d": 1}, {"a": {"c": [2], "e": None}, "d": {"x": 1}})
    assert merged == {"a": {"b": 1, "c": [2], "e": None}, "d": {"x": 1}}
