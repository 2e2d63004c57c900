# Copyright: (c) 2026, llmops.platform maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters for the vLLM production-stack Helm chart (plugins/module_utils/vllm_helm.py).

Documentation lives next to this file, one YAML file per filter (vllm_helm_values.yml, vllm_helm_template_check.yml).
"""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.llmops.platform.plugins.module_utils.vllm_helm import (
    HelmValuesError,
    helm_template_problems,
    render_helm_values,
)


def vllm_helm_values(settings, strict=True):
    """The chart's values for the vllm_k8s settings; fails naming the variable the chart cannot take, or with
    ``strict`` false returns None for settings the chart cannot take (manifests mode renders them for comparison)."""
    if not isinstance(settings, dict):
        raise AnsibleFilterError(f"vllm_helm_values expects a mapping of settings, got {type(settings).__name__}")
    try:
        return render_helm_values(dict(settings))
    except HelmValuesError as exc:
        if not strict:
            return None
        raise AnsibleFilterError(str(exc)) from exc
    except (KeyError, TypeError, ValueError) as exc:
        raise AnsibleFilterError(f"vllm_helm_values: {exc!r}") from exc


def vllm_helm_template_check(docs, values, names):
    """What `helm template` rendered, checked against the values: {objects, problems, notes}."""
    if not isinstance(docs, list) or not isinstance(values, dict) or not isinstance(names, dict):
        raise AnsibleFilterError("vllm_helm_template_check expects (list of objects, values mapping, names mapping)")
    return helm_template_problems(docs, values, names)


class FilterModule:
    def filters(self):
        return {
            "vllm_helm_values": vllm_helm_values,
            "vllm_helm_template_check": vllm_helm_template_check,
        }
