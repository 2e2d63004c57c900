# Copyright: (c) 2026, llmops.platform maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The fleet status report of both layouts (plugins/module_utils/fleet_status.py).

Documentation lives next to this file (fleet_status_report.yml).
"""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.llmops.platform.plugins.module_utils import fleet_status as _fleet_status


def fleet_status_report(entries, generated_at=None, secrets=None):
    """Rows per instance or pod, their states, and the report as table lines, Markdown and JSON."""
    if not isinstance(entries, (list, tuple)):
        raise AnsibleFilterError(f"fleet_status_report expects a list of status entries, got {type(entries).__name__}")
    try:
        return _fleet_status.fleet_status_report(entries, generated_at, secrets)
    except _fleet_status.FleetStatusError as exc:
        raise AnsibleFilterError(str(exc)) from exc


def fleet_status_pods(pods, selector=None, base_port=18100, default_port=8000):
    """The port-forwards of an in-cluster status read: one per running pod the Deployment's selector matches."""
    if not isinstance(pods, (list, tuple)):
        raise AnsibleFilterError(f"fleet_status_pods expects a list of pods, got {type(pods).__name__}")
    try:
        return _fleet_status.pods_to_probe(pods, selector or {}, int(base_port), int(default_port))
    except (TypeError, ValueError) as exc:
        raise AnsibleFilterError(f"fleet_status_pods: {exc}") from exc


class FilterModule:
    def filters(self):
        return {"fleet_status_report": fleet_status_report, "fleet_status_pods": fleet_status_pods}
