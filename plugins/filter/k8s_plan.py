# Copyright: (c) 2026, llmops.platform maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Kubernetes roles' variable checks: vllm_k8s and training_cluster (plugins/module_utils/k8s_plan.py).

Documentation lives next to this file (vllm_k8s_plan.yml, llamafactory_plan.yml, training_cluster_plan.yml,
pod_security_labels.yml).
"""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.llmops.platform.plugins.module_utils.k8s_plan import (
    K8sPlanError,
    plan_llamafactory,
    plan_training_cluster,
    plan_vllm_k8s,
)
from ansible_collections.llmops.platform.plugins.module_utils.k8s_plan import (
    pod_security_labels as _pod_security_labels,
)


def _settings(name, settings):
    if not isinstance(settings, dict):
        raise AnsibleFilterError(f"{name} expects a mapping of settings, got {type(settings).__name__}")
    return dict(settings)


def vllm_k8s_plan(settings):
    """The vllm_k8s role's checked settings; fails naming the variable that breaks the platform."""
    try:
        return plan_vllm_k8s(_settings("vllm_k8s_plan", settings))
    except K8sPlanError as exc:
        raise AnsibleFilterError(str(exc)) from exc


def llamafactory_plan(settings):
    """training_cluster's LLaMA-Factory settings, checked; fails naming the variable."""
    try:
        return plan_llamafactory(_settings("llamafactory_plan", settings))
    except K8sPlanError as exc:
        raise AnsibleFilterError(str(exc)) from exc


def training_cluster_plan(settings, llamafactory):
    """The training_cluster role's checked settings; fails naming the variable that breaks the platform."""
    try:
        return plan_training_cluster(_settings("training_cluster_plan", settings), llamafactory)
    except K8sPlanError as exc:
        raise AnsibleFilterError(str(exc)) from exc


def pod_security_labels(level, version="latest"):
    """The namespace's Pod Security Admission labels for ``level`` (both Kubernetes roles render these)."""
    try:
        return _pod_security_labels(level, version)
    except K8sPlanError as exc:
        raise AnsibleFilterError(str(exc)) from exc


class FilterModule:
    def filters(self):
        return {
            "vllm_k8s_plan": vllm_k8s_plan,
            "llamafactory_plan": llamafactory_plan,
            "training_cluster_plan": training_cluster_plan,
            "pod_security_labels": pod_security_labels,
        }
