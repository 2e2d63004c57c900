# Copyright: (c) 2026, llmops.platform maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The load snapshot of a vLLM server from its Prometheus metrics (vllm_metrics_snapshot.yml documents it)."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.llmops.platform.plugins.module_utils.vllm_metrics import snapshot


def vllm_metrics_snapshot(vllm_text, dcgm_text=None):
    """KV-cache usage, requests, tokens, preemptions (and GPU utilisation from dcgm-exporter's text)."""
    if not isinstance(vllm_text, str):
        raise AnsibleFilterError("vllm_metrics_snapshot expects the text of a /metrics response")
    return snapshot(vllm_text, dcgm_text if isinstance(dcgm_text, str) and dcgm_text else None)


class FilterModule:
    def filters(self):
        return {"vllm_metrics_snapshot": vllm_metrics_snapshot}
