"""GPU sharing between training and inference (plugins/module_utils/gpu_sharing.py) and its filters.

The rendered manifests of every mode, their strict validation and the scheduling check are in
tests/integration/test_gpu_sharing_manifests.py; here: the settings' checks (each failure names the variable), what
each side's pods get, the shared objects, and the MIG check against real nvidia-smi output of an H100 host.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ansible.errors import AnsibleFilterError

from ansible_collections.llmops.platform.plugins.filter.gpu_sharing import FilterModule
from ansible_collections.llmops.platform.plugins.module_utils import gpu_sharing as gs
from ansible_collections.llmops.platform.plugins.module_utils import nvidia_smi as smi

DATA = Path(__file__).resolve().parents[3] / "unit" / "data" / "nvidia-smi"
VAR = "training_cluster_gpu_sharing"
SELECTOR = {"nvidia.com/gpu": "true"}
TOLERATIONS = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


def plan(**settings):
    return gs.plan_gpu_sharing(settings, VAR)


def pod(side, **settings):
    return gs.pod_scheduling(plan(**settings), side, SELECTOR, TOLERATIONS, "nvidia.com/gpu", variable=VAR)


def test_defaults_are_mode_none_and_change_nothing() -> None:
    assert gs.plan_gpu_sharing(None, VAR)["mode"] == "none"
    assert gs.plan_gpu_sharing({}, VAR) == gs.DEFAULTS
    for side in gs.SIDES:
        assert pod(side) == {
            "node_selector": SELECTOR,
            "tolerations": TOLERATIONS,
            "affinity": None,
            "priority_class_name": "",
            "gpu_resource": "nvidia.com/gpu",
            "pool_selector": {},
        }
    assert gs.shared_objects(plan(), {}, "nvidia.com/gpu") == []


@pytest.mark.parametrize(
    ("settings", "variable", "reason"),
    [
        ({"mode": "mps"}, f"{VAR}.mode", "must be one of none, affinity, time_slicing, mig, preemption"),
        ({"mode": "affinity", "pools": 2}, f"{VAR}.pools", "unknown setting"),
        ({"node_label": "bad key!"}, f"{VAR}.node_label", "is not a label key"),
        ({"training_pool": ""}, f"{VAR}.training_pool", "must not be empty"),
        ({"inference_pool": "training"}, f"{VAR}.inference_pool", "must differ from training_pool"),
        ({"inference_pool": 3}, f"{VAR}.inference_pool", "label values must be strings"),
        ({"taint": "sometimes"}, f"{VAR}.taint", "must be a boolean"),
        ({"replicas": 1}, f"{VAR}.replicas", "must be at least 2"),
        ({"replicas": "four"}, f"{VAR}.replicas", "must be an integer"),
        ({"device_plugin_namespace": "GPU_Operator"}, f"{VAR}.device_plugin_namespace", ""),
        ({"device_plugin_config_key": "a/b"}, f"{VAR}.device_plugin_config_key", "must be a ConfigMap key"),
        ({"training_profile": "3g.40GB"}, f"{VAR}.training_profile", "must be a MIG profile"),
        ({"inference_profile": "8g.80gb"}, f"{VAR}.inference_profile", "1 to 7 slices"),
        ({"inference_profile": "1g.10gb+me"}, f"{VAR}.inference_profile", "must be a MIG profile"),
        ({"winner": "vllm"}, f"{VAR}.winner", "must be one of training, inference"),
        ({"high_priority_class": "system-gpu"}, f"{VAR}.high_priority_class", "reserved for Kubernetes"),
        ({"low_priority_class": "llmops-gpu-high"}, f"{VAR}.low_priority_class", "must differ"),
        ({"high_priority_value": 2000000000}, f"{VAR}.high_priority_value", "at most 1000000000"),
        ({"high_priority_value": 10, "low_priority_value": 10}, f"{VAR}.high_priority_value", "must be above"),
        ("affinity", VAR, "must be a mapping"),
    ],
)
def test_bad_settings_name_the_variable(settings, variable, reason) -> None:
    # Label and name checks are the Kubernetes roles' own (k8s_plan.py): their error is GpuSharingError's base.
    with pytest.raises(gs.K8sPlanError) as err:
        gs.plan_gpu_sharing(settings, VAR)
    assert str(err.value).startswith(variable + ":")
    assert reason in str(err.value)


def test_gpu_counts_the_mode_cannot_give() -> None:
    with pytest.raises(gs.GpuSharingError, match=r"^training_cluster_train_gpus: is 2, but with .*mode mig"):
        gs.check_gpu_requests(plan(mode="mig"), VAR, {"training_cluster_train_gpus": 2})
    with pytest.raises(gs.GpuSharingError, match=r"^vllm_k8s_gpus: is 4, but with .*time_slicing"):
        gs.check_gpu_requests(plan(mode="time_slicing"), VAR, {"vllm_k8s_gpus": 4})
    gs.check_gpu_requests(plan(mode="time_slicing", fail_requests_greater_than_one=False), VAR, {"vllm_k8s_gpus": 4})
    gs.check_gpu_requests(plan(mode="affinity"), VAR, {"vllm_k8s_gpus": 8})
    gs.check_gpu_requests(plan(mode="mig"), VAR, {"training_cluster_merge_gpus": 0, "training_cluster_train_gpus": "1"})


def test_affinity_pins_each_side_to_its_pool() -> None:
    for side, own in (("training", "training"), ("inference", "inference")):
        result = pod(side, mode="affinity")
        term = result["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
        assert term == [{"matchExpressions": [{"key": "llmops.io/gpu-pool", "operator": "In", "values": [own]}]}]
        assert result["tolerations"] == [
            *TOLERATIONS,
            {"key": "llmops.io/gpu-pool", "operator": "Equal", "value": own, "effect": "NoSchedule"},
        ]
        assert result["pool_selector"] == {"llmops.io/gpu-pool": own}
        assert result["node_selector"] == SELECTOR
    assert pod("training", mode="affinity", taint=False)["tolerations"] == TOLERATIONS
    with pytest.raises(gs.GpuSharingError, match=r"^training_cluster_gpu_sharing.node_label: .*remove it"):
        gs.pod_scheduling(
            plan(mode="affinity"), "training", {"llmops.io/gpu-pool": "inference"}, [], "nvidia.com/gpu", variable=VAR
        )


def test_time_slicing_mig_and_preemption() -> None:
    assert pod("training", mode="time_slicing")["gpu_resource"] == "nvidia.com/gpu"
    assert pod("inference", mode="time_slicing", rename_by_default=True)["gpu_resource"] == "nvidia.com/gpu.shared"
    assert pod("training", mode="mig")["gpu_resource"] == "nvidia.com/mig-3g.40gb"
    assert pod("inference", mode="mig", inference_profile="2g.20gb")["gpu_resource"] == "nvidia.com/mig-2g.20gb"
    assert pod("training", mode="preemption")["priority_class_name"] == "llmops-gpu-high"
    assert pod("inference", mode="preemption")["priority_class_name"] == "llmops-gpu-low"
    assert pod("inference", mode="preemption", winner="inference")["priority_class_name"] == "llmops-gpu-high"


def test_shared_objects() -> None:
    objects = FilterModule().filters()["gpu_sharing_objects"]
    (config_map,) = objects(plan(mode="time_slicing", replicas=8), {"a": "b"}, "nvidia.com/gpu")
    assert config_map["metadata"] == {"name": "time-slicing-config", "namespace": "gpu-operator", "labels": {"a": "b"}}
    text = config_map["data"]["any"]
    assert text.startswith("version: v1\n")
    assert yaml.safe_load(text)["sharing"]["timeSlicing"]["resources"] == [{"name": "nvidia.com/gpu", "replicas": 8}]
    high, low = gs.shared_objects(plan(mode="preemption", winner="inference"), {}, "nvidia.com/gpu")
    assert (high["value"], high["preemptionPolicy"]) == (100000, "PreemptLowerPriority")
    assert (low["value"], low["preemptionPolicy"]) == (1000, "Never")
    assert "inference pods, which preempt training pods" in high["description"]


def test_mig_against_a_real_h100() -> None:
    """nvidia-smi of a real H100 80GB (MIG disabled there): the check says so; enabled, the default profiles fit
    and one larger than the GPU does not."""
    (gpu,) = smi.parse_gpu_query((DATA / "smi_query_gpu.csv").read_text())
    facts = {"gpu-1": {"gpus": [gpu]}}
    mig = plan(mode="mig")
    (problem,) = gs.mig_problems(mig, facts)
    assert problem.startswith("gpu-1: MIG is not enabled on GPU 0 (NVIDIA H100 80GB HBM3")
    enabled = {"gpu-1": {"gpus": [dict(gpu, mig_mode="Enabled")]}}
    assert gs.mig_problems(mig, enabled) == []
    assert gs.mig_problems(plan(mode="mig", training_profile="7g.80gb"), enabled) == []
    (too_big,) = gs.mig_problems(plan(mode="mig", training_profile="7g.141gb"), enabled)
    assert "training_profile 7g.141gb needs 141 GB" in too_big
    assert gs.mig_problems(plan(mode="mig"), {"cpu-host": {"gpus": []}}) == ["cpu-host: gpu_info found no NVIDIA GPU"]
    assert gs.mig_problems(plan(mode="affinity"), facts) == []
    problems = FilterModule().filters()["gpu_sharing_mig_problems"]
    assert problems(mig, enabled) == []


def test_filters_turn_errors_into_filter_errors() -> None:
    filters = FilterModule().filters()
    with pytest.raises(AnsibleFilterError, match=r"^vllm_k8s_gpu_sharing.mode: must be one of"):
        filters["gpu_sharing_plan"]({"mode": "half"}, "vllm_k8s_gpu_sharing")
    with pytest.raises(AnsibleFilterError, match=r"^vllm_k8s_gpus: is 2"):
        filters["gpu_sharing_plan"]({"mode": "mig"}, "vllm_k8s_gpu_sharing", {"vllm_k8s_gpus": 2})
    result = filters["gpu_sharing_pod"](
        filters["gpu_sharing_plan"]({"mode": "affinity"}, VAR), "inference", SELECTOR, TOLERATIONS, "nvidia.com/gpu"
    )
    assert result["pool_selector"] == {"llmops.io/gpu-pool": "inference"}
