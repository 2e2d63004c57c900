# Copyright: (c) 2026, llmops.platform maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The GPU cost comparison of ADR-002 ("Wpływ na koszty") for an operator's fleet.

One computation for every caller (the ``gpu_cost_report`` filter, playbooks/cost_report.yml, the unit tests):
pools of GPUs per layout, billed hours per period, a price per GPU-hour, then the cost per period and per year
of each layout and what the cheaper ones save against the most expensive.

Money is computed with ``Decimal`` and rounded half up to cents only when shown, so the ADR's example comes out
exact: 2 x 168 h x 2.9 = 974.40 per pool, 1,948.80 for option A, 1,461.60 for option B (the ADR prints the
rounded ~$975, ~$1,950 and ~$1,461).

Pools come from the inventory: every host that sets ``llmops_cost_layout`` is a pool of its own (GPUs from
``llmops_cost_gpus`` or the distinct ``devices`` of its ``vllm_host_instances``), plus the pools declared in
``llmops_cost_pools`` (GPU nodes that are not Ansible hosts, such as the internal cluster's).
"""

from __future__ import annotations

import csv
import io
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, Dict, Iterable, List, Mapping, Optional

PRICE_VARIABLE = "llmops_cost_price_per_gpu_hour"
HOURS_VARIABLE = "llmops_cost_hours"
PERIODS_VARIABLE = "llmops_cost_periods_per_year"
POOLS_VARIABLE = "llmops_cost_pools"
CURRENCY_VARIABLE = "llmops_cost_currency"
PERIOD_VARIABLE = "llmops_cost_period"
HOST_LAYOUT = "llmops_cost_layout"
HOST_GPUS = "llmops_cost_gpus"
HOST_POOL = "llmops_cost_pool"
HOST_HOURS = "llmops_cost_pool_hours"
HOST_BUSY = "llmops_cost_busy_hours"
HOST_PRICE = "llmops_cost_pool_price"

CSV_COLUMNS = (
    "layout",
    "pool",
    "gpus",
    "hours_per_period",
    "price_per_gpu_hour",
    "gpu_hours",
    "cost_per_period",
    "cost_per_year",
    "busy_gpu_hours",
    "utilisation_pct",
    "idle_cost_per_period",
)

_CENT = Decimal("0.01")


class CostReportError(ValueError):
    """A value that cannot give a cost: the message names the variable."""


def _number(value: Any, where: str, *, positive: bool = True, allow_zero: bool = False) -> Decimal:
    if isinstance(value, bool) or value is None or (isinstance(value, str) and not value.strip()):
        raise CostReportError(f"{where} must be a number, got {value!r}")
    try:
        number = Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        raise CostReportError(f"{where} must be a number, got {value!r}") from None
    if not number.is_finite():
        raise CostReportError(f"{where} must be a finite number, got {value!r}")
    if number < 0 or (number == 0 and not allow_zero):
        wanted = "zero or more" if allow_zero else "more than zero"
        raise CostReportError(f"{where} must be {wanted}, got {value!r}")
    return number


def _whole(value: Any, where: str, *, allow_zero: bool = False) -> int:
    number = _number(value, where, allow_zero=allow_zero)
    if number != number.to_integral_value():
        raise CostReportError(f"{where} must be a whole number, got {value!r}")
    return int(number)


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip() or any(ch in value for ch in "\r\n|"):
        raise CostReportError(f"{where} must be a non-empty one-line text without '|', got {value!r}")
    return value.strip()


def host_gpus(host: str, hostvars: Mapping[str, Any]) -> int:
    """A host's GPUs: llmops_cost_gpus, or the distinct devices its vllm_host_instances name."""
    if hostvars.get(HOST_GPUS) is not None:
        return _whole(hostvars[HOST_GPUS], f"{HOST_GPUS} of host {host}")
    instances = hostvars.get("vllm_host_instances")
    if (
        isinstance(instances, list)
        and instances
        and all(isinstance(i, Mapping) and isinstance(i.get("devices"), list) and i["devices"] for i in instances)
    ):
        devices = {str(d) for instance in instances for d in instance["devices"]}
        return len(devices)
    raise CostReportError(
        f"{HOST_GPUS} of host {host} is not set and its vllm_host_instances do not all list devices: "
        f"set {HOST_GPUS} to the host's GPU count"
    )


def inventory_pools(hosts: Iterable[str], hostvars: Mapping[str, Mapping[str, Any]]) -> List[Dict[str, Any]]:
    """One pool per host that sets llmops_cost_layout (others are not part of the fleet's cost)."""
    pools = []
    for host in hosts:
        hv = hostvars.get(host) or {}
        if hv.get(HOST_LAYOUT) in (None, ""):
            continue
        pool = {
            "layout": hv[HOST_LAYOUT],
            "pool": hv.get(HOST_POOL) or host,
            "gpus": host_gpus(host, hv),
            "source": f"host {host}",
        }
        for key, name in (("hours", HOST_HOURS), ("busy_hours", HOST_BUSY), ("price", HOST_PRICE)):
            if hv.get(name) is not None:
                pool[key] = hv[name]
        pools.append(pool)
    return pools


def _check_pool(index: int, pool: Any, hours: Decimal, price: Decimal) -> Dict[str, Any]:
    where = (
        f"{pool.get('source')}" if isinstance(pool, Mapping) and pool.get("source") else f"{POOLS_VARIABLE}[{index}]"
    )
    if not isinstance(pool, Mapping):
        raise CostReportError(f"{where} must be a mapping with layout, pool and gpus, got {pool!r}")
    unknown = set(pool) - {"layout", "pool", "gpus", "hours", "busy_hours", "price", "source"}
    if unknown:
        raise CostReportError(
            f"{where} has unknown keys {sorted(unknown)}; known: layout, pool, gpus, hours, busy_hours, price"
        )
    host = where.startswith("host ")
    names = {
        "layout": HOST_LAYOUT if host else "layout",
        "pool": HOST_POOL if host else "pool",
        "gpus": HOST_GPUS if host else "gpus",
        "hours": HOST_HOURS if host else "hours",
        "busy_hours": HOST_BUSY if host else "busy_hours",
        "price": HOST_PRICE if host else "price",
    }

    def name(key: str) -> str:
        return f"{names[key]} of {where}" if host else f"{where}.{key}"

    layout = _text(pool.get("layout"), name("layout"))
    label = _text(str(pool.get("pool", "")), name("pool"))
    gpus = _whole(pool.get("gpus"), name("gpus"))
    pool_hours = _number(pool["hours"], name("hours")) if pool.get("hours") is not None else hours
    if pool_hours > hours:
        raise CostReportError(f"{name('hours')} is {pool_hours}, more than the period's {HOURS_VARIABLE} ({hours})")
    busy = None
    if pool.get("busy_hours") is not None:
        busy = _number(pool["busy_hours"], name("busy_hours"), allow_zero=True)
        if busy > pool_hours:
            raise CostReportError(f"{name('busy_hours')} is {busy}, more than the {pool_hours} hours billed")
    pool_price = _number(pool["price"], name("price")) if pool.get("price") is not None else price
    return {"layout": layout, "pool": label, "gpus": gpus, "hours": pool_hours, "busy_hours": busy, "price": pool_price}


def _money(value: Decimal) -> Decimal:
    return value.quantize(_CENT, rounding=ROUND_HALF_UP)


def _plain(value: Optional[Decimal]) -> str:
    if value is None:
        return ""
    text = format(value.normalize(), "f")
    return text


def compute_cost_report(settings: Mapping[str, Any]) -> Dict[str, Any]:
    """The cost comparison: rows per pool, totals per layout, savings against the most expensive layout.

    settings: price_per_gpu_hour, hours (billed per period), periods_per_year, currency, period, pools (the
    inventory's and the declared ones, together). Fails naming the variable on a value that cannot give a cost.
    """
    price = _number(settings.get("price_per_gpu_hour"), PRICE_VARIABLE)
    hours = _number(settings.get("hours"), HOURS_VARIABLE)
    periods = _number(settings.get("periods_per_year"), PERIODS_VARIABLE)
    currency = _text(settings.get("currency", "USD"), CURRENCY_VARIABLE)
    period = _text(settings.get("period", "week"), PERIOD_VARIABLE)
    raw_pools = settings.get("pools")
    if not isinstance(raw_pools, list):
        raise CostReportError(f"{POOLS_VARIABLE} must be a list of pools, got {type(raw_pools).__name__}")
    if not raw_pools:
        raise CostReportError(
            f"no GPU pool to cost: set {HOST_LAYOUT} (and {HOST_GPUS}) on the inventory's GPU hosts or list "
            f"pools in {POOLS_VARIABLE}"
        )
    pools = [_check_pool(i, p, hours, price) for i, p in enumerate(raw_pools)]
    seen = set()
    for pool in pools:
        key = (pool["layout"], pool["pool"])
        if key in seen:
            raise CostReportError(
                f"pool {pool['pool']!r} appears twice in layout {pool['layout']!r}: give pools distinct names"
            )
        seen.add(key)

    rows = []
    layouts: Dict[str, Dict[str, Any]] = {}
    for pool in pools:
        gpu_hours = pool["gpus"] * pool["hours"]
        cost = gpu_hours * pool["price"]
        busy = None if pool["busy_hours"] is None else pool["gpus"] * pool["busy_hours"]
        row = {
            "layout": pool["layout"],
            "pool": pool["pool"],
            "gpus": pool["gpus"],
            "hours_per_period": pool["hours"],
            "price_per_gpu_hour": pool["price"],
            "gpu_hours": gpu_hours,
            "cost_per_period": cost,
            "cost_per_year": cost * periods,
            "busy_gpu_hours": busy,
            "utilisation_pct": None if busy is None else busy * 100 / gpu_hours,
            "idle_cost_per_period": None if busy is None else (gpu_hours - busy) * pool["price"],
        }
        rows.append(row)
        total = layouts.setdefault(
            pool["layout"],
            {"layout": pool["layout"], "gpus": 0, "gpu_hours": Decimal(0), "cost_per_period": Decimal(0)},
        )
        total["gpus"] += pool["gpus"]
        total["gpu_hours"] += gpu_hours
        total["cost_per_period"] += cost

    baseline = max(layouts.values(), key=lambda t: t["cost_per_period"])
    totals = []
    for total in layouts.values():
        total["cost_per_year"] = total["cost_per_period"] * periods
        saving = baseline["cost_per_period"] - total["cost_per_period"]
        total["saving_per_period"] = saving
        total["saving_per_year"] = saving * periods
        total["saving_pct"] = saving * 100 / baseline["cost_per_period"]
        totals.append(total)
    report = {
        "currency": currency,
        "period": period,
        "hours_per_period": hours,
        "periods_per_year": periods,
        "price_per_gpu_hour": price,
        "baseline": baseline["layout"],
        "rows": rows,
        "totals": totals,
    }
    report["markdown"] = render_markdown(report)
    report["csv"] = render_csv(report)
    report["table"] = render_table(report)
    return jsonable(report)


def _fmt_money(value: Optional[Decimal]) -> str:
    return "-" if value is None else f"{_money(value):,.2f}"


def _fmt_number(value: Optional[Decimal]) -> str:
    return "-" if value is None else f"{value.normalize():,f}"


def _fmt_pct(value: Optional[Decimal]) -> str:
    return "-" if value is None else f"{value.quantize(Decimal('0.1'), rounding=ROUND_HALF_UP)}%"


def _table_lines(report: Mapping[str, Any]) -> List[List[List[str]]]:
    cur, period = report["currency"], report["period"]
    pools = [
        [
            "layout",
            "pool",
            "GPUs",
            f"hours/{period}",
            f"{cur}/GPU-hour",
            "GPU-hours",
            f"{cur}/{period}",
            f"{cur}/year",
            "busy GPU-hours",
            "utilisation",
            f"idle {cur}/{period}",
        ]
    ]
    for r in report["rows"]:
        pools.append(
            [
                r["layout"],
                r["pool"],
                str(r["gpus"]),
                _fmt_number(r["hours_per_period"]),
                _fmt_number(r["price_per_gpu_hour"]),
                _fmt_number(r["gpu_hours"]),
                _fmt_money(r["cost_per_period"]),
                _fmt_money(r["cost_per_year"]),
                _fmt_number(r["busy_gpu_hours"]),
                _fmt_pct(r["utilisation_pct"]),
                _fmt_money(r["idle_cost_per_period"]),
            ]
        )
    totals = [
        ["layout", "GPUs", "GPU-hours", f"{cur}/{period}", f"{cur}/year", f"saving/{period}", "saving/year", "saving"]
    ]
    for t in report["totals"]:
        totals.append(
            [
                t["layout"],
                str(t["gpus"]),
                _fmt_number(t["gpu_hours"]),
                _fmt_money(t["cost_per_period"]),
                _fmt_money(t["cost_per_year"]),
                _fmt_money(t["saving_per_period"]),
                _fmt_money(t["saving_per_year"]),
                _fmt_pct(t["saving_pct"]),
            ]
        )
    return [pools, totals]


def _markdown_table(lines: List[List[str]], right_from: int) -> List[str]:
    out = ["| " + " | ".join(lines[0]) + " |"]
    out.append("|" + "|".join("---" if i < right_from else "---:" for i in range(len(lines[0]))) + "|")
    out.extend("| " + " | ".join(line) + " |" for line in lines[1:])
    return out


def render_markdown(report: Mapping[str, Any]) -> str:
    pools, totals = _table_lines(report)
    head = (
        f"# GPU cost per layout (ADR-002)\n\n"
        f"Price {_fmt_number(report['price_per_gpu_hour'])} {report['currency']} per GPU-hour, "
        f"{_fmt_number(report['hours_per_period'])} billed hours per {report['period']}, "
        f"{_fmt_number(report['periods_per_year'])} {report['period']}s a year. "
        f"Savings against the most expensive layout ({report['baseline']}).\n"
    )
    return (
        head
        + "\n## Layouts\n\n"
        + "\n".join(_markdown_table(totals, 1))
        + "\n\n## Pools\n\n"
        + "\n".join(_markdown_table(pools, 2))
        + "\n"
    )


def render_table(report: Mapping[str, Any]) -> List[str]:
    """Plain-text lines (aligned columns) for the play's output."""
    out: List[str] = []
    for lines, left in zip(_table_lines(report), (2, 1)):
        widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
        for n, line in enumerate(lines):
            out.append(
                "  ".join(cell.ljust(widths[i]) if i < left else cell.rjust(widths[i]) for i, cell in enumerate(line))
            )
            if n == 0:
                out.append("  ".join("-" * w for w in widths))
        out.append("")
    return out[:-1]


def _csv_value(key: str, value: Any) -> str:
    if value is None:
        return ""
    if key in ("cost_per_period", "cost_per_year", "idle_cost_per_period", "saving_per_period", "saving_per_year"):
        return str(_money(value))
    if key in ("utilisation_pct", "saving_pct"):
        return str(value.quantize(_CENT, rounding=ROUND_HALF_UP))
    return _plain(value) if isinstance(value, Decimal) else str(value)


def render_csv(report: Mapping[str, Any]) -> str:
    """One line per pool (kind pool) and per layout (kind layout), money in cents, plain numbers."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    columns = (*CSV_COLUMNS, "saving_per_period", "saving_per_year", "saving_pct")
    writer.writerow(("kind", *columns))
    for row in report["rows"]:
        writer.writerow(["pool"] + [_csv_value(k, row.get(k)) for k in columns])
    for total in report["totals"]:
        writer.writerow(["layout"] + [_csv_value(k, total.get(k)) for k in columns])
    return buffer.getvalue()


def jsonable(value: Any) -> Any:
    """Decimals as floats (rounded to cents where they are money is the renderers' job), for Ansible."""
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    return value
