# Copyright: (c) 2026, llmops.platform maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""GPU sharing between training and inference in one cluster (ADR-002 option B, "GPU Sharing Options").

One setting, ``mode``, chooses among the ADR's four options; both Kubernetes roles read the same settings
(the inventory's ``llmops_gpu_sharing``, given to ``training_cluster_gpu_sharing`` and ``vllm_k8s_gpu_sharing``) and
this module turns them into what each side's GPU pods get and which shared objects exist:

- ``none``: today's manifests exactly (the roles' node selector, tolerations and GPU resource).
- ``affinity``: training and inference on distinct nodes. Nodes carry the label ``node_label=<pool>`` and the
  taint ``node_label=<pool>:NoSchedule``; each side's pods require their pool (required node affinity) and
  tolerate only their pool's taint. No overhead, no sharing of a GPU.
- ``time_slicing``: the NVIDIA device plugin hands out ``replicas`` slices of each GPU (its config ConfigMap,
  ``version: v1`` / ``sharing.timeSlicing``); with ``rename_by_default`` the slices are ``<resource>.shared``.
  No memory or fault isolation between the pods sharing a GPU.
- ``mig``: hardware partitions (A100/H100/H200); each side asks for ``nvidia.com/mig-<profile>`` (the device
  plugin's ``mixed`` strategy), one partition per pod.
- ``preemption``: two PriorityClasses; the winning side's pods (``winner``, the ADR's default: training) preempt
  the other's when GPUs run short. The losing class never preempts.

The shared objects (the device plugin's ConfigMap, the PriorityClasses) are the training platform's to apply
(``training_cluster``), so one role owns them; vLLM's pods only refer to them.
"""

import json
from typing import Any, Dict, List, Mapping, Optional

from ansible_collections.llmops.platform.plugins.module_utils.checks import ValueChecks
from ansible_collections.llmops.platform.plugins.module_utils.k8s_plan import (
    K8sPlanError,
    check_dns_label,
    check_dns_subdomain,
    check_label_key,
    check_label_value,
)

MODES = ("none", "affinity", "time_slicing", "mig", "preemption")
SIDES = ("training", "inference")

DEFAULTS = {
    "mode": "none",
    # affinity
    "node_label": "llmops.io/gpu-pool",
    "training_pool": "training",
    "inference_pool": "inference",
    "taint": True,
    # time_slicing
    "replicas": 4,
    "rename_by_default": False,
    "fail_requests_greater_than_one": True,
    "device_plugin_namespace": "gpu-operator",
    "device_plugin_config_map": "time-slicing-config",
    "device_plugin_config_key": "any",
    # mig
    "training_profile": "3g.40gb",
    "inference_profile": "1g.10gb",
    # preemption
    "winner": "training",
    "high_priority_class": "llmops-gpu-high",
    "low_priority_class": "llmops-gpu-low",
    "high_priority_value": 100000,
    "low_priority_value": 1000,
}  # type: Dict[str, Any]

# A MIG profile as the device plugin names its resource: <compute slices>g.<memory>gb (1g.10gb, 3g.40gb, 7g.80gb).
# The "+me" media-extension profiles are not offered as resources of their own by the mixed strategy.
MIG_PROFILE_CHARS = "0123456789g.b"
# PriorityClass values above one billion are reserved for system classes (the API server refuses them).
MAX_USER_PRIORITY = 1000000000


class GpuSharingError(K8sPlanError):
    """A GPU sharing setting that cannot work; the message starts with the variable's name."""


_CHECKS = ValueChecks(GpuSharingError)


def parse_mig_profile(profile: Any, where: str) -> Dict[str, int]:
    """{'slices': N, 'memory_gb': M} of a MIG profile such as 1g.10gb; fails naming ``where``."""
    text = profile if isinstance(profile, str) else ""
    compute, _dot, memory = text.partition(".")
    ok = (
        bool(text)
        and all(c in MIG_PROFILE_CHARS for c in text)
        and compute.endswith("g")
        and compute[:-1].isdigit()
        and memory.endswith("gb")
        and memory[:-2].isdigit()
    )
    slices = int(compute[:-1]) if ok else 0
    memory_gb = int(memory[:-2]) if ok else 0
    if not ok or not 1 <= slices <= 7 or memory_gb < 1:
        _CHECKS.fail(
            where,
            f"must be a MIG profile <slices>g.<memory>gb with 1 to 7 slices, as the device plugin names its "
            f"resources (1g.10gb, 3g.40gb, 7g.80gb), got {profile!r}",
        )
    return {"slices": slices, "memory_gb": memory_gb}


def plan_gpu_sharing(settings: Any, variable: str) -> Dict[str, Any]:
    """The checked settings (defaults filled in); fails naming ``variable.key``."""
    raw = _CHECKS.as_mapping({} if settings is None else settings, variable)
    unknown = sorted(set(raw) - set(DEFAULTS), key=str)
    if unknown:
        _CHECKS.fail(f"{variable}.{unknown[0]}", "unknown setting; known: " + ", ".join(DEFAULTS))
    plan = dict(DEFAULTS, **raw)

    def name(key: str) -> str:
        return f"{variable}.{key}"

    plan["mode"] = _CHECKS.choice(plan["mode"], name("mode"), MODES)
    plan["node_label"] = check_label_key(plan["node_label"], name("node_label"))
    for key in ("training_pool", "inference_pool"):
        plan[key] = check_label_value(plan[key], name(key))
        if not plan[key]:
            _CHECKS.fail(name(key), "must not be empty: it tells the two pools apart")
    if plan["training_pool"] == plan["inference_pool"]:
        _CHECKS.fail(
            name("inference_pool"),
            f"must differ from training_pool ({plan['training_pool']!r}): the same pool would put training and "
            "inference on the same nodes",
        )
    for key in ("taint", "rename_by_default", "fail_requests_greater_than_one"):
        plan[key] = _CHECKS.as_bool(plan[key], name(key))
    plan["replicas"] = _CHECKS.as_int(plan["replicas"], name("replicas"), 2, 64)
    plan["device_plugin_namespace"] = check_dns_label(plan["device_plugin_namespace"], name("device_plugin_namespace"))
    plan["device_plugin_config_map"] = check_dns_subdomain(
        plan["device_plugin_config_map"], name("device_plugin_config_map")
    )
    key = plan["device_plugin_config_key"]
    if not isinstance(key, str) or not key or not all(c.isalnum() or c in "-_." for c in key):
        _CHECKS.fail(
            name("device_plugin_config_key"), f"must be a ConfigMap key (letters, digits, '-', '_', '.'), got {key!r}"
        )
    for side in SIDES:
        parse_mig_profile(plan[f"{side}_profile"], name(f"{side}_profile"))
    plan["winner"] = _CHECKS.choice(plan["winner"], name("winner"), SIDES)
    for key in ("high_priority_class", "low_priority_class"):
        plan[key] = check_dns_subdomain(plan[key], name(key))
        if plan[key].startswith("system-"):
            _CHECKS.fail(name(key), f"names starting with 'system-' are reserved for Kubernetes, got {plan[key]!r}")
    if plan["high_priority_class"] == plan["low_priority_class"]:
        _CHECKS.fail(name("low_priority_class"), "must differ from high_priority_class")
    for key in ("high_priority_value", "low_priority_value"):
        plan[key] = _CHECKS.as_int(plan[key], name(key), -2147483648, MAX_USER_PRIORITY)
    if plan["high_priority_value"] <= plan["low_priority_value"]:
        _CHECKS.fail(
            name("high_priority_value"),
            f"must be above low_priority_value ({plan['low_priority_value']}), got {plan['high_priority_value']}",
        )
    return plan


def check_gpu_requests(plan: Mapping[str, Any], variable: str, gpus: Mapping[str, Any]) -> None:
    """Fail when a pod asks for more GPUs than the mode can give it in one piece.

    ``gpus``: variable name -> the GPUs one pod of it requests. MIG: CUDA shows a process one MIG device, so one
    per pod. Time-slicing with fail_requests_greater_than_one: the device plugin refuses more than one slice (two
    slices could be the same GPU)."""
    for where, requested in gpus.items():
        count = _CHECKS.as_int(requested, where, 0)
        if count <= 1:
            continue
        if plan["mode"] == "mig":
            _CHECKS.fail(
                where,
                f"is {count}, but with {variable}.mode mig a pod gets one MIG partition (CUDA shows a process one "
                "MIG device): use 1, or a larger profile",
            )
        if plan["mode"] == "time_slicing" and plan["fail_requests_greater_than_one"]:
            _CHECKS.fail(
                where,
                f"is {count}, but with {variable}.mode time_slicing and fail_requests_greater_than_one the device "
                "plugin refuses pods asking for more than one GPU slice (two slices may be the same GPU)",
            )


def pool(plan: Mapping[str, Any], side: str) -> str:
    return plan[f"{side}_pool"]


def pod_scheduling(
    plan: Mapping[str, Any],
    side: str,
    node_selector: Mapping[str, Any],
    tolerations: List[Dict[str, Any]],
    gpu_resource: str,
    *,
    variable: str = "gpu_sharing",
) -> Dict[str, Any]:
    """What one side's GPU pods get: node_selector, tolerations, affinity (or None), priority_class_name ('' for
    none) and gpu_resource, from the role's own settings and the plan."""
    if side not in SIDES:
        raise GpuSharingError(f"side must be one of {', '.join(SIDES)}, got {side!r}")
    result = {
        "node_selector": dict(node_selector or {}),
        "tolerations": [dict(t) for t in tolerations or []],
        "affinity": None,
        "priority_class_name": "",
        "gpu_resource": gpu_resource,
        # The affinity mode's pool as a plain label requirement, for renderers with a node selector only (the
        # production-stack chart turns it into required node affinity).
        "pool_selector": {},
    }  # type: Dict[str, Any]
    mode = plan["mode"]
    if mode == "affinity":
        label, own = plan["node_label"], pool(plan, side)
        if label in result["node_selector"] and str(result["node_selector"][label]) != own:
            _CHECKS.fail(
                f"{variable}.node_label",
                f"is {label!r}, which the role's node selector already sets to {result['node_selector'][label]!r}, "
                f"not this side's pool {own!r}: remove it from the node selector",
            )
        result["affinity"] = {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": [{"key": label, "operator": "In", "values": [own]}]}]
                }
            }
        }
        result["pool_selector"] = {label: own}
        if plan["taint"]:
            result["tolerations"].append({"key": label, "operator": "Equal", "value": own, "effect": "NoSchedule"})
    elif mode == "time_slicing":
        if plan["rename_by_default"]:
            result["gpu_resource"] = gpu_resource + ".shared"
    elif mode == "mig":
        result["gpu_resource"] = "nvidia.com/mig-" + plan[f"{side}_profile"]
    elif mode == "preemption":
        result["priority_class_name"] = (
            plan["high_priority_class"] if plan["winner"] == side else plan["low_priority_class"]
        )
    return result


def device_plugin_config(plan: Mapping[str, Any], gpu_resource: str) -> Dict[str, Any]:
    """The NVIDIA device plugin's configuration file (config/v1) for time-slicing."""
    return {
        "version": "v1",
        "flags": {"migStrategy": "none"},
        "sharing": {
            "timeSlicing": {
                "renameByDefault": plan["rename_by_default"],
                "failRequestsGreaterThanOne": plan["fail_requests_greater_than_one"],
                "resources": [{"name": gpu_resource, "replicas": plan["replicas"]}],
            }
        },
    }


def shared_objects(
    plan: Mapping[str, Any], labels: Mapping[str, str], gpu_resource: str, dump: Optional[Any] = None
) -> List[Dict[str, Any]]:
    """The cluster objects the mode needs beside the pods: the device plugin's ConfigMap (time_slicing), the two
    PriorityClasses (preemption); none otherwise. ``dump`` turns the device plugin config into its file's text
    (YAML in the role; JSON, which is YAML too, by default)."""
    mode = plan["mode"]
    meta_labels = dict(labels)
    if mode == "time_slicing":
        text = (dump or (lambda data: json.dumps(data, indent=2, sort_keys=False) + "\n"))(
            device_plugin_config(plan, gpu_resource)
        )
        return [
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": plan["device_plugin_config_map"],
                    "namespace": plan["device_plugin_namespace"],
                    "labels": meta_labels,
                },
                "data": {plan["device_plugin_config_key"]: text},
            }
        ]
    if mode == "preemption":
        winner = plan["winner"]
        loser = "inference" if winner == "training" else "training"
        return [
            {
                "apiVersion": "scheduling.k8s.io/v1",
                "kind": "PriorityClass",
                "metadata": {"name": plan["high_priority_class"], "labels": meta_labels},
                "value": plan["high_priority_value"],
                "globalDefault": False,
                "preemptionPolicy": "PreemptLowerPriority",
                "description": f"llmops.platform GPU sharing: {winner} pods, which preempt {loser} pods for GPUs",
            },
            {
                "apiVersion": "scheduling.k8s.io/v1",
                "kind": "PriorityClass",
                "metadata": {"name": plan["low_priority_class"], "labels": meta_labels},
                "value": plan["low_priority_value"],
                "globalDefault": False,
                "preemptionPolicy": "Never",
                "description": f"llmops.platform GPU sharing: {loser} pods, which yield GPUs to {winner} pods",
            },
        ]
    return []


def mig_problems(plan: Mapping[str, Any], gpu_facts: Mapping[str, Any]) -> List[str]:
    """What keeps the plan's MIG profiles from working on known hosts.

    ``gpu_facts``: host -> what llmops.platform.gpu_info returned there (``gpus``: name, memory_total_mib,
    mig_mode). Each host needs MIG enabled on its GPUs and each side's profile must fit one of them (memory, 7
    compute slices). Empty: no problem, or no host known."""
    problems = []  # type: List[str]
    if plan["mode"] != "mig":
        return problems
    for host in sorted(gpu_facts):
        facts = gpu_facts[host] or {}
        gpus = facts.get("gpus") or []
        if not gpus:
            problems.append(f"{host}: gpu_info found no NVIDIA GPU")
            continue
        disabled = [g.get("index", i) for i, g in enumerate(gpus) if str(g.get("mig_mode") or "").lower() != "enabled"]
        if disabled:
            problems.append(
                f"{host}: MIG is not enabled on GPU {', '.join(map(str, disabled))} "
                f"({gpus[0].get('name', 'unknown')}; nvidia-smi -i N -mig 1, then reset the GPU)"
            )
        largest = max(int(g.get("memory_total_mib") or 0) for g in gpus)
        for side in SIDES:
            profile = plan[f"{side}_profile"]
            memory_gb = parse_mig_profile(profile, f"{side}_profile")["memory_gb"]
            # nvidia-smi's total is a little below the marketing size (81559 MiB on an 80GB H100), and a profile's
            # "gb" is rounded down (7g.80gb on that GPU): compare against the total rounded up to whole GiB + 1.
            if memory_gb * 1024 > largest + 2048:
                problems.append(
                    f"{host}: {side}_profile {profile} needs {memory_gb} GB, more than the largest GPU's {largest} MiB"
                )
    return problems
