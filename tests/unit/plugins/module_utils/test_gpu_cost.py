"""The ADR-002 cost comparison (plugins/module_utils/gpu_cost.py) and its filter.

The ADR's own example ("Wpływ na koszty"): 2 training + 2 inference A100 (option A) against 3 shared (option B),
$2.9 per GPU-hour, every GPU billed 168 h a week: 974.40 per 2-GPU cluster, 1,948.80 against 1,461.60 a week
(the ADR rounds to ~$975, ~$1,950 and ~$1,461), 487.20 saved a week, 25 %, 25,334.40 a year (~$25k).
"""

from __future__ import annotations

import csv
import io

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.llmops.platform.plugins.filter.gpu_cost import FilterModule
from ansible_collections.llmops.platform.plugins.module_utils import gpu_cost as gc

ADR = {
    "price_per_gpu_hour": 2.9,
    "hours": 168,
    "periods_per_year": 52,
    "pools": [
        {"layout": "A external", "pool": "training", "gpus": 2, "busy_hours": 20},
        {"layout": "A external", "pool": "inference", "gpus": 2},
        {"layout": "B internal", "pool": "unified", "gpus": 3},
    ],
}


def totals(report: dict) -> dict:
    return {t["layout"]: t for t in report["totals"]}


def test_the_adr_example() -> None:
    report = gc.compute_cost_report(ADR)
    rows = {r["pool"]: r for r in report["rows"]}
    assert rows["training"]["cost_per_period"] == pytest.approx(974.40)
    assert rows["training"]["utilisation_pct"] == pytest.approx(40 / 336 * 100)
    assert rows["training"]["idle_cost_per_period"] == pytest.approx(296 * 2.9)
    assert rows["inference"]["busy_gpu_hours"] is None
    t = totals(report)
    assert t["A external"]["cost_per_period"] == pytest.approx(1948.80)
    assert t["B internal"]["cost_per_period"] == pytest.approx(1461.60)
    assert t["B internal"]["saving_per_period"] == pytest.approx(487.20)
    assert t["B internal"]["saving_per_year"] == pytest.approx(25334.40)
    assert t["B internal"]["saving_pct"] == pytest.approx(25.0)
    assert t["A external"]["saving_per_period"] == 0
    assert report["baseline"] == "A external"
    assert "| B internal | 3 | 504 | 1,461.60 | 76,003.20 | 487.20 | 25,334.40 | 25.0% |" in report["markdown"]
    lines = list(csv.DictReader(io.StringIO(report["csv"])))
    layout = {r["layout"]: r for r in lines if r["kind"] == "layout"}
    assert layout["A external"]["cost_per_period"] == "1948.80"
    assert layout["B internal"]["cost_per_period"] == "1461.60"
    assert layout["B internal"]["saving_pct"] == "25.00"
    assert [r["pool"] for r in lines if r["kind"] == "pool"] == ["training", "inference", "unified"]
    assert any("1,948.80" in line for line in report["table"])


def test_pools_from_the_inventory() -> None:
    hostvars = {
        "gpu-1": {
            "llmops_cost_layout": "A",
            "vllm_host_instances": [{"name": "a", "devices": [0, 1]}, {"name": "b", "devices": [2, 3]}],
        },
        "gpu-2": {"llmops_cost_layout": "A", "llmops_cost_gpus": 8, "llmops_cost_pool": "big"},
        "controller": {},
    }
    pools = gc.inventory_pools(["gpu-1", "gpu-2", "controller"], hostvars)
    assert [(p["pool"], p["gpus"]) for p in pools] == [("gpu-1", 4), ("big", 8)]
    # Instances sharing a GPU count it once.
    shared = {"h": {"llmops_cost_layout": "A", "vllm_host_instances": [{"devices": [0]}, {"devices": [0]}]}}
    assert gc.inventory_pools(["h"], shared)[0]["gpus"] == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"price_per_gpu_hour": -2.9}, "llmops_cost_price_per_gpu_hour must be more than zero, got -2.9"),
        ({"price_per_gpu_hour": 0}, "llmops_cost_price_per_gpu_hour must be more than zero"),
        ({"price_per_gpu_hour": "cheap"}, "llmops_cost_price_per_gpu_hour must be a number, got 'cheap'"),
        ({"price_per_gpu_hour": None}, "llmops_cost_price_per_gpu_hour must be a number, got None"),
        ({"price_per_gpu_hour": True}, "llmops_cost_price_per_gpu_hour must be a number"),
        ({"hours": 0}, "llmops_cost_hours must be more than zero, got 0"),
        ({"hours": "nan"}, "llmops_cost_hours must be a finite number"),
        ({"periods_per_year": -52}, "llmops_cost_periods_per_year must be more than zero"),
        ({"currency": ""}, "llmops_cost_currency must be a non-empty one-line text"),
        ({"pools": []}, "no GPU pool to cost: set llmops_cost_layout"),
        ({"pools": "A"}, "llmops_cost_pools must be a list of pools"),
        ({"pools": [{"layout": "A", "pool": "p", "gpus": 1.5}]}, "llmops_cost_pools[0].gpus must be a whole number"),
        ({"pools": [{"layout": "A", "pool": "p", "gpus": 0}]}, "llmops_cost_pools[0].gpus must be more than zero"),
        ({"pools": [{"layout": "A", "pool": "p", "gpus": 1, "hours": 200}]}, "llmops_cost_pools[0].hours is 200"),
        (
            {"pools": [{"layout": "A", "pool": "p", "gpus": 1, "busy_hours": 169}]},
            "llmops_cost_pools[0].busy_hours is 169, more than the 168 hours billed",
        ),
        ({"pools": [{"layout": "A", "pool": "p", "gpus": 1, "price": -1}]}, "llmops_cost_pools[0].price must be more"),
        ({"pools": [{"layout": "", "pool": "p", "gpus": 1}]}, "llmops_cost_pools[0].layout must be a non-empty"),
        (
            {"pools": [{"layout": "A", "pool": "p", "gpus": 1, "gpu": 2}]},
            "llmops_cost_pools[0] has unknown keys ['gpu']",
        ),
        (
            {"pools": [{"layout": "A", "pool": "p", "gpus": 1}, {"layout": "A", "pool": "p", "gpus": 2}]},
            "pool 'p' appears twice in layout 'A'",
        ),
    ],
)
def test_bad_values_name_the_variable(change: dict, message: str) -> None:
    with pytest.raises(gc.CostReportError) as err:
        gc.compute_cost_report({**ADR, **change})
    assert message in str(err.value)


def test_the_filter_names_the_host_and_variable() -> None:
    report = FilterModule().filters()["gpu_cost_report"]
    hostvars = {"gpu-9": {"llmops_cost_layout": "A", "vllm_host_instances": [{"name": "main", "port": 8000}]}}
    with pytest.raises(AnsibleFilterError, match="llmops_cost_gpus of host gpu-9 is not set"):
        report({**ADR, "pools": []}, ["gpu-9"], hostvars)
    hostvars = {"gpu-9": {"llmops_cost_layout": "A", "llmops_cost_gpus": 1, "llmops_cost_busy_hours": -1}}
    with pytest.raises(AnsibleFilterError, match="llmops_cost_busy_hours of host gpu-9 must be zero or more"):
        report({**ADR, "pools": []}, ["gpu-9"], hostvars)
    result = report(ADR, ["gpu-9"], {"gpu-9": {"llmops_cost_layout": "C", "llmops_cost_gpus": 1}})
    assert totals(result)["C"]["cost_per_period"] == pytest.approx(487.20)
