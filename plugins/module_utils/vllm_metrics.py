# Copyright: (c) 2026, llmops.platform maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A snapshot of what one vLLM server's Prometheus metrics say about its load (the migration's parallel run):
KV-cache usage, requests running and waiting, tokens served, preemptions, and the GPUs' utilisation when a
dcgm-exporter text is given. Pure Python: parses the Prometheus text exposition format."""

from __future__ import annotations

import math
import re
from typing import Any, Dict, List, Optional, Tuple

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")
# Each figure: the metric names that carry it, newest vLLM release first (KV-cache usage was renamed in 0.10).
FIGURES = {
    "kv_cache_usage": ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
    "requests_running": ("vllm:num_requests_running",),
    "requests_waiting": ("vllm:num_requests_waiting",),
    "prompt_tokens_total": ("vllm:prompt_tokens_total",),
    "generation_tokens_total": ("vllm:generation_tokens_total",),
    "preemptions_total": ("vllm:num_preemptions_total",),
}
GPU_UTIL = "DCGM_FI_DEV_GPU_UTIL"
GPU_MEMORY_USED = "DCGM_FI_DEV_FB_USED"


def parse(text: str) -> List[Tuple[str, float]]:
    """(name, value) of every sample line; comments, blank and malformed lines are skipped."""
    samples = []
    for line in (text or "").splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line.strip())
        if not match:
            continue
        try:
            value = float(match.group(3))
        except ValueError:
            continue
        if math.isnan(value):
            continue
        samples.append((match.group(1), value))
    return samples


def _total(samples: List[Tuple[str, float]], name: str) -> Optional[float]:
    values = [v for n, v in samples if n == name]
    return sum(values) if values else None


def snapshot(vllm_text: str, dcgm_text: Optional[str] = None) -> Dict[str, Any]:
    """The figures of one server (summed over its engines/models; KV-cache usage the highest of them), with
    `missing` naming the figures its metrics did not carry. GPU figures only from a dcgm-exporter text."""
    samples = parse(vllm_text)
    out: Dict[str, Any] = {"missing": []}
    for figure, names in FIGURES.items():
        value = None
        for name in names:
            values = [v for n, v in samples if n == name]
            if values:
                value = max(values) if figure == "kv_cache_usage" else sum(values)
                break
        if value is None:
            out["missing"].append(figure)
        out[figure] = value
    if dcgm_text:
        gpu = parse(dcgm_text)
        utils = [v for n, v in gpu if n == GPU_UTIL]
        out["gpus"] = len(utils)
        out["gpu_utilization_mean"] = round(sum(utils) / len(utils), 1) if utils else None
        out["gpu_memory_used_mib"] = _total(gpu, GPU_MEMORY_USED)
    else:
        out["gpus"] = None
        out["gpu_utilization_mean"] = None
        out["gpu_memory_used_mib"] = None
        out["missing"].append("gpu_utilization (no dcgm-exporter metrics)")
    out["metric_samples"] = len(samples)
    return out
