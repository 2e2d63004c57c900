"""GPU sharing (ADR-002 option B): what both Kubernetes roles render in every mode of the one inventory variable
``llmops_gpu_sharing``, validated strictly against several Kubernetes versions; in the affinity mode, training
and inference pods cannot land on each other's nodes (tests/k8s/scheduling.py: Kubernetes' label, node affinity
and taint rules evaluated on the rendered pod specs).

ONE ansible-playbook run renders everything: one play per mode, each rendering training_cluster and vllm_k8s
(render-only) with the internal inventory's group_vars, where both roles' settings come from llmops_gpu_sharing,
set per play. Mode none renders today's manifests (tests/integration/test_training_manifests.py and
test_k8s_manifests.py check those in detail).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT / "tests" / "k8s") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests" / "k8s"))

import scheduling  # noqa: E402
import validate  # noqa: E402

VERSIONS = ("1.29", "1.31", "1.33", "1.35")
VAULT = {"vault_vllm_api_key": "render-vllm-key-0123456789", "vault_hf_token": "hf_render_token"}
# GPU pods on the training side besides the train Job: the merge Job asks for a GPU too.
EXTRA = {"training_cluster_merge_gpus": 1}
# Mode none is today's manifests (the other manifest tests). Variants within a mode (rename_by_default, the other
# preemption winner, helm values in mig mode) are unit tests (tests/unit/plugins/module_utils/test_gpu_sharing.py):
# each play here costs seconds of CI time.
MODES: Dict[str, Dict[str, Any]] = {
    "affinity": {"mode": "affinity"},
    "time_slicing": {"mode": "time_slicing", "replicas": 4},
    "mig": {"mode": "mig", "training_profile": "3g.40gb", "inference_profile": "1g.10gb"},
    "preemption": {"mode": "preemption"},
}
# vllm_k8s's helm mode (values for the production-stack chart) in the modes that change them.
HELM_MODES = ("affinity",)
LABEL = "llmops.io/gpu-pool"
# What the roles rendered, read from their facts after the roles ran: the objects they apply (their render
# directories hold the same, one file per object, but writing those costs a module run per object).
TRAINING_OBJECTS = (
    "{{ _training_cluster_storage_manifests + [_training_cluster_config_manifest] + _training_cluster_service_accounts"
    " + _training_cluster_network_policies + _training_cluster_service_manifests"
    " + [_training_cluster_job_manifests.train, _training_cluster_job_manifests.merge]"
    " + _training_cluster_gpu_sharing_objects }}"
)


def play(name: str, settings: Dict[str, Any], out: Path, roles: List[str], keep: Dict[str, str], **extra: Any) -> dict:
    return {
        "name": f"GPU sharing {name}",
        "hosts": "k8s_cluster",
        "gather_facts": False,
        "vars": {"llmops_gpu_sharing": settings, "training_cluster_apply": False, "vllm_k8s_apply": False, **extra},
        "roles": [{"role": f"llmops.platform.{role}"} for role in roles],
        "tasks": [
            {
                "name": "Keep what the roles rendered",
                "ansible.builtin.copy": {"dest": str(out / f"{name}.json"), "content": keep, "mode": "0644"},
            }
        ],
    }


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Dict[str, Any]]:
    """mode -> {'training_cluster': [objects], 'vllm_k8s': [objects]}, and 'helm-<mode>' -> {'values': ...}."""
    work = tmp_path_factory.mktemp("gpu-sharing")
    both = {"training_cluster": TRAINING_OBJECTS, "vllm_k8s": "{{ _vllm_k8s_manifests }}"}
    plays = [play(mode, settings, work, ["training_cluster", "vllm_k8s"], both) for mode, settings in MODES.items()]
    plays += [
        play(
            f"helm-{mode}",
            MODES[mode],
            work,
            ["vllm_k8s"],
            {"values": "{{ _vllm_k8s_helm_values }}"},
            vllm_k8s_mode="helm",
            vllm_k8s_pod_security_level="baseline",
        )
        for mode in HELM_MODES
    ]
    playbook = work / "render.yml"
    playbook.write_text(yaml.safe_dump(plays, sort_keys=False))
    varsfile = work / "vars.json"
    varsfile.write_text(json.dumps({**VAULT, **EXTRA}))
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_COLLECTIONS_PATH": str(ROOT / ".collections"),
    }
    command = ["ansible-playbook", "-i", str(ROOT / "inventories" / "internal"), str(playbook), "-e", f"@{varsfile}"]
    proc = subprocess.run(command, capture_output=True, text=True, env=env, check=False, timeout=900)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]
    return {p.stem: json.loads(p.read_text()) for p in work.glob("*.json") if p.name != "vars.json"}


def find(docs: List[Dict[str, Any]], kind: str, name: str = "") -> Dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and (not name or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def pod_spec(doc: Dict[str, Any]) -> Dict[str, Any]:
    return doc["spec"]["template"]["spec"]


def gpu_pods(rendered_mode: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    """The GPU pods of each side: {'train': spec, 'merge': spec, 'vllm': spec}."""
    training = rendered_mode["training_cluster"]
    return {
        "train": pod_spec(find(training, "Job", "llama-factory-train")),
        "merge": pod_spec(find(training, "Job", "llama-factory-merge")),
        "vllm": pod_spec(find(rendered_mode["vllm_k8s"], "Deployment")),
    }


def limits(spec: Dict[str, Any]) -> Dict[str, str]:
    return spec["containers"][0]["resources"]["limits"]


@pytest.mark.parametrize("mode", list(MODES))
def test_every_manifest_of_every_mode_is_valid_for_four_kubernetes_versions(rendered, mode: str) -> None:
    docs = [d for role in rendered[mode].values() for d in role]
    problems = [p for doc in docs for p in validate.validate_manifest(doc, VERSIONS, mode)]
    assert problems == [], "\n".join(map(str, problems))


def gpu_node(name: str, pool: str = "") -> Dict[str, Any]:
    """A GPU node as the NVIDIA GPU operator labels and taints it, in a pool (label + taint) or in none."""
    labels = {
        "kubernetes.io/hostname": name,
        "nvidia.com/gpu": "true",
        "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-40GB",
    }
    taints = [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]
    if pool:
        labels[LABEL] = pool
        taints.append({"key": LABEL, "value": pool, "effect": "NoSchedule"})
    return scheduling.node(name, labels, taints)


def test_affinity_keeps_training_and_inference_on_their_own_nodes(rendered) -> None:
    """The ADR's nodes 1-2 (training) and node 3 (vLLM): each side's pods can land only on its own pool's nodes,
    and neither on a GPU node outside the pools. Both fences hold on their own: the required affinity and the
    pool taint."""
    pods = gpu_pods(rendered["affinity"])
    training_node, inference_node, plain = (
        gpu_node("node-1", "training"),
        gpu_node("node-3", "inference"),
        gpu_node("node-9"),
    )
    for name in ("train", "merge"):
        assert scheduling.reasons(pods[name], training_node) == [], name
        why = scheduling.reasons(pods[name], inference_node)
        assert (
            "required node affinity matches no term" in why and f"untolerated taint {LABEL}=inference:NoSchedule" in why
        )
        assert scheduling.reasons(pods[name], plain) == ["required node affinity matches no term"]
    assert scheduling.reasons(pods["vllm"], inference_node) == []
    why = scheduling.reasons(pods["vllm"], training_node)
    assert "required node affinity matches no term" in why and f"untolerated taint {LABEL}=training:NoSchedule" in why
    assert scheduling.reasons(pods["vllm"], plain) == ["required node affinity matches no term"]
    # Each fence alone: without the taints the affinity still separates; without the affinity the taints do.
    for pod, wrong in ((pods["train"], inference_node), (pods["vllm"], training_node)):
        untainted = {**wrong, "spec": {"taints": wrong["spec"]["taints"][:1]}}
        assert scheduling.reasons(pod, untainted) == ["required node affinity matches no term"]
        no_affinity = {k: v for k, v in pod.items() if k != "affinity"}
        assert len(scheduling.reasons(no_affinity, wrong)) == 1
    # Pods without GPUs (the WebUI, MLflow) are not pinned to a pool.
    mlflow = pod_spec(find(rendered["affinity"]["training_cluster"], "Deployment", "mlflow"))
    assert "affinity" not in mlflow and "nodeSelector" not in mlflow


def test_affinity_reaches_the_helm_values(rendered) -> None:
    """vllm_k8s's helm mode gets the pool as the chart's required node affinity and the pool's toleration."""
    values = rendered["helm-affinity"]["values"]
    spec = values["servingEngineSpec"]["modelSpec"][0]
    expressions = spec["nodeSelectorTerms"][0]["matchExpressions"]
    assert {"key": LABEL, "operator": "In", "values": ["inference"]} in expressions
    assert {"key": LABEL, "operator": "Equal", "value": "inference", "effect": "NoSchedule"} in values[
        "servingEngineSpec"
    ]["tolerations"]


def test_the_matcher_follows_kubernetes_rules() -> None:
    """tests/k8s/scheduling.py can say no, for the reasons Kubernetes would."""
    n = scheduling.node("n", {"a": "1", "gpu": "8"}, [{"key": "k", "value": "v", "effect": "NoExecute"}])
    tolerate = [{"key": "k", "operator": "Equal", "value": "v"}]
    assert scheduling.reasons({"tolerations": tolerate}, n) == []
    assert scheduling.reasons({"tolerations": [{"operator": "Exists"}]}, n) == []
    assert scheduling.reasons({"tolerations": [{"key": "k", "value": "w"}]}, n) == ["untolerated taint k=v:NoExecute"]
    assert scheduling.reasons({"tolerations": [{"key": "k", "operator": "Exists", "effect": "NoSchedule"}]}, n)
    soft = scheduling.node("s", {}, [{"key": "k", "value": "v", "effect": "PreferNoSchedule"}])
    assert scheduling.reasons({}, soft) == []

    def affinity(*terms):
        return {
            "tolerations": tolerate,
            "affinity": {
                "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": list(terms)}}
            },
        }

    assert scheduling.reasons(affinity({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]}), n)
    assert not scheduling.reasons(
        affinity({"matchExpressions": [{"key": "b", "operator": "NotIn", "values": ["1"]}]}), n
    )
    assert not scheduling.reasons(
        affinity({"matchExpressions": [{"key": "gpu", "operator": "Gt", "values": ["4"]}]}), n
    )
    assert scheduling.reasons(affinity({"matchExpressions": [{"key": "gpu", "operator": "Lt", "values": ["4"]}]}), n)
    assert scheduling.reasons(affinity({"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]}), n)
    # Terms are ORed, expressions ANDed; an empty term matches nothing.
    no, yes = (
        {"matchExpressions": [{"key": "x", "operator": "Exists"}]},
        {"matchExpressions": [{"key": "a", "operator": "Exists"}]},
    )
    assert not scheduling.reasons(affinity(no, yes), n)
    assert scheduling.reasons(affinity({"matchExpressions": no["matchExpressions"] + yes["matchExpressions"]}), n)
    assert scheduling.reasons(affinity({}), n)
    assert not scheduling.reasons(
        affinity({"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n"]}]}), n
    )
    assert scheduling.reasons({"nodeSelector": {"a": "2"}, "tolerations": tolerate}, n) == [
        "nodeSelector a=2 (node has '1')"
    ]


def test_time_slicing_renders_the_device_plugin_config(rendered) -> None:
    mode, resource = "time_slicing", "nvidia.com/gpu"
    config_map = find(rendered[mode]["training_cluster"], "ConfigMap", "time-slicing-config")
    assert config_map["metadata"]["namespace"] == "gpu-operator"
    config = yaml.safe_load(config_map["data"]["any"])
    settings = MODES[mode]
    assert config == {
        "version": "v1",
        "flags": {"migStrategy": "none"},
        "sharing": {
            "timeSlicing": {
                "renameByDefault": False,
                "failRequestsGreaterThanOne": True,
                "resources": [{"name": "nvidia.com/gpu", "replicas": settings["replicas"]}],
            }
        },
    }
    for name, spec in gpu_pods(rendered[mode]).items():
        assert limits(spec)[resource] == "1", name
    # vLLM refers to the config, it does not own it.
    assert not [
        d for d in rendered[mode]["vllm_k8s"] if d["kind"] == "ConfigMap" and "time-slicing" in d["metadata"]["name"]
    ]


def test_mig_asks_each_side_for_its_partition(rendered) -> None:
    pods = gpu_pods(rendered["mig"])
    for name, profile in (("train", "3g.40gb"), ("merge", "3g.40gb"), ("vllm", "1g.10gb")):
        assert limits(pods[name]).get(f"nvidia.com/mig-{profile}") == "1", name
        assert "nvidia.com/gpu" not in limits(pods[name])
        requests = pods[name]["containers"][0]["resources"].get("requests", {})
        assert requests.get(f"nvidia.com/mig-{profile}") == "1", name


def test_preemption_gives_the_winner_the_higher_class(rendered) -> None:
    mode, winner = "preemption", "training"  # the ADR: vLLM yields to training
    classes = {d["metadata"]["name"]: d for d in rendered[mode]["training_cluster"] if d["kind"] == "PriorityClass"}
    high, low = classes["llmops-gpu-high"], classes["llmops-gpu-low"]
    assert high["value"] > low["value"]
    assert high["preemptionPolicy"] == "PreemptLowerPriority" and low["preemptionPolicy"] == "Never"
    assert high["globalDefault"] is False and low["globalDefault"] is False
    pods = gpu_pods(rendered[mode])
    expected = {"train": winner == "training", "merge": winner == "training", "vllm": winner == "inference"}
    for name, wins in expected.items():
        assert pods[name]["priorityClassName"] == ("llmops-gpu-high" if wins else "llmops-gpu-low"), name
