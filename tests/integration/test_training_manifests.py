"""Every manifest training_cluster renders for the internal and hybrid inventories (and the other
storage/MLflow modes) is valid, strictly, for several Kubernetes versions; the ConfigMap carries
exactly the files tasks_from render_llamafactory writes (one renderer); Secrets never reach the disk.

The role runs in render-only mode (training_cluster_apply: false, training_cluster_render_dir) with the
inventory's own group_vars, so no cluster is involved. A last test converges, re-converges and tears
down against a REAL cluster when LLMOPS_REAL_KUBECONFIG names its kubeconfig, and is skipped otherwise.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT / "tests" / "k8s") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests" / "k8s"))

import manifest_audit  # noqa: E402
import pod_security  # noqa: E402
import validate  # noqa: E402

HF_TOKEN = "hf_render_test_token"
VAULT = {
    "vault_vllm_api_key": "render-vllm-key",
    "vault_vllm_api_key_staging": "render-vllm-key",
    "vault_hf_token": HF_TOKEN,
}
VERSIONS = ("1.29", "1.31", "1.33", "1.35")

# name -> (inventory, extra variables on top of its group_vars)
CONFIGS = {
    "internal": ("internal", {}),
    "hybrid-staging": ("hybrid", {}),
    "internal-static-nfs-database": (
        "internal",
        {
            "training_cluster_storage_mode": "static_nfs",
            "training_cluster_nfs_server": "10.20.0.5",
            "training_cluster_nfs_path": "/export/llm",
            "training_cluster_mlflow_backend": "database",
            "training_cluster_mlflow_database_uri": "postgresql://mlflow:pw@db/mlflow",
            "training_cluster_mlflow_tracking_username": "trainer",
            "training_cluster_mlflow_tracking_password": "pw-tracking",
            "training_cluster_image_pull_secrets": ["regcred"],
            "training_cluster_merge_gpus": 1,
            "training_cluster_webui_gpus": 1,
            "training_cluster_runtime_class_name": "nvidia",
            "training_cluster_job_ttl_seconds": 86400,
            # People reach the WebUI and MLflow from the office network and the data-science namespace.
            "training_cluster_webui_allowed_sources": [
                {"ipBlock": {"cidr": "10.20.0.0/16", "except": ["10.20.5.0/24"]}}
            ],
            "training_cluster_mlflow_allowed_sources": [
                {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "data-science"}}},
            ],
            "training_cluster_pod_security_version": "v1.33",
            "vllm_k8s_pod_security_version": "v1.33",
        },
    ),
    "internal-cpu-no-ui": (
        "internal",
        {
            "training_cluster_use_cpu": True,
            "training_cluster_precision": "fp32",
            "training_cluster_max_steps": 4,
            "training_cluster_webui_enabled": False,
            "training_cluster_report_to": "none",
            "training_cluster_network_policy": False,
        },
    ),
}
SECRETS = (HF_TOKEN, "pw-tracking", "postgresql://mlflow:pw@db/mlflow", "render-vllm-key")

PLAY = """\
- hosts: localhost
  gather_facts: false
  tasks:
    - ansible.builtin.include_role:
        name: llmops.platform.training_cluster
      vars:
        training_cluster_apply: false
        training_cluster_render_dir: "{{ out_dir }}/manifests"
    - ansible.builtin.include_role:
        name: llmops.platform.training_cluster
        tasks_from: render_llamafactory
      vars:
        training_cluster_render_dir: "{{ out_dir }}/llamafactory"
    - ansible.builtin.include_role:
        name: llmops.platform.vllm_k8s
      vars:
        vllm_k8s_apply: false
        vllm_k8s_render_dir: "{{ out_dir }}/vllm"
"""


def ansible_env() -> dict:
    return {
        **os.environ,
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_COLLECTIONS_PATH": str(ROOT / ".collections"),
        "ANSIBLE_NOCOLOR": "1",
    }


def render(tmp: Path, inventory: str, overrides: dict) -> Path:
    play = tmp / "render.yml"
    play.write_text(PLAY)
    varsfile = tmp / "vars.json"
    varsfile.write_text(json.dumps({**VAULT, **overrides, "out_dir": str(tmp / "out")}))
    proc = subprocess.run(
        ["ansible-playbook", "-i", str(ROOT / "inventories" / inventory), str(play), "-e", f"@{varsfile}"],
        capture_output=True,
        text=True,
        env=ansible_env(),
        cwd=tmp,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert HF_TOKEN not in proc.stdout + proc.stderr, "the HF token leaked into the output"
    return tmp / "out"


@pytest.fixture(scope="module", params=list(CONFIGS))
def rendered(request, tmp_path_factory) -> tuple:
    inventory, overrides = CONFIGS[request.param]
    out = render(tmp_path_factory.mktemp(request.param), inventory, overrides)
    return request.param, out


def load(directory: Path) -> dict:
    return {p.name: yaml.safe_load(p.read_text()) for p in sorted(directory.glob("*.yaml"))}


def by_kind(docs: dict) -> dict:
    out: dict = {}
    for doc in docs.values():
        if isinstance(doc, dict) and "kind" in doc:
            out.setdefault(doc["kind"], {})[doc["metadata"]["name"]] = doc
    return out


def test_every_manifest_is_valid_for_several_kubernetes_versions(rendered) -> None:
    name, out = rendered
    docs = {**load(out / "manifests"), **{f"vllm/{k}": v for k, v in load(out / "vllm").items()}}
    objects = by_kind(docs)
    expected = {"Namespace", "PersistentVolumeClaim", "ConfigMap", "Deployment", "Service", "Job", "ServiceAccount"}
    expected |= {"NetworkPolicy"}  # vllm_k8s's at least
    assert expected <= set(objects), sorted(objects)
    assert set(objects["Job"]) == {"llama-factory-train", "llama-factory-merge"}
    assert "vllm-inference" in objects["Deployment"]
    assert ("PersistentVolume" in objects) == (name == "internal-static-nfs-database")
    manifests = [(source, doc) for source, doc in docs.items() if isinstance(doc, dict) and "kind" in doc]
    assert len(manifests) >= 10
    problems = [p for source, doc in manifests for p in validate.validate_manifest(doc, VERSIONS, f"{name}/{source}")]
    assert problems == [], "\n".join(map(str, problems))


def test_the_validator_would_catch_a_broken_job() -> None:
    """The check above can fail: a Job with a misspelt field and a bad restartPolicy type is rejected."""
    bad = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "x"},
        "spec": {"backofLimit": 0, "template": {"spec": {"restartPolicy": 1, "containers": [{"name": "c"}]}}},
    }
    assert len(validate.validate_manifest(bad, VERSIONS)) == len(VERSIONS)


def test_configmap_carries_the_files_render_llamafactory_writes(rendered) -> None:
    name, out = rendered
    configmap = by_kind(load(out / "manifests"))["ConfigMap"]["llama-factory-config"]
    for file in ("train.yaml", "merge.yaml"):
        assert configmap["data"][file] == (out / "llamafactory" / file).read_text(), f"{name}: {file} differs"
    train = yaml.safe_load(configmap["data"]["train.yaml"])
    merge = yaml.safe_load(configmap["data"]["merge.yaml"])
    assert train["finetuning_type"] == "lora" and train["stage"] == "sft"
    assert merge["adapter_name_or_path"] == train["output_dir"]
    assert merge["export_dir"] == "/storage/models/merged-model"
    assert merge["export_legacy_format"] is False
    if name == "internal-cpu-no-ui":
        assert train["use_cpu"] is True and train["bf16"] is False and train["fp16"] is False
        assert train["max_steps"] == 4 and train["report_to"] == "none"
    else:
        assert "use_cpu" not in train and train["bf16"] is True


def test_jobs_pods_and_secrets(rendered) -> None:
    name, out = rendered
    docs = load(out / "manifests")
    objects = by_kind(docs)
    train = objects["Job"]["llama-factory-train"]
    merge = objects["Job"]["llama-factory-merge"]
    assert train["spec"]["template"]["spec"]["containers"][0]["command"] == [
        "llamafactory-cli",
        "train",
        "/config/train.yaml",
    ]
    # The merge runs the versioning command (files/model-version.py, from the ConfigMap), which runs the export.
    merge_command = merge["spec"]["template"]["spec"]["containers"][0]["command"]
    assert merge_command[:2] == ["python3", "/config/model-version.py"]
    assert merge_command[merge_command.index("--config") + 1] == "/config/merge.yaml"
    assert merge_command[merge_command.index("--versions-dir") + 1] == "/storage/models/merged-model-versions"
    assert merge_command[merge_command.index("--link") + 1] == "/storage/models/merged-model"
    assert merge_command[-3:] == ["--", "llamafactory-cli", "export"]
    config_map = objects["ConfigMap"]["llama-factory-config"]["data"]
    assert "def main(" in config_map["model-version.py"] and "def inspect_model_dir(" in config_map["model_manifest.py"]
    for job in (train, merge):
        pod = job["spec"]["template"]["spec"]
        container = pod["containers"][0]
        assert pod["restartPolicy"] == "Never"
        assert job["spec"]["backoffLimit"] == 0
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["storage"]["persistentVolumeClaim"]["claimName"] == "llama-storage"
        assert volumes["dshm"]["emptyDir"]["medium"] == "Memory"
        assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        env = {e["name"]: e for e in container["env"]}
        assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "hf-token"
    train_container = train["spec"]["template"]["spec"]["containers"][0]
    gpus = train_container["resources"].get("limits", {}).get("nvidia.com/gpu")
    assert gpus == (None if name == "internal-cpu-no-ui" else "1")
    # The vLLM API key Secret is vllm_k8s's: training_cluster renders none of its own.
    secrets = objects.get("Secret", {})
    assert "vllm-api-key" not in secrets
    assert "hf-token" in secrets
    assert all(v == "UkVEQUNURUQ=" for s in secrets.values() for v in s["data"].values()), "a Secret value was rendered"
    rendered_text = json.dumps(docs) + json.dumps(load(out / "vllm"))
    for secret in SECRETS:
        assert secret not in rendered_text, f"{secret} was written to the render directory"


def workloads(out: Path) -> list:
    """Every object both roles render for the layout (the training platform and the in-cluster vLLM)."""
    docs = {**load(out / "manifests"), **{f"vllm/{k}": v for k, v in load(out / "vllm").items()}}
    return [doc for doc in docs.values() if isinstance(doc, dict) and "kind" in doc]


def pods(objects: list) -> dict:
    """name -> pod template of every workload (Deployments, Jobs)."""
    return {doc["metadata"]["name"]: t for doc in objects for t in pod_security.pod_templates(doc)}


def test_every_pod_meets_the_restricted_pod_security_standard(rendered) -> None:
    """Every pod of the layout (WebUI, MLflow, train, merge, vLLM) passes each control of the restricted
    profile, so the namespace enforces restricted; both roles label the namespace alike (one filter)."""
    name, out = rendered
    objects = workloads(out)
    templates = pods(objects)
    expected = {"llama-factory-train", "llama-factory-merge", "mlflow", "vllm-inference"}
    assert expected <= set(templates), sorted(templates)
    problems = {pod: pod_security.restricted_violations(t) for pod, t in templates.items()}
    assert problems == {pod: [] for pod in templates}
    platform = by_kind(load(out / "manifests"))["Namespace"]["llm-training"]["metadata"]["labels"]
    assert platform == by_kind(load(out / "vllm"))["Namespace"]["llm-training"]["metadata"]["labels"]
    version = "v1.33" if name == "internal-static-nfs-database" else "latest"
    assert platform == {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": version,
        "pod-security.kubernetes.io/audit": "restricted",
        "pod-security.kubernetes.io/warn": "restricted",
    }


def restricted_pod() -> dict:
    """A pod template shaped like the roles' (pod-level non-root and seccomp, emptyDir in memory, a PVC)."""
    return {
        "metadata": {},
        "spec": {
            "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [
                {
                    "name": "c",
                    "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
                }
            ],
            "volumes": [
                {"name": "dshm", "emptyDir": {"medium": "Memory"}},
                {"name": "storage", "persistentVolumeClaim": {"claimName": "llama-storage"}},
            ],
        },
    }


def _container(pod: dict) -> dict:
    return pod["spec"]["containers"][0]


# control -> how to break it (one field of restricted_pod()).
BREAKS = {
    "host_namespaces": lambda pod: pod["spec"].update(hostNetwork=True),
    "privileged_containers": lambda pod: _container(pod)["securityContext"].update(privileged=True),
    "baseline_capabilities": lambda pod: _container(pod)["securityContext"]["capabilities"].update(add=["SYS_ADMIN"]),
    "host_path_volumes": lambda pod: pod["spec"]["volumes"].append({"name": "h", "hostPath": {"path": "/"}}),
    "host_ports": lambda pod: _container(pod).update(ports=[{"containerPort": 80, "hostPort": 80}]),
    "proc_mount": lambda pod: _container(pod)["securityContext"].update(procMount="Unmasked"),
    "sysctls": lambda pod: pod["spec"]["securityContext"].update(sysctls=[{"name": "kernel.msgmax", "value": "1"}]),
    "volume_types": lambda pod: pod["spec"]["volumes"].append({"name": "n", "nfs": {"server": "x", "path": "/"}}),
    "privilege_escalation": lambda pod: _container(pod)["securityContext"].pop("allowPrivilegeEscalation"),
    "running_as_non_root": lambda pod: pod["spec"]["securityContext"].pop("runAsNonRoot"),
    "running_as_non_root_user": lambda pod: _container(pod)["securityContext"].update(runAsUser=0),
    "restricted_seccomp": lambda pod: pod["spec"]["securityContext"].pop("seccompProfile"),
    "restricted_capabilities": lambda pod: _container(pod)["securityContext"]["capabilities"].update(drop=["NET_RAW"]),
}


@pytest.mark.parametrize("control", list(BREAKS))
def test_each_restricted_control_fails_on_a_pod_that_breaks_it(control: str) -> None:
    """The check above can fail: one field broken fails that control, and the pod is refused."""
    assert pod_security.restricted_violations(restricted_pod()) == []
    pod = restricted_pod()
    BREAKS[control](pod)
    problems = pod_security.restricted_violations(pod)
    assert any(p.startswith(control + ":") for p in problems), problems


def test_no_workload_gets_an_api_token_or_permission(rendered) -> None:
    """No Role or binding; every ServiceAccount and pod without a token; each pod under its own rendered account."""
    _name, out = rendered
    objects = workloads(out)
    assert manifest_audit.api_access_problems(objects) == []
    accounts = {doc["metadata"]["name"] for doc in objects if doc["kind"] == "ServiceAccount"}
    used = {t["spec"]["serviceAccountName"] for t in pods(objects).values()}
    assert used == accounts, "one ServiceAccount per workload, and no account nothing uses"
    assert len(used) == len(pods(objects)), "two workloads share a ServiceAccount"


def test_no_secret_on_a_command_line_or_in_a_configmap(rendered) -> None:
    """Secret values never reach argv, plain environment or a ConfigMap; no command line expands a variable
    that comes from a Secret (an expanded argv is in /proc/PID/cmdline). The MLflow database URI, with its
    password, reaches `mlflow server` only as MLFLOW_BACKEND_STORE_URI (click's envvar), never as a flag."""
    name, out = rendered
    objects = workloads(out)
    assert manifest_audit.secret_exposure_problems(objects, SECRETS) == []
    mlflow = by_kind(load(out / "manifests"))["Deployment"]["mlflow"]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in mlflow["env"]}
    if name == "internal-static-nfs-database":
        assert "--backend-store-uri" not in mlflow["command"][2]
        assert env["MLFLOW_BACKEND_STORE_URI"]["valueFrom"]["secretKeyRef"] == {
            "name": "mlflow-credentials",
            "key": "database-uri",
        }
    else:
        assert "--backend-store-uri sqlite:////storage/mlflow/mlflow.db" in mlflow["command"][2]
        assert "MLFLOW_BACKEND_STORE_URI" not in env


def admits(policy: dict, pod_labels: dict, namespace_labels: dict, same_namespace: bool) -> bool:
    """Whether one NetworkPolicy admits a connection from a pod (matchLabels peers only, as the roles render)."""
    for rule in policy["spec"].get("ingress") or []:
        for peer in rule.get("from") or []:
            namespaces = peer.get("namespaceSelector")
            pods_ = peer.get("podSelector")
            if "ipBlock" in peer:
                continue
            ns_ok = (
                same_namespace
                if namespaces is None
                else all(namespace_labels.get(k) == v for k, v in namespaces.get("matchLabels", {}).items())
            )
            pod_ok = pods_ is None or all(pod_labels.get(k) == v for k, v in pods_.get("matchLabels", {}).items())
            if ns_ok and pod_ok:
                return True
    return False


def selects(policy: dict, pod_labels: dict) -> bool:
    wanted = policy["spec"]["podSelector"].get("matchLabels", {})
    return all(pod_labels.get(k) == v for k, v in wanted.items())


def reachable(policies: list, target: dict, source: dict, namespace_labels: dict, same_namespace: bool = True) -> bool:
    """Kubernetes' rule: a pod no policy selects is open; a selected pod accepts what any selecting policy admits."""
    selecting = [p for p in policies if selects(p, target)]
    return not selecting or any(admits(p, source, namespace_labels, same_namespace) for p in selecting)


def test_network_policy_matrix(rendered) -> None:
    """Default deny for the namespace; MLflow from the training Job and the WebUI (and configured sources);
    the WebUI from configured sources only; the Jobs from nobody; vLLM from the namespace (its health gate and
    ui.yml reach it by kubectl port-forward, through the kubelet, not through the pod network)."""
    name, out = rendered
    objects = workloads(out)
    policies = [doc for doc in objects if doc["kind"] == "NetworkPolicy"]
    labels = {pod: t["metadata"]["labels"] for pod, t in pods(objects).items()}
    namespace = {"kubernetes.io/metadata.name": "llm-training"}
    outsider = {"app": "someone"}
    if name == "internal-cpu-no-ui":  # training_cluster_network_policy false: only vLLM's policy
        assert [p["metadata"]["name"] for p in policies] == ["vllm-inference"]
        return
    names = {p["metadata"]["name"] for p in policies}
    assert names == {"default-deny-ingress", "mlflow", "llama-factory-webui", "vllm-inference"}
    deny = next(p for p in policies if p["metadata"]["name"] == "default-deny-ingress")
    assert deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress"]}
    train, webui, mlflow, vllm = (
        labels[n] for n in ("llama-factory-train", "llama-factory-webui", "mlflow", "vllm-inference")
    )
    assert reachable(policies, mlflow, train, namespace)
    assert reachable(policies, mlflow, webui, namespace)
    assert not reachable(policies, mlflow, labels["vllm-inference"], namespace)
    assert not reachable(policies, mlflow, labels["llama-factory-merge"], namespace)
    assert reachable(policies, vllm, train, namespace)
    for job in ("llama-factory-train", "llama-factory-merge"):
        assert not reachable(policies, labels[job], webui, namespace), job
    assert not reachable(policies, webui, outsider, namespace)
    assert not reachable(policies, mlflow, outsider, {"kubernetes.io/metadata.name": "other"}, same_namespace=False)
    data_science = {"kubernetes.io/metadata.name": "data-science"}
    from_data_science = reachable(policies, mlflow, outsider, data_science, same_namespace=False)
    assert from_data_science == (name == "internal-static-nfs-database")
    webui_policy = next(p for p in policies if p["metadata"]["name"] == "llama-factory-webui")
    if name == "internal-static-nfs-database":
        assert webui_policy["spec"]["ingress"] == [
            {
                "from": [{"ipBlock": {"cidr": "10.20.0.0/16", "except": ["10.20.5.0/24"]}}],
                "ports": [{"port": "http", "protocol": "TCP"}],
            }
        ]
    else:
        assert "ingress" not in webui_policy["spec"], "no sources: the WebUI admits nothing"


REAL = os.environ.get("LLMOPS_REAL_KUBECONFIG", "")


@pytest.mark.skipif(
    not REAL,
    reason="no real cluster: set LLMOPS_REAL_KUBECONFIG to a kubeconfig (and optionally LLMOPS_REAL_STORAGE_CLASS, "
    "LLMOPS_REAL_TRAIN_IMAGE) to converge training_cluster on it",
)
def test_real_cluster_converge_is_idempotent_and_tears_down(tmp_path: Path) -> None:
    """Against a real API server: converge in a scratch namespace, converge again (changed=0), tear down."""
    namespace = f"llmops-test-{uuid.uuid4().hex[:6]}"
    common = {
        "training_cluster_kubeconfig": REAL,
        "training_cluster_namespace": namespace,
        "training_cluster_image": os.environ.get("LLMOPS_REAL_TRAIN_IMAGE", "registry.example.test/llama-factory:0"),
        "training_cluster_storage_class": os.environ.get("LLMOPS_REAL_STORAGE_CLASS", ""),
        "training_cluster_storage_size": "1Gi",
        "training_cluster_hf_token": "real-cluster-test-token",
    }
    play = tmp_path / "play.yml"

    def run(tasks_from: str, extra: dict) -> subprocess.CompletedProcess:
        play.write_text(
            "- hosts: localhost\n  connection: local\n  gather_facts: false\n"
            '  vars:\n    ansible_python_interpreter: "{{ ansible_playbook_python }}"\n'
            "  tasks:\n    - ansible.builtin.include_role:\n        name: llmops.platform.training_cluster\n"
            f"        tasks_from: {tasks_from}\n"
        )
        varsfile = tmp_path / "vars.json"
        varsfile.write_text(json.dumps({**common, **extra}))
        return subprocess.run(
            ["ansible-playbook", "-i", "localhost,", str(play), "-e", f"@{varsfile}"],
            capture_output=True,
            text=True,
            env={**ansible_env(), "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json"},
            timeout=900,
            check=False,
        )

    try:
        first = run("main", {})
        assert first.returncode == 0, first.stdout[-4000:]
        second = run("main", {})
        assert second.returncode == 0, second.stdout[-4000:]
        assert json.loads(second.stdout)["stats"]["localhost"]["changed"] == 0
    finally:
        down = run("teardown", {"training_cluster_teardown_storage": True})
    assert down.returncode == 0, down.stdout[-4000:]
