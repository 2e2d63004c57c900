"""The migration's bookkeeping (plugins/module_utils/vllm_migration.py, filter vllm_migration_check) and the load
snapshot of the parallel run (plugins/module_utils/vllm_metrics.py, filter vllm_metrics_snapshot)."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.llmops.platform.plugins.filter.vllm_metrics import FilterModule as Metrics
from ansible_collections.llmops.platform.plugins.filter.vllm_migration import FilterModule as Migration
from ansible_collections.llmops.platform.plugins.module_utils import vllm_migration as vm

CHECK = Migration().filters()["vllm_migration_check"]
SNAPSHOT = Metrics().filters()["vllm_metrics_snapshot"]
NOW = "2026-12-01T12:00:00Z"


def cut(hours_ago: float, direction: str = "to_internal") -> dict:
    import datetime as dt

    at = dt.datetime(2026, 12, 1, 12, tzinfo=dt.timezone.utc) - dt.timedelta(hours=hours_ago)
    return {"phase": "cut-over", "direction": direction, "cutover_at": at.strftime(vm.TIME_FORMAT)}


@pytest.mark.parametrize(
    ("record", "phase", "allowed"),
    [
        ({}, "prepare", True),
        ({}, "status", True),
        ({}, "parallel", False),
        ({}, "cutover", False),
        ({}, "cleanup", False),
        ({"phase": "prepared", "direction": "to_internal"}, "parallel", True),
        ({"phase": "prepared", "direction": "to_internal"}, "cutover", False),
        ({"phase": "parallel-failed", "direction": "to_internal"}, "cutover", False),
        ({"phase": "parallel-passed", "direction": "to_internal"}, "cutover", True),
        ({"phase": "parallel-passed", "direction": "to_internal"}, "rollback", True),
        (cut(1), "cutover", True),
        (cut(1), "prepare", False),
        (cut(1), "cleanup", False),
        (cut(49), "cleanup", True),
        (cut(1), "rollback", True),
        ({"phase": "cleaned", "direction": "to_internal"}, "rollback", False),
        ({"phase": "cleaned", "direction": "to_internal"}, "cleanup", True),
        ({"phase": "rolled-back", "direction": "to_internal"}, "parallel", True),
        # The other direction: refused while one is under way, allowed once it ended.
        ({"phase": "parallel-passed", "direction": "to_external"}, "prepare", False),
        ({"phase": "cleaned", "direction": "to_external"}, "prepare", True),
        ({"phase": "rolled-back", "direction": "to_external"}, "prepare", True),
        ({"phase": "parallel-passed", "direction": "to_external"}, "soak", True),
    ],
)
def test_the_record_decides(record, phase, allowed):
    out = CHECK(record, phase=phase, direction="to_internal", soak_hours=48, force=False, now=NOW)
    assert (out["problem"] == "") is allowed, out


def test_the_soak_window_in_figures_and_forced():
    inside = CHECK(cut(1.5), phase="cleanup", direction="to_internal", soak_hours=48, force=False, now=NOW)
    assert inside["elapsed_hours"] == 1.5 and inside["remaining_hours"] == 46.5 and not inside["cleanup_allowed"]
    assert "1.5 h of the 48.0 h soak window" in inside["problem"] and "vllm_migration_force" in inside["problem"]
    forced = CHECK(cut(1.5), phase="cleanup", direction="to_internal", soak_hours=48, force=True, now=NOW)
    assert forced["problem"] == "" and forced["cleanup_allowed"]
    assert CHECK(cut(1.5), phase="cleanup", direction="to_internal", soak_hours=1, force=False, now=NOW)[
        "cleanup_allowed"
    ]
    failed = CHECK(
        {"phase": "parallel-failed", "direction": "to_internal", "report": "/r/p.json"},
        phase="cutover", direction="to_internal", soak_hours=48, force=False, now=NOW,
    )  # fmt: skip
    assert "/r/p.json" in failed["problem"]


@pytest.mark.parametrize("hours", ["-1", "two", None])
def test_a_bad_soak_window_is_refused_naming_the_variable(hours):
    with pytest.raises(AnsibleFilterError, match="vllm_migration_soak_hours"):
        CHECK({}, phase="status", direction="to_internal", soak_hours=hours, force=False, now=NOW)


METRICS = """# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="tiny"} 0.25
vllm:kv_cache_usage_perc{engine="1",model_name="tiny"} 0.5
vllm:num_requests_running{engine="0",model_name="tiny"} 2.0
vllm:num_requests_waiting{engine="0",model_name="tiny"} 0.0
vllm:prompt_tokens_total{engine="0",model_name="tiny"} 120.0
vllm:generation_tokens_total{engine="0",model_name="tiny"} 64.0
vllm:generation_tokens_total{engine="1",model_name="tiny"} 16.0
garbage line
vllm:num_preemptions_total{engine="0",model_name="tiny"} NaN
"""
DCGM = """DCGM_FI_DEV_GPU_UTIL{gpu="0"} 40
DCGM_FI_DEV_GPU_UTIL{gpu="1"} 60
DCGM_FI_DEV_FB_USED{gpu="0"} 1000
DCGM_FI_DEV_FB_USED{gpu="1"} 3000
"""


def test_the_snapshot_reads_the_load_of_every_engine():
    snap = SNAPSHOT(METRICS, DCGM)
    assert snap["kv_cache_usage"] == 0.5 and snap["requests_running"] == 2.0 and snap["requests_waiting"] == 0.0
    assert snap["generation_tokens_total"] == 80.0 and snap["prompt_tokens_total"] == 120.0
    assert snap["preemptions_total"] is None and snap["missing"] == ["preemptions_total"]
    assert snap["gpus"] == 2 and snap["gpu_utilization_mean"] == 50.0 and snap["gpu_memory_used_mib"] == 4000


def test_the_snapshot_of_an_older_vllm_and_of_a_host_without_gpus():
    snap = SNAPSHOT('vllm:gpu_cache_usage_perc{model_name="m"} 0.75\n')
    assert snap["kv_cache_usage"] == 0.75 and snap["gpu_utilization_mean"] is None
    assert "gpu_utilization (no dcgm-exporter metrics)" in snap["missing"]
    with pytest.raises(AnsibleFilterError):
        SNAPSHOT(None)
