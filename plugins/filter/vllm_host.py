# Copyright: (c) 2026, llmops.platform maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The host roles' variable checks: vllm_host (vllm_host_plan.py) and model_sync (model_sync_plan.py).

Documentation lives next to this file (vllm_host_plan.yml, model_sync_plan.yml).
"""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.llmops.platform.plugins.module_utils.model_sync_plan import plan_sync
from ansible_collections.llmops.platform.plugins.module_utils.vllm_host_plan import HostPlanError, plan_host


def vllm_host_plan(settings):
    """The checked plan of a host's vLLM instances; fails naming the variable that cannot work."""
    if not isinstance(settings, dict):
        raise AnsibleFilterError(f"vllm_host_plan expects a mapping of settings, got {type(settings).__name__}")
    try:
        return plan_host(dict(settings))
    except (HostPlanError, KeyError) as exc:
        raise AnsibleFilterError(str(exc)) from exc


def model_sync_plan(settings, inventory_hosts=()):
    """The model_sync role's checked settings; fails naming the variable that cannot work."""
    if not isinstance(settings, dict):
        raise AnsibleFilterError(f"model_sync_plan expects a mapping of settings, got {type(settings).__name__}")
    try:
        return plan_sync(dict(settings), inventory_hosts)
    except (HostPlanError, KeyError) as exc:
        raise AnsibleFilterError(str(exc)) from exc


class FilterModule:
    def filters(self):
        return {"vllm_host_plan": vllm_host_plan, "model_sync_plan": model_sync_plan}
