"""k8s_plan: the one-pass variable checks of vllm_k8s and training_cluster.

The settings start from the roles' own defaults (roles/<role>/defaults/main.yml, mapped through the
``_settings`` of the plan task in roles/<role>/tasks/preflight*.yml), so the tests follow the roles when a
default or the mapping changes. The end-to-end behaviour (the role fails in preflight, naming the variable,
before anything is applied) is in tests/integration/roles/test_vllm_k8s_preflight.py and
test_training_cluster_preflight.py.
"""

from __future__ import annotations

import copy
import re
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any, Dict

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[4]
if str(ROOT / ".collections") not in sys.path:
    sys.path.insert(0, str(ROOT / ".collections"))

from ansible.errors import AnsibleFilterError  # noqa: E402

from ansible_collections.llmops.platform.plugins.filter.k8s_plan import FilterModule  # noqa: E402
from ansible_collections.llmops.platform.plugins.module_utils import k8s_plan as kp  # noqa: E402
from ansible_collections.llmops.platform.plugins.module_utils.k8s_plan import K8sPlanError  # noqa: E402

DIGEST = "sha256:" + "0123456789abcdef" * 4
SECRET = "s3cret-value-0123456789"


def task_settings(role: str, task_file: str, task_name: str) -> Dict[str, Any]:
    """The role's defaults mapped through the `_settings` of the named task: every value must be a plain
    `{{ <role>_X }}` so the test resolves it from defaults/main.yml."""
    defaults = yaml.safe_load((ROOT / "roles" / role / "defaults" / "main.yml").read_text())
    tasks = yaml.safe_load((ROOT / "roles" / role / "tasks" / task_file).read_text())
    task = next(t for t in tasks if t["name"].startswith(task_name))
    variable = re.compile(r"\{\{ (" + re.escape(role) + r"_\w+) \}\}")
    settings = {}
    for key, template in task["vars"]["_settings"].items():
        match = variable.fullmatch(template)
        assert match, f"{task_file}: _settings.{key} is not a plain variable: {template}"
        assert match.group(1) == f"{role}_{key}", f"_settings.{key} maps {match.group(1)}"
        settings[key] = copy.deepcopy(defaults[match.group(1)])
    return settings


VLLM = task_settings("vllm_k8s", "preflight.yml", "Check every variable")
LF = task_settings("training_cluster", "preflight_llamafactory.yml", "Check the LLaMA-Factory variables")
TC = task_settings("training_cluster", "preflight.yml", "Check every platform variable")


def vllm(**overrides: Any) -> Dict[str, Any]:
    base = copy.deepcopy(VLLM)
    base.update(api_key="k3y-0123456789abcdef", port_forward_state_dir="/srv/pf")
    base.update(overrides)
    return base


def lf(**overrides: Any) -> Dict[str, Any]:
    base = copy.deepcopy(LF)
    base.update(overrides)
    return base


def tc(**overrides: Any) -> Dict[str, Any]:
    base = copy.deepcopy(TC)
    base.update(image="registry.example.test/llm/llama-factory-train:0.9.5", port_forward_state_dir="/srv/pf")
    base.update(overrides)
    return base


def fails(func, settings, variable: str, reason: str = "", *args: Any) -> str:
    """The message of the K8sPlanError the settings raise; it starts with the variable and says the reason."""
    with pytest.raises(K8sPlanError) as info:
        func(settings, *args)
    message = str(info.value)
    assert message.startswith(variable), message
    assert reason in message, message
    return message


# ---- the roles' defaults pass -------------------------------------------------------------------------
def test_vllm_k8s_defaults_pass_and_plan_the_image_and_gpus() -> None:
    plan = kp.plan_vllm_k8s(vllm())
    assert plan["image"] == "vllm/vllm-openai:v0.32.0"
    assert plan["gpus"] == 1 and plan["mode"] == "manifests"
    assert plan["config"]["model"] == "/storage/models/merged-model"
    assert "k3y-0123456789abcdef" not in repr(plan)


def test_vllm_k8s_digest_pins_the_image() -> None:
    assert kp.plan_vllm_k8s(vllm(image_digest=DIGEST))["image"] == f"vllm/vllm-openai:v0.32.0@{DIGEST}"
    # latest is acceptable once a digest pins it
    assert kp.plan_vllm_k8s(vllm(image_tag="latest", image_digest=DIGEST))["image"].endswith(DIGEST)


def test_vllm_k8s_gpus_follow_the_parallelism_or_the_cpu() -> None:
    server = {"tensor_parallel_size": 2, "pipeline_parallel_size": 2}
    assert kp.plan_vllm_k8s(vllm(server=server))["gpus"] == 4
    cpu = {"device": "cpu", "kv_cache_memory_bytes": "4G"}
    assert kp.plan_vllm_k8s(vllm(server=cpu))["gpus"] == 0


def test_training_cluster_defaults_pass() -> None:
    plan = kp.plan_llamafactory(lf())
    assert plan["output_dir"] == plan["adapter_dir"] == "/storage/output/lora-adapter"
    assert plan["export_dir"] == "/storage/models/merged-model"
    assert plan["output_where"] == "training_cluster_adapter_dir"
    assert kp.plan_training_cluster(tc(), plan)["storage_mount_path"] == "/storage"


def test_every_settings_key_is_required() -> None:
    settings = vllm()
    del settings["strategy"]
    fails(kp.plan_vllm_k8s, settings, "vllm_k8s_strategy", "missing from the settings")


def test_the_training_plan_needs_the_llamafactory_plan() -> None:
    with pytest.raises(K8sPlanError, match="llamafactory_plan"):
        kp.plan_training_cluster(tc(), {})


# ---- syntax helpers ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("8", Decimal(8)),
        ("500m", Decimal("0.5")),
        ("64Gi", Decimal(64 * 2**30)),
        ("1.5G", Decimal("1.5e9")),
        ("2e3", Decimal(2000)),
        (".5", Decimal("0.5")),
        (8, Decimal(8)),
        (0.25, Decimal("0.25")),
    ],
)
def test_parse_quantity_reads_the_kubernetes_grammar(text: Any, value: Decimal) -> None:
    parsed = kp.parse_quantity(text)
    assert parsed is not None and parsed[0] == value


@pytest.mark.parametrize("text", ["64gi", "64GB", "1K", "eight", "", "1.2.3", "--1", True, None, "1 Gi"])
def test_parse_quantity_refuses_what_the_api_server_refuses(text: Any) -> None:
    assert kp.parse_quantity(text) is None


@pytest.mark.parametrize(
    "image",
    [
        "registry.example.test/llm/llama-factory-train:0.9.5",
        "localhost:5000/train:1",
        "curlimages/curl:8.11.1",
        f"ghcr.io/mlflow/mlflow@{DIGEST}",
        f"registry.internal:5000/a/b:1.0@{DIGEST}",
        "[::1]:5000/x/y:v1",
    ],
)
def test_pinned_image_references_pass(image: str) -> None:
    kp.check_image(image, "img")


@pytest.mark.parametrize(
    ("image", "reason"),
    [
        ("registry.example.test/llm/train", "no tag means latest"),
        ("ghcr.io/mlflow/mlflow:latest", "not pinned"),
        ("Vllm/train:1", "not an image reference"),
        ("registry.example.test/LLM/train:1", "lowercase"),
        ("x/train@sha256:abc", "64 lowercase hex"),
        (f"x/train@{DIGEST.upper()}", "64 lowercase hex"),
        ("x/train:1 2", "not an image reference"),
        ("x//train:1", "not an image reference"),
    ],
)
def test_bad_image_references_fail(image: str, reason: str) -> None:
    with pytest.raises(K8sPlanError, match=re.escape(reason)):
        kp.check_image(image, "img")


@pytest.mark.parametrize("key", ["team", "example.com/team", "app.kubernetes.io/name", "a_b.c-d", "x" * 63])
def test_label_keys(key: str) -> None:
    assert kp.check_label_key(key, "l") == key


@pytest.mark.parametrize("key", ["-team", "team-", "a/b/c", "Example.com/x", "cost center", "x" * 64, "/x", 5])
def test_bad_label_keys(key: Any) -> None:
    with pytest.raises(K8sPlanError):
        kp.check_label_key(key, "l")


@pytest.mark.parametrize("value", ["", "true", "v1.2", "A_b-c"])
def test_label_values(value: str) -> None:
    kp.check_label_value(value, "l")


@pytest.mark.parametrize("value", ["ml/platform", "-x", "x" * 64, True, 1, "a b"])
def test_bad_label_values(value: Any) -> None:
    with pytest.raises(K8sPlanError):
        kp.check_label_value(value, "l")


@pytest.mark.parametrize(
    ("value", "dns1035", "ok"),
    [("vllm-inference", True, True), ("8b-chat", True, False), ("8b-chat", False, True), ("a-", False, False)],
)
def test_dns_labels(value: str, dns1035: bool, ok: bool) -> None:
    if ok:
        kp.check_dns_label(value, "n", dns1035=dns1035)
    else:
        with pytest.raises(K8sPlanError, match="DNS-1"):
            kp.check_dns_label(value, "n", dns1035=dns1035)


@pytest.mark.parametrize(("value", "ok"), [("a.b-c.d", True), ("a..b", False), ("a.-b", False), ("A", False)])
def test_dns_subdomains(value: str, ok: bool) -> None:
    if ok:
        kp.check_dns_subdomain(value, "n")
    else:
        with pytest.raises(K8sPlanError, match="subdomain"):
            kp.check_dns_subdomain(value, "n")


@pytest.mark.parametrize(
    ("name", "value", "secret"),
    [
        ("HF_TOKEN", "x", True),
        ("WANDB_API_KEY", "x", True),
        ("AWS_SECRET_ACCESS_KEY", "x", True),
        ("DB_PASSWORD", "x", True),
        ("RESULTS_DB", "postgresql://u:p@db/x", True),
        ("NOTE", "hf_" + "a" * 30, True),
        ("TOKENIZERS_PARALLELISM", "false", False),
        ("MAX_NUM_BATCHED_TOKENS", "8192", False),
        ("MLFLOW_TRACKING_PASSWORD_FILE", "/run/secrets/pw", False),
        ("HF_TOKEN", "", False),
        ("MLFLOW_TRACKING_URI", "http://mlflow:5000", False),
        ("OPENAI_KEY", "x", True),
        ("DB_PASS", "x", True),
        ("RESULTS_JDBC", "jdbc:postgresql://u:p@db/x", True),
        ("RESULTS_DB", "postgresql://db/x?user=u&password=p", True),
        ("CONN", "DefaultEndpointsProtocol=https;AccountName=a;AccountKey=abc==", True),
        ("HEADERS", "Authorization: Bearer abcdefgh12345", True),
        ("IDENTITY", "-----BEGIN OPENSSH PRIVATE KEY-----\nx\n-----END OPENSSH PRIVATE KEY-----", True),
        ("REMOTE", "glpat-" + "a" * 20, True),
        ("KEY", "x", False),  # a bare KEY names nothing
        ("TOKENIZER_KEY_FILE", "/x", False),
        ("VLLM_LOGGING_LEVEL", "INFO", False),
        ("URL", "https://example.test/search?q=token", False),
    ],
)
def test_secret_reason(name: str, value: str, secret: bool) -> None:
    assert bool(kp.secret_reason(name, value)) is secret


def test_environment_never_echoes_values() -> None:
    for env in ({"HF_TOKEN": SECRET}, {"X": f"https://u:{SECRET}@h/"}, {"A B": SECRET}):
        with pytest.raises(K8sPlanError) as info:
            kp.check_environment(env, "env", {})
        assert SECRET not in str(info.value)


def test_resources_follow_the_api_server() -> None:
    gpu = "nvidia.com/gpu"
    ok = {"requests": {"cpu": "500m", "memory": "1Gi", "example.com/fpga": 1}, "limits": {"example.com/fpga": "1"}}
    kp.check_resources(ok, "r", gpu, "gpus")
    cases = [
        ({"requests": {"memory": "2Gi"}, "limits": {"memory": "1Gi"}}, "more than the limit"),
        ({"requests": {"example.com/fpga": "1"}}, "limit set"),
        ({"requests": {"example.com/fpga": "1"}, "limits": {"example.com/fpga": "2"}}, "must equal"),
        ({"limits": {"example.com/fpga": "1.5"}}, "whole number"),
        ({"limits": {gpu: "1"}}, "set by the role from gpus"),
        ({"limits": {"gpu": "1"}}, "not a container resource"),
        ({"limits": {"memory": "512m"}}, "milli"),
        ({"limits": {"memory": "-1Gi"}}, "negative"),
        ({"limit": {"memory": "1Gi"}}, "unknown key"),
        ({"limits": ["memory"]}, "mapping"),
    ]
    for spec, reason in cases:
        with pytest.raises(K8sPlanError, match=re.escape(reason)):
            kp.check_resources(spec, "r", gpu, "gpus")


def test_tolerations_follow_the_api_server() -> None:
    kp.check_tolerations(
        [{"key": "k", "operator": "Exists"}, {"key": "k", "operator": "Equal", "value": "v", "effect": "NoExecute",
                                              "tolerationSeconds": 30}],
        "t",
    )  # fmt: skip
    cases = [
        ([{"operator": "Exists"}], "t[0].key"),  # tolerates every taint
        ([{"operator": "Exists", "effect": "NoSchedule"}], "t[0].key"),
        (
            [{"key": "k", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": -1}],
            "t[0].tolerationSeconds",
        ),
        ([{"key": "k", "operator": "Exists", "value": "v"}], "t[0].value"),
        ([{"operator": "Equal", "value": "v"}], "t[0].operator"),
        ([{"key": "k", "operator": "Exists", "tolerationSeconds": 5}], "t[0].tolerationSeconds"),
        ([{"key": "k", "operator": "In"}], "t[0].operator"),
        ([{"key": "k", "operator": "Exists", "effect": "NoRun"}], "t[0].effect"),
        ([{"key": "k", "tolerate": True}], "t[0].tolerate"),
    ]
    for tolerations, where in cases:
        with pytest.raises(K8sPlanError, match=re.escape(where)):
            kp.check_tolerations(tolerations, "t")


def test_strategies_follow_the_api_server() -> None:
    kp.check_strategy({"type": "Recreate"}, "s")
    kp.check_strategy({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}}, "s")
    cases = [
        ({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}}, "may not be 0"),
        ({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "00%", "maxUnavailable": 0}}, "may not be 0"),
        ({"type": "Recreate", "rollingUpdate": {}}, "Recreate"),
        ({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "150%"}}, "100%"),
        ({"type": "Rolling"}, "must be one of"),
    ]
    for strategy, reason in cases:
        with pytest.raises(K8sPlanError, match=re.escape(reason)):
            kp.check_strategy(strategy, "s")


def test_mount_points() -> None:
    assert kp.check_mount_point("/storage/", "m", kp.VLLM_POD_MOUNTS) == "/storage"
    assert kp.check_mount_point("/etc/llama-factory", "m", kp.TRAINING_POD_MOUNTS) == "/etc/llama-factory"
    for path, reason in (("/usr/local", "system"), ("/", "system"), ("/tmp", "system"), ("/home/vllm/x", "own mount"),
                         ("storage", "absolute"), ("/a/../b", "'..'"), ("/etc/ssl/certs", "inside /etc/ssl"),
                         ("/etc/resolv.conf", "every program")):  # fmt: skip
        with pytest.raises(K8sPlanError, match=re.escape(reason)):
            kp.check_mount_point(path, "m", kp.VLLM_POD_MOUNTS)


# ---- vllm_k8s -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("overrides", "variable", "reason"),
    [
        ({"name": "8b-chat"}, "vllm_k8s_name", "DNS-1035"),
        ({"namespace": "kube-system"}, "vllm_k8s_namespace", "reserved"),
        ({"replicas": "2"}, "vllm_k8s_replicas", "integer"),
        ({"replicas": True}, "vllm_k8s_replicas", "integer"),
        ({"labels": {"app.kubernetes.io/name": "x"}}, "vllm_k8s_labels.app.kubernetes.io/name", "set by the role"),
        ({"network_policy_namespace_labels": [{}]}, "vllm_k8s_network_policy_namespace_labels[0]", "EVERY"),
        ({"network_policy_namespace_labels": {"a": "b"}}, "vllm_k8s_network_policy_namespace_labels", "list"),
        ({"pdb_max_unavailable": "0%"}, "vllm_k8s_pdb_max_unavailable", "drain"),
        ({"pdb_max_unavailable": "half"}, "vllm_k8s_pdb_max_unavailable", "percentage"),
        ({"image_repository": "vllm/vllm-openai:v1"}, "vllm_k8s_image_repository", "tag"),
        ({"image_digest": "sha512:abc"}, "vllm_k8s_image_digest", "sha256"),
        ({"image_tag": "latest"}, "vllm_k8s_image_tag", "vllm_k8s_image_digest"),
        ({"image_tag": 0.32}, "vllm_k8s_image_tag", "quote"),
        ({"command": []}, "vllm_k8s_command", "empty"),
        ({"model_path": "/srv/model"}, "vllm_k8s_model_path", "not inside"),
        ({"model_path": "/storage"}, "vllm_k8s_model_path", "not inside"),
        ({"model_path": "org/model"}, "vllm_k8s_model_path", "HF_HUB_OFFLINE"),
        ({"server": {"model": "/srv/m"}}, "vllm_k8s_server.model", "not inside"),
        ({"server": {"host": "127.0.0.1"}}, "vllm_k8s_server.host", "0.0.0.0"),
        ({"mode": "helm", "server": {"host": "::"}}, "vllm_k8s_server.host", "chart"),
        # Stopping: grace must cover the preStop drain and vLLM's own shutdown_timeout.
        ({"termination_grace_seconds": 20}, "vllm_k8s_termination_grace_seconds", "not longer than"),
        (
            {"termination_grace_seconds": 60, "server": {"shutdown_timeout": 30}},
            "vllm_k8s_termination_grace_seconds",
            "kills vLLM before it has drained",
        ),
        ({"termination_grace_seconds": 0}, "vllm_k8s_termination_grace_seconds", "at least 1"),
        ({"drain_seconds": -5}, "vllm_k8s_drain_seconds", "at least 0"),
        ({"drain_seconds": "30s"}, "vllm_k8s_drain_seconds", "integer"),
        # Pod security.
        ({"pod_security_level": "strict"}, "vllm_k8s_pod_security_level", "one of"),
        ({"pod_security_version": "1.33"}, "vllm_k8s_pod_security_version", "v1.33"),
        ({"mode": "helm"}, "vllm_k8s_pod_security_level", "cannot check"),
        ({"gpus": 1, "server": {"tensor_parallel_size": 2}}, "vllm_k8s_gpus", "one GPU per worker"),
        ({"wait_timeout": 100}, "vllm_k8s_wait_timeout", "gives up"),
        ({"liveness_probe_timeout": 21}, "vllm_k8s_liveness_probe_timeout", "must not exceed"),
        ({"liveness_probe_timeout": 1}, "vllm_k8s_liveness_probe_timeout", "at least 2 s"),
        ({"liveness_python": "python3 -c x"}, "vllm_k8s_liveness_python", "argv[0]"),
        ({"liveness_python": ""}, "vllm_k8s_liveness_python", "must not be empty"),
        ({"wait_for_model": "maybe"}, "vllm_k8s_wait_for_model", "boolean"),
        ({"environment": {"OMP_NUM_THREADS": 8}}, "vllm_k8s_environment.OMP_NUM_THREADS", "type int"),
        ({"environment": {"VLLM_API_KEY": "x"}}, "vllm_k8s_environment.VLLM_API_KEY", "Secret"),
        ({"api_key": "a key"}, "vllm_k8s_api_key", "HTTP header"),
        ({"api_key": "", "api_key_secret_name": ""}, "vllm_k8s_api_key", "Ansible Vault"),
        ({"api_key_secret_key": "a/b"}, "vllm_k8s_api_key_secret_key", "Secret key"),
        ({"pvc_mount_path": "/dev/shm"}, "vllm_k8s_pvc_mount_path", "system"),
        ({"service_monitor_interval": "soon"}, "vllm_k8s_service_monitor_interval", "duration"),
        ({"helm_release": "Vllm"}, "vllm_k8s_helm_release", "DNS-1035"),
        ({"helm_chart_ref": "vllm-stack"}, "vllm_k8s_helm_chart_ref", "<repository>/<chart>"),
        ({"helm_chart_repo_url": "https://u:p@charts/x"}, "vllm_k8s_helm_chart_repo_url", "credentials"),
        ({"helm_request_memory": 32}, "vllm_k8s_helm_request_memory", "quantity string"),
        ({"mode": "helm", "name": "v" * 45}, "vllm_k8s_name", "engine-service"),
        ({"mode": "helm", "pvc_mount_path": "/data", "model_path": "/data/m"}, "vllm_k8s_pvc_mount_path", "/data"),
        ({"apply": "perhaps"}, "vllm_k8s_apply", "boolean"),
    ],
)
def test_vllm_k8s_failures_name_the_variable(overrides: Dict[str, Any], variable: str, reason: str) -> None:
    fails(kp.plan_vllm_k8s, vllm(**overrides), variable, reason)


def test_vllm_k8s_never_echoes_the_api_key() -> None:
    message = fails(kp.plan_vllm_k8s, vllm(api_key=SECRET + " x"), "vllm_k8s_api_key")
    assert SECRET not in message
    message = fails(kp.plan_vllm_k8s, vllm(api_key=SECRET + "\n"), "vllm_k8s_api_key", "control characters")
    assert SECRET not in message


def test_vllm_k8s_hugging_face_id_when_the_hub_is_online() -> None:
    plan = kp.plan_vllm_k8s(vllm(model_path="org/model", environment={"HF_HUB_OFFLINE": "0"}))
    assert plan["config"]["model"] == "org/model"


# ---- training_cluster: LLaMA-Factory ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("overrides", "variable", "reason"),
    [
        ({"merged_model_dir": "/storage/output/lora-adapter"}, "training_cluster_merged_model_dir", "is the training"),
        ({"adapter_dir": "/storage/models"}, "training_cluster_merged_model_dir", "is inside the training output"),
        ({"merged_model_dir": "/storage/output"}, "training_cluster_merged_model_dir", "contains the training"),
        ({"adapter_dir": "/storage/models/merged-model/"}, "training_cluster_merged_model_dir", "is the training"),
        ({"train_extra": {"output_dir": "/storage/x"}}, "training_cluster_train_extra.output_dir", "merge reads"),
        (
            {
                "train_extra": {"output_dir": "/storage/models"},
                "merge_extra": {"adapter_name_or_path": "/storage/models"},
            },
            "training_cluster_train_extra.output_dir",
            "overwrite each other",
        ),
        ({"merge_extra": {"export_dir": "/storage/output"}}, "training_cluster_merge_extra.export_dir", "contains"),
        ({"dataset_dir": "/storage/models/merged-model/d"}, "training_cluster_merged_model_dir", "datasets"),
        ({"base_model": "/storage/output/lora-adapter/base"}, "training_cluster_adapter_dir", "base model"),
        ({"train_extra": {"a b": 1}}, "training_cluster_train_extra['a b']", "bare YAML key"),
        ({"dataset": ["a,b"]}, "training_cluster_dataset[0]", "one dataset"),
        ({"dataset": "alpaca"}, "training_cluster_dataset", "list"),
        ({"adapter_dir": "output"}, "training_cluster_adapter_dir", "absolute"),
        ({"learning_rate": "nan"}, "training_cluster_learning_rate", "number"),
        ({"learning_rate": 1}, "training_cluster_learning_rate", "between 0 and 1"),
        ({"lora_dropout": 1.0}, "training_cluster_lora_dropout", "below 1"),
        ({"max_steps": 0}, "training_cluster_max_steps", "at least 1"),
        ({"cutoff_len": True}, "training_cluster_cutoff_len", "integer"),
        ({"use_cpu": True, "precision": "fp16"}, "training_cluster_use_cpu", "GPU"),
        ({"run_name": "a\nb"}, "training_cluster_run_name", "control"),
    ],
)
def test_llamafactory_failures_name_the_variable(overrides: Dict[str, Any], variable: str, reason: str) -> None:
    fails(kp.plan_llamafactory, lf(**overrides), variable, reason)


def test_llamafactory_accepts_strings_from_extra_vars() -> None:
    """`-e name=value` gives strings: integer and number strings count."""
    kp.plan_llamafactory(lf(lora_rank="16", learning_rate="0.0002", max_steps="100", use_cpu="true"))


# ---- training_cluster: the platform ---------------------------------------------------------------------
def tc_fails(variable: str, reason: str = "", lf_overrides: Any = None, **overrides: Any) -> str:
    return fails(
        kp.plan_training_cluster, tc(**overrides), variable, reason, kp.plan_llamafactory(lf(**(lf_overrides or {})))
    )


@pytest.mark.parametrize(
    ("overrides", "variable", "reason"),
    [
        ({"image": ""}, "training_cluster_image", "Dockerfile.train"),
        ({"image": "x/train"}, "training_cluster_image", "not pinned"),
        ({"image_pull_secrets": "regcred"}, "training_cluster_image_pull_secrets", "list"),
        ({"namespace": "kube-system"}, "training_cluster_namespace", "reserved"),
        ({"webui_name": "1ui"}, "training_cluster_webui_name", "DNS-1035"),
        ({"mlflow_name": "llama-factory-webui"}, "training_cluster_mlflow_name", "overwrite each other"),
        ({"merge_job_name": "llama-factory-train"}, "training_cluster_merge_job_name", "deletes"),
        ({"mlflow_credentials_secret_name": "hf-token"}, "training_cluster_mlflow_credentials_secret_name", "replaces"),
        ({"storage_size": "500m"}, "training_cluster_storage_size", "milli"),
        ({"storage_size": 500}, "training_cluster_storage_size", "quantity string"),
        (
            {"storage_mode": "static_nfs", "nfs_server": "nfs://x", "nfs_path": "/e"},
            "training_cluster_nfs_server",
            "host",
        ),
        ({"storage_mount_path": "/"}, "training_cluster_storage_mount_path", "system"),
        ({"config_mount_path": "/storage/config"}, "training_cluster_config_mount_path", "overlaps"),
        ({"mlflow_storage_path": "/storage/ml'flow"}, "training_cluster_mlflow_storage_path", "unquoted"),
        ({"mlflow_storage_path": "/var/mlflow"}, "training_cluster_mlflow_storage_path", "inside"),
        ({"mlflow_storage_path": "/storage/output"}, "training_cluster_mlflow_storage_path", "overlaps"),
        ({"mlflow_tracking_uri": "https://a:b@m"}, "training_cluster_mlflow_tracking_uri", "credentials"),
        ({"mlflow_tracking_uri": "mlflow:5000"}, "training_cluster_mlflow_tracking_uri", "http(s)"),
        ({"mlflow_tracking_username": "u"}, "training_cluster_mlflow_tracking_password", "together"),
        ({"mlflow_backend": "database"}, "training_cluster_mlflow_database_uri", "empty"),
        ({"mlflow_allowed_hosts": ["*"]}, "training_cluster_mlflow_allowed_hosts[0]", "DNS rebinding"),
        ({"mlflow_allowed_hosts": ["a.example,b.example"]}, "training_cluster_mlflow_allowed_hosts[0]", "host name"),
        ({"mlflow_allowed_hosts": "mlflow.example"}, "training_cluster_mlflow_allowed_hosts", "must be a list"),
        ({"mlflow_database_uri": "not a uri"}, "training_cluster_mlflow_database_uri", "database URI"),
        ({"mlflow_enabled": False}, "training_cluster_mlflow_enabled", "report_to"),
        (
            {"environment": {"HUGGING_FACE_HUB_TOKEN": "x"}},
            "training_cluster_environment.HUGGING_FACE_HUB_TOKEN",
            "Secret",
        ),
        ({"environment": {"DB_PASSWORD": "x"}}, "training_cluster_environment.DB_PASSWORD", "credential"),
        ({"train_resources": {"limits": {"nvidia.com/gpu": 1}}}, "training_cluster_train_resources", "train_gpus"),
        ({"mlflow_resources": {"limits": {"nvidia.com/gpu": 1}}}, "training_cluster_mlflow_resources", "no GPU"),
        ({"gpu_resource": "gpu"}, "training_cluster_gpu_resource", "domain-qualified"),
        ({"port_forward_address": "0.0.0.0"}, "training_cluster_port_forward_address", "loopback"),
        ({"port_forward_address": "127.0.0.1,10.0.0.5"}, "training_cluster_port_forward_address", "one loopback"),
        ({"port_forward_address": "::1"}, "training_cluster_port_forward_address", "IPv6"),
        ({"port_forward_mlflow_port": 7860}, "training_cluster_port_forward_mlflow_port", "cannot bind"),
        ({"port_forward_state": "running"}, "training_cluster_port_forward_state", "one of"),
        ({"job_poll_interval": 120, "merge_timeout": 60}, "training_cluster_job_poll_interval", "merge_timeout"),
        ({"job_ttl_seconds": -1}, "training_cluster_job_ttl_seconds", "at least 0"),
        ({"hf_token": "hf_x y"}, "training_cluster_hf_token", "HTTP header"),
        ({"labels": {"app.kubernetes.io/part-of": "x"}}, "training_cluster_labels", "set by the role"),
        # One ServiceAccount per workload, named like it: names must not collide across kinds.
        ({"webui_name": "llama-factory-train"}, "training_cluster_train_job_name", "one ServiceAccount"),
        ({"mlflow_name": "default-deny-ingress"}, "training_cluster_mlflow_name", "default-deny"),
        # Pod security.
        ({"pod_security_level": "none"}, "training_cluster_pod_security_level", "one of"),
        ({"pod_security_version": "v2.0"}, "training_cluster_pod_security_version", "latest or"),
        # Who may connect: nothing that opens a port to everyone, nothing a real API server refuses.
        (
            {"mlflow_allowed_sources": [{"namespaceSelector": {}}]},
            "training_cluster_mlflow_allowed_sources[0].namespaceSelector",
            "EVERY namespace",
        ),
        (
            {"webui_allowed_sources": [{"namespaceSelector": {"matchLabels": {}}, "podSelector": {}}]},
            "training_cluster_webui_allowed_sources[0].namespaceSelector",
            "EVERY namespace",
        ),
        (
            {"webui_allowed_sources": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]},
            "training_cluster_webui_allowed_sources[0].ipBlock.cidr",
            "every address",
        ),
        (
            {"webui_allowed_sources": [{"ipBlock": {"cidr": "10.0.0.1/8"}}]},
            "training_cluster_webui_allowed_sources[0].ipBlock.cidr",
            "host bits",
        ),
        (
            {"webui_allowed_sources": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["192.168.0.0/16"]}}]},
            "training_cluster_webui_allowed_sources[0].ipBlock.except[0]",
            "strictly inside",
        ),
        (
            {"mlflow_allowed_sources": [{"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}]},
            "training_cluster_mlflow_allowed_sources[0]",
            "combines ipBlock",
        ),
        (
            {"mlflow_allowed_sources": [{"namespaceSelector": {"matchExpressions": []}}]},
            "training_cluster_mlflow_allowed_sources[0].namespaceSelector.matchExpressions",
            "matchLabels",
        ),
        ({"mlflow_allowed_sources": [{}]}, "training_cluster_mlflow_allowed_sources[0]", "is empty"),
        (
            {"mlflow_allowed_sources": [{"namespace": "ds"}]},
            "training_cluster_mlflow_allowed_sources[0].namespace",
            "peer",
        ),
        ({"network_policy": "yes please"}, "training_cluster_network_policy", "boolean"),
    ],
)
def test_training_cluster_failures_name_the_variable(overrides: Dict[str, Any], variable: str, reason: str) -> None:
    tc_fails(variable, reason, **overrides)


def test_training_outputs_must_be_on_the_shared_volume() -> None:
    tc_fails("training_cluster_adapter_dir", "shared volume", lf_overrides={"adapter_dir": "/out/adapter"})
    tc_fails("training_cluster_merged_model_dir", "shared volume", lf_overrides={"merged_model_dir": "/models/m"})
    extra = {"train_extra": {"output_dir": "/out/a"}, "merge_extra": {"adapter_name_or_path": "/out/a"}}
    tc_fails("training_cluster_train_extra.output_dir", "shared volume", lf_overrides=extra)


def test_inputs_may_come_with_the_image() -> None:
    plan = kp.plan_llamafactory(lf(base_model="/opt/models/base", dataset_dir="/opt/data"))
    kp.plan_training_cluster(tc(), plan)


def test_disabled_components_free_their_names_and_ports() -> None:
    plan = kp.plan_llamafactory(lf())
    kp.plan_training_cluster(tc(webui_enabled=False, webui_name="vllm-inference", port_forward_webui_port=8000), plan)


def test_training_cluster_never_echoes_secrets() -> None:
    plan = kp.plan_llamafactory(lf())
    for overrides in (
        {"hf_token": SECRET + " x"},
        {"mlflow_tracking_password": SECRET + "\n"},
        {"mlflow_database_uri": SECRET},
        {"mlflow_tracking_uri": f"https://u:{SECRET}@m"},
        {"environment": {"X": f"postgresql://u:{SECRET}@db/x"}},
    ):
        with pytest.raises(K8sPlanError) as info:
            kp.plan_training_cluster(tc(**overrides), plan)
        assert SECRET not in str(info.value), overrides


def test_allowed_sources_in_kubernetes_shape_pass() -> None:
    sources = [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "data-science"}}},
        {"namespaceSelector": {"matchLabels": {"team": "ml"}}, "podSelector": {"matchLabels": {"app": "notebook"}}},
        {"podSelector": {"matchLabels": {"app": "batch-eval"}}},
        {"ipBlock": {"cidr": "10.20.0.0/16", "except": ["10.20.5.0/24"]}},
        {"ipBlock": {"cidr": "fd00::/64"}},
        {"ipBlock": {"cidr": "fc00::/7"}},
        {"ipBlock": {"cidr": "10.0.0.0/8"}},
        {"namespaceSelector": {"matchLabels": {"team": "ml"}}, "podSelector": {}},
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "llm-training"}},
            "podSelector": {"matchLabels": {"app": "notebook"}},
        },
    ]
    kp.plan_training_cluster(
        tc(webui_allowed_sources=sources, mlflow_allowed_sources=sources), kp.plan_llamafactory(lf())
    )


# ---- values of the right type that break the platform (issue 10 item 9) ------------------------------------
@pytest.mark.parametrize(
    ("overrides", "variable", "reason"),
    [
        ({"namespace": "default"}, "vllm_k8s_namespace", "default namespace"),
        ({"name": "default"}, "vllm_k8s_name", "ServiceAccount"),
        ({"render_dir": "/etc"}, "vllm_k8s_render_dir", "system directory"),
        ({"command": ["vllm serve"]}, "vllm_k8s_command[0]", "whitespace"),
        ({"image_tag": "nightly"}, "vllm_k8s_image_tag", "moving tag"),
        ({"service_monitor_interval": "30s1m"}, "vllm_k8s_service_monitor_interval", "Prometheus duration"),
        ({"pdb_max_unavailable": "00%"}, "vllm_k8s_pdb_max_unavailable", "block every node drain"),
        ({"environment": {"WATCHDOG_URL": "http://127.0.0.1:9"}}, "vllm_k8s_environment.WATCHDOG_URL", "liveness"),
        ({"environment": {"VLLM_CACHE_ROOT": "/storage/c"}}, "vllm_k8s_environment.VLLM_CACHE_ROOT", "read-only"),
        ({"environment": {"HOME": "/root"}}, "vllm_k8s_environment.HOME", "root file system"),
        (
            {"server": {"extra_args": ["--otlp-traces-endpoint", "https://o.test/v1?api_key=abc"]}},
            "vllm_k8s_server.extra_args[1]",
            "key or token parameter",
        ),
    ],
)
def test_vllm_k8s_refuses_what_breaks_the_platform(overrides: Dict[str, Any], variable: str, reason: str) -> None:
    fails(kp.plan_vllm_k8s, vllm(**overrides), variable, reason)


def test_vllm_k8s_writable_caches_and_an_own_default_namespace_pass() -> None:
    kp.plan_vllm_k8s(vllm(environment={"VLLM_CACHE_ROOT": "/tmp/vllm", "HF_HOME": "/home/vllm/hf"}))
    kp.plan_vllm_k8s(vllm(pvc_read_only=False, environment={"VLLM_CACHE_ROOT": "/storage/cache"}))
    kp.plan_vllm_k8s(vllm(namespace="default", create_namespace=False, liveness_completion=False,
                          environment={"WATCHDOG_URL": "x"}))  # fmt: skip


@pytest.mark.parametrize(
    ("overrides", "variable", "reason"),
    [
        ({"adapter_dir": "/storage/data/lora"}, "training_cluster_adapter_dir", "inside the datasets directory"),
        (
            {"train_extra": {"dataset_dir": "/storage/models/merged-model"}},
            "training_cluster_train_extra.dataset_dir",
            "holds the datasets",
        ),
        (
            {"merge_extra": {"model_name_or_path": "/storage/models/merged-model/"}},
            "training_cluster_merge_extra.model_name_or_path",
            "overwrites",
        ),
        (
            {"train_extra": {"model_name_or_path": "/storage/models/base"}},
            "training_cluster_train_extra.model_name_or_path",
            "fits only the model",
        ),
        ({"train_extra": {"hf_hub_token": "x"}}, "training_cluster_train_extra.hf_hub_token", "ConfigMap"),
    ],
)
def test_llamafactory_refuses_what_breaks_the_platform(overrides: Dict[str, Any], variable: str, reason: str) -> None:
    fails(kp.plan_llamafactory, lf(**overrides), variable, reason)


def test_llamafactory_same_model_for_training_and_merge_passes() -> None:
    model = {"model_name_or_path": "/storage/models/base"}
    plan = kp.plan_llamafactory(lf(train_extra=model, merge_extra=model))
    assert plan["dataset_where"] == "training_cluster_dataset_dir"


@pytest.mark.parametrize(
    ("overrides", "variable", "reason"),
    [
        ({"namespace": "default"}, "training_cluster_namespace", "default namespace"),
        ({"mlflow_name": "default"}, "training_cluster_mlflow_name", "ServiceAccount"),
        ({"image_pull_secrets": ["hf-token"]}, "training_cluster_image_pull_secrets[0]", "dockerconfigjson"),
        ({"webui_allowed_sources": [{"podSelector": {}}]}, "training_cluster_webui_allowed_sources[0]", "EVERY pod"),
        (
            {
                "mlflow_allowed_sources": [
                    {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "llm-training"}}}
                ]
            },
            "training_cluster_mlflow_allowed_sources[0].namespaceSelector",
            "EVERY pod",
        ),
        (
            {"webui_allowed_sources": [{"ipBlock": {"cidr": "0.0.0.0/1"}}]},
            "training_cluster_webui_allowed_sources",
            "most",
        ),
        ({"tolerations": [{"operator": "Exists"}]}, "training_cluster_tolerations[0].key", "every taint"),
        ({"environment": {"GRADIO_SERVER_PORT": "8080"}}, "training_cluster_environment.GRADIO_SERVER_PORT", "WebUI"),
        ({"environment": {"DB_PASS": "x"}}, "training_cluster_environment.DB_PASS", "credential"),
        ({"job_ttl_seconds": 0}, "training_cluster_job_ttl_seconds", "TTL controller"),
        ({"job_pending_timeout": 0}, "training_cluster_job_pending_timeout", "Pending"),
        ({"port_forward_state_dir": "/tmp"}, "training_cluster_port_forward_state_dir", "system directory"),
        ({"kubectl_binary": "kubectl --context x"}, "training_cluster_kubectl_binary", "whitespace"),
        ({"mlflow_image": "ghcr.io/mlflow/mlflow:main"}, "training_cluster_mlflow_image", "moving tag"),
        ({"mlflow_tracking_uri": "https://m.test/?access_token=x"}, "training_cluster_mlflow_tracking_uri", "token"),
        (
            {"storage_mode": "static_nfs", "nfs_server": "localhost", "nfs_path": "/x"},
            "training_cluster_nfs_server",
            "node itself",
        ),
        (
            {"storage_mode": "static_nfs", "nfs_server": "nfs1", "nfs_path": "/x", "pv_reclaim_policy": "Delete"},
            "training_cluster_pv_reclaim_policy",
            "Retain",
        ),
        ({"nfs_mount_options": ["hard", "ro"]}, "training_cluster_nfs_mount_options[1]", "read-only"),
    ],
)
def test_training_cluster_refuses_what_breaks_the_platform(
    overrides: Dict[str, Any], variable: str, reason: str
) -> None:
    fails(kp.plan_training_cluster, tc(**overrides), variable, reason, kp.plan_llamafactory(lf()))


def test_training_cluster_default_namespace_without_changing_it_passes() -> None:
    plan = kp.plan_llamafactory(lf())
    kp.plan_training_cluster(tc(namespace="default", create_namespace=False, network_policy=False), plan)
    kp.plan_training_cluster(tc(job_ttl_seconds=60, job_pending_timeout=60, render_dir="out/manifests"), plan)


# ---- stopping the vLLM pod -------------------------------------------------------------------------------
def test_vllm_termination_grace_is_derived_from_the_drain_and_the_shutdown() -> None:
    plan = kp.plan_vllm_k8s(vllm())
    assert (plan["drain_seconds"], plan["termination_grace_seconds"]) == (30, 30 + kp.VLLM_EXIT_ALLOWANCE)
    plan = kp.plan_vllm_k8s(vllm(drain_seconds=10, server={"shutdown_timeout": 45}))
    assert plan["termination_grace_seconds"] == 10 + 45 + kp.VLLM_EXIT_ALLOWANCE
    plan = kp.plan_vllm_k8s(vllm(drain_seconds=0, termination_grace_seconds=5))
    assert (plan["drain_seconds"], plan["termination_grace_seconds"]) == (0, 5)
    # A set grace must exceed drain + shutdown_timeout, and only that.
    assert kp.plan_vllm_k8s(vllm(termination_grace_seconds=31))["termination_grace_seconds"] == 31
    fails(kp.plan_vllm_k8s, vllm(termination_grace_seconds=30), "vllm_k8s_termination_grace_seconds", "not longer")


# ---- pod security ----------------------------------------------------------------------------------------
def test_pod_security_labels_are_one_set_for_both_roles() -> None:
    assert kp.pod_security_labels("restricted", "latest") == {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest",
        "pod-security.kubernetes.io/audit": "restricted",
        "pod-security.kubernetes.io/warn": "restricted",
    }
    labels = kp.pod_security_labels("baseline", "v1.33")
    assert labels["pod-security.kubernetes.io/enforce"] == "baseline"
    assert labels["pod-security.kubernetes.io/enforce-version"] == "v1.33"
    assert labels["pod-security.kubernetes.io/warn"] == "restricted", "warn shows what keeps it from restricted"
    for key, value in labels.items():
        kp.check_label_key(key, "x")
        kp.check_label_value(value, "x")
    # Both roles default to the same level and version, and helm mode may lower it.
    assert (VLLM["pod_security_level"], VLLM["pod_security_version"]) == (
        TC["pod_security_level"],
        TC["pod_security_version"],
    )
    kp.plan_vllm_k8s(vllm(mode="helm", pod_security_level="baseline"))
    kp.plan_vllm_k8s(vllm(mode="helm", create_namespace=False))


def test_the_default_deny_name_is_the_roles() -> None:
    variables = yaml.safe_load((ROOT / "roles" / "training_cluster" / "vars" / "main.yml").read_text())
    assert variables["_training_cluster_default_deny"] == kp.DEFAULT_DENY_POLICY


# ---- the filters ----------------------------------------------------------------------------------------
def test_filters_are_registered_and_raise_filter_errors() -> None:
    filters = FilterModule().filters()
    assert set(filters) == {"vllm_k8s_plan", "llamafactory_plan", "training_cluster_plan", "pod_security_labels"}
    assert filters["pod_security_labels"]("privileged")["pod-security.kubernetes.io/enforce-version"] == "latest"
    with pytest.raises(AnsibleFilterError, match=r"^pod_security_level"):
        filters["pod_security_labels"]("strict")
    assert filters["vllm_k8s_plan"](vllm())["image"] == "vllm/vllm-openai:v0.32.0"
    with pytest.raises(AnsibleFilterError, match=r"^vllm_k8s_name"):
        filters["vllm_k8s_plan"](vllm(name="8b"))
    with pytest.raises(AnsibleFilterError, match="expects a mapping"):
        filters["llamafactory_plan"]([])
    plan = filters["llamafactory_plan"](lf())
    with pytest.raises(AnsibleFilterError, match=r"^training_cluster_port_forward_address"):
        filters["training_cluster_plan"](tc(port_forward_address="0.0.0.0"), plan)


# ---- training_cluster and vllm_k8s in one namespace: no mirrored settings, the objects training_cluster reports --
def training_objects(**overrides: Any) -> list:
    return kp.plan_training_cluster(tc(**overrides), kp.plan_llamafactory(lf()))["objects"]


def test_training_cluster_reports_the_objects_it_owns() -> None:
    objects = {(o["kind"], o["name"]): o["variable"] for o in training_objects()}
    assert objects[("Deployment", "mlflow")] == "training_cluster_mlflow_name"
    assert objects[("ServiceAccount", "llama-factory-train")] == "training_cluster_train_job_name"
    assert objects[("Secret", "hf-token")] == "training_cluster_hf_token_secret_name"
    assert ("NetworkPolicy", "default-deny-ingress") in objects
    assert all(o["namespace"] == "llm-training" for o in training_objects())
    # Switched-off components own nothing.
    assert ("Deployment", "mlflow") not in {
        (o["kind"], o["name"]) for o in training_objects(mlflow_enabled=False, report_to="none")
    }


def test_the_default_names_of_both_roles_do_not_clash() -> None:
    plan = kp.plan_vllm_k8s(vllm(neighbour_objects=training_objects()))
    assert {(o["kind"], o["name"]) for o in plan["objects"]} >= {
        ("Deployment", "vllm-inference"),
        ("Service", "vllm-inference"),
        ("ConfigMap", "vllm-inference-model"),
        ("Secret", "vllm-api-key"),
    }


@pytest.mark.parametrize(
    ("training", "vllm_overrides", "variable", "reason"),
    [
        # What training_cluster used to check with mirrored training_cluster_vllm_* settings, now checked by vllm_k8s.
        ({"mlflow_name": "vllm-inference"}, {}, "vllm_k8s_name", "training_cluster_mlflow_name's Deployment"),
        ({"train_job_name": "vllm-inference"}, {}, "vllm_k8s_name", "training_cluster_train_job_name's ServiceAccount"),
        ({"config_map_name": "vllm-inference-model"}, {}, "vllm_k8s_name", "ConfigMap"),
        ({"config_map_name": "vllm-inference-probe"}, {}, "vllm_k8s_name", "liveness probe"),
        (
            {"mlflow_credentials_secret_name": "vllm-api-key"},
            {},
            "vllm_k8s_api_key_secret_name",
            "training_cluster_mlflow_credentials_secret_name's Secret",
        ),
        # A renamed vLLM is checked under its new name.
        ({}, {"name": "mlflow"}, "vllm_k8s_name", "Deployment llm-training/mlflow"),
        ({}, {"name": "default-deny-ingress"}, "vllm_k8s_name", "training_cluster_network_policy's NetworkPolicy"),
        # Helm mode: the chart's names.
        (
            {"webui_name": "vllm-x-engine-service"},
            {"mode": "helm", "name": "x", "create_namespace": False},
            "vllm_k8s_name",
            "Service",
        ),
    ],
)
def test_vllm_k8s_refuses_an_object_training_cluster_owns(
    training: Dict[str, Any], vllm_overrides: Dict[str, Any], variable: str, reason: str
) -> None:
    fails(kp.plan_vllm_k8s, vllm(neighbour_objects=training_objects(**training), **vllm_overrides), variable, reason)


def test_vllm_k8s_neighbours_in_another_namespace_do_not_clash() -> None:
    kp.plan_vllm_k8s(vllm(namespace="serving", neighbour_objects=training_objects(mlflow_name="vllm-inference")))


@pytest.mark.parametrize(
    ("overrides", "variable", "reason"),
    [
        ({"neighbour_objects": [{"kind": "Service"}]}, "vllm_k8s_neighbour_objects[0]", "kind and name"),
        ({"neighbour_objects": "mlflow"}, "vllm_k8s_neighbour_objects", "list"),
        ({"gate_local_port": 8000}, "vllm_k8s_gate_local_port", "cannot bind"),
        ({"gate_local_port": 80}, "vllm_k8s_gate_local_port", "1024"),
        ({"gate_timeout": 5}, "vllm_k8s_gate_timeout", "10"),
        ({"port_forward_address": "0.0.0.0"}, "vllm_k8s_port_forward_address", "loopback"),
        ({"port_forward_state": "running"}, "vllm_k8s_port_forward_state", "one of"),
        ({"port_forward_state_dir": "relative/dir"}, "vllm_k8s_port_forward_state_dir", "absolute"),
        ({"kubectl_binary": "kubectl --context x"}, "vllm_k8s_kubectl_binary", "whitespace"),
    ],
)
def test_vllm_k8s_refuses_a_gate_or_forward_that_cannot_work(
    overrides: Dict[str, Any], variable: str, reason: str
) -> None:
    fails(kp.plan_vllm_k8s, vllm(**overrides), variable, reason)
