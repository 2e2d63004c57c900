# Copyright: (c) 2026, llmops.platform maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""GPU sharing between training and inference (plugins/module_utils/gpu_sharing.py).

Documentation lives next to this file, one YAML file per filter (gpu_sharing_plan.yml, ...).
"""

from __future__ import annotations

import yaml
from ansible.errors import AnsibleFilterError

from ansible_collections.llmops.platform.plugins.module_utils import gpu_sharing as _gs
from ansible_collections.llmops.platform.plugins.module_utils.k8s_plan import K8sPlanError


def _wrap(func, *args, **kwargs):
    try:
        return func(*args, **kwargs)
    except (K8sPlanError, ValueError, TypeError) as exc:
        raise AnsibleFilterError(str(exc)) from exc


def _plain(value):
    """Ansible's tagged strings and lazy containers as plain Python (the API and YAML dumps want plain types)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    return value


def gpu_sharing_plan(settings, variable, gpus=None):
    """The checked GPU sharing settings; fails naming the variable (and the GPU counts the mode cannot give)."""

    def plan():
        result = _gs.plan_gpu_sharing(_plain(settings), variable)
        _gs.check_gpu_requests(result, variable, _plain(gpus or {}))
        return result

    return _wrap(plan)


def gpu_sharing_pod(plan, side, node_selector, tolerations, gpu_resource, *, variable="gpu_sharing"):
    """What one side's GPU pods get: node_selector, tolerations, affinity, priority_class_name, gpu_resource."""
    return _wrap(
        _gs.pod_scheduling,
        _plain(plan),
        side,
        _plain(node_selector),
        _plain(tolerations),
        str(gpu_resource),
        variable=variable,
    )


def gpu_sharing_objects(plan, labels, gpu_resource):
    """The device plugin's ConfigMap (time_slicing) or the PriorityClasses (preemption); [] otherwise."""

    def dump(data):
        return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)

    return _wrap(_gs.shared_objects, _plain(plan), _plain(labels), str(gpu_resource), dump)


def gpu_sharing_mig_problems(plan, gpu_facts):
    """What keeps the MIG profiles from working on the hosts gpu_info read; [] when nothing does."""
    return _wrap(_gs.mig_problems, _plain(plan), _plain(gpu_facts))


class FilterModule:
    def filters(self):
        return {
            "gpu_sharing_plan": gpu_sharing_plan,
            "gpu_sharing_pod": gpu_sharing_pod,
            "gpu_sharing_objects": gpu_sharing_objects,
            "gpu_sharing_mig_problems": gpu_sharing_mig_problems,
        }
