# Copyright: (c) 2026, llmops.platform maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The stable endpoint's objects (role vllm_endpoint) and the fronts of the inventory's vLLM hosts.

Documentation lives next to this file (vllm_endpoint_objects.yml, vllm_host_fronts.yml).
"""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.llmops.platform.plugins.module_utils.vllm_endpoint import (
    EndpointError,
    endpoint_objects,
    host_fronts,
    stale_slices,
)


def vllm_endpoint_objects(settings, existing_slices=None):
    """The checked Service and EndpointSlices of the stable endpoint, and the stale slices to remove."""
    if not isinstance(settings, dict):
        raise AnsibleFilterError(f"vllm_endpoint_objects expects a mapping of settings, got {type(settings).__name__}")
    try:
        out = endpoint_objects(dict(settings))
    except EndpointError as exc:
        raise AnsibleFilterError(str(exc)) from exc
    out["stale_slices"] = stale_slices(existing_slices, out["slices"])
    return out


def vllm_host_fronts(hosts, hostvars):
    """One entry (host, address, port, instance, scheme) per vLLM instance of the named hosts."""
    if isinstance(hosts, str) or not hasattr(hosts, "__iter__"):
        raise AnsibleFilterError("vllm_host_fronts expects a list of inventory host names")
    return host_fronts([(str(name), hostvars[name]) for name in hosts])


class FilterModule:
    def filters(self):
        return {"vllm_endpoint_objects": vllm_endpoint_objects, "vllm_host_fronts": vllm_host_fronts}
