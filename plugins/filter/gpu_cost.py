# Copyright: (c) 2026, llmops.platform maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The GPU cost comparison of ADR-002 for the inventory's fleet (plugins/module_utils/gpu_cost.py).

Documentation lives next to this file (gpu_cost_report.yml).
"""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.llmops.platform.plugins.module_utils import gpu_cost as _gpu_cost


def gpu_cost_report(settings, hosts=None, hostvars=None):
    """Cost per pool and per layout, savings, and the report as Markdown, CSV and text lines."""
    if not isinstance(settings, dict):
        raise AnsibleFilterError(f"gpu_cost_report expects a mapping of settings, got {type(settings).__name__}")
    try:
        pools = _gpu_cost.inventory_pools(list(hosts or []), hostvars or {})
        declared = settings.get("pools") or []
        if not isinstance(declared, list):
            raise _gpu_cost.CostReportError(
                f"{_gpu_cost.POOLS_VARIABLE} must be a list of pools, got {type(declared).__name__}"
            )
        return _gpu_cost.compute_cost_report(dict(settings, pools=pools + list(declared)))
    except _gpu_cost.CostReportError as exc:
        raise AnsibleFilterError(str(exc)) from exc


class FilterModule:
    def filters(self):
        return {"gpu_cost_report": gpu_cost_report}
