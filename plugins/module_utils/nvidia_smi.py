# Copyright: (c) 2026, llmops.platform maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Parse nvidia-smi output into typed Python values.

Pure Python (standard library only), Python 3.8 compatible, so modules on targets and controller
code share it. The formats follow real captures from an H100 80GB host (tests/unit/data/nvidia-smi).
"""

from __future__ import absolute_import, division, print_function  # noqa: UP010

__metaclass__ = type  # noqa: UP001

import re
import xml.etree.ElementTree as ET
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

# Values nvidia-smi prints for "no value" in CSV and -q output.
_NOT_AVAILABLE = {"n/a", "[n/a]", "[not supported]", "not supported", "[unknown error]", "[insufficient permissions]"}
_UNIT_RE = re.compile(r"^(?P<name>[^\[]+?)\s*\[(?P<unit>[^\]]+)\]$")


class NvidiaSmiParseError(ValueError):
    """nvidia-smi printed something this parser does not understand; the message quotes it."""


def _text(value: str) -> Optional[str]:
    value = value.strip()
    return None if value.lower() in _NOT_AVAILABLE else value


def _int(value: str) -> Optional[int]:
    text = _text(value)
    return None if text is None else int(text)


def _float(value: str) -> Optional[float]:
    text = _text(value)
    return None if text is None else float(text)


def _enabled(value: str) -> Optional[bool]:
    text = _text(value)
    if text is None:
        return None
    if text.lower() in ("enabled", "on", "yes"):
        return True
    if text.lower() in ("disabled", "off", "no"):
        return False
    raise ValueError(f"expected Enabled or Disabled, got {text!r}")


# --query-gpu fields, in query order: (nvidia-smi field, result key, converter). The set is what a
# real H100 host answers (smi_query_gpu.csv); compute mode, CUDA version and fabric come from -q -x.
GPU_QUERY_FIELDS = (
    ("index", "index", _int),
    ("uuid", "uuid", _text),
    ("name", "name", _text),
    ("memory.total", "memory_total_mib", _int),
    ("memory.used", "memory_used_mib", _int),
    ("memory.free", "memory_free_mib", _int),
    ("driver_version", "driver_version", _text),
    ("persistence_mode", "persistence_mode", _enabled),
    ("mig.mode.current", "mig_mode", _text),
    ("compute_cap", "compute_cap", _text),
    ("pci.bus_id", "pci_bus_id", _text),
    ("utilization.gpu", "utilization_gpu_pct", _int),
    ("temperature.gpu", "temperature_gpu_c", _int),
    ("power.draw", "power_draw_w", _float),
)  # type: Tuple[Tuple[str, str, Callable[[str], Any]], ...]

COMPUTE_APPS_FIELDS = (
    ("gpu_uuid", "gpu_uuid", _text),
    ("pid", "pid", _int),
    ("process_name", "process_name", _text),
    ("used_memory", "used_memory_mib", _int),
)  # type: Tuple[Tuple[str, str, Callable[[str], Any]], ...]

# Header names nvidia-smi prints for a query field when they differ from the field's name.
_HEADER_ALIASES = {"used_gpu_memory": "used_memory"}
_FREE_TEXT_FIELD = "process_name"  # the one field whose value may itself contain ", "


def gpu_query_command(nvidia_smi: str) -> List[str]:
    return [
        nvidia_smi,
        "--query-gpu=" + ",".join(f[0] for f in GPU_QUERY_FIELDS),
        "--format=csv,noheader,nounits",
    ]


def compute_apps_command(nvidia_smi: str) -> List[str]:
    return [
        nvidia_smi,
        "--query-compute-apps=" + ",".join(f[0] for f in COMPUTE_APPS_FIELDS),
        "--format=csv,noheader,nounits",
    ]


def details_command(nvidia_smi: str) -> List[str]:
    return [nvidia_smi, "-q", "-x"]


def _split_header(line: str) -> Tuple[List[str], List[Optional[str]]]:
    names, units = [], []  # type: Tuple[List[str], List[Optional[str]]]
    for raw in line.split(","):
        column = raw.strip()
        match = _UNIT_RE.match(column)
        name, unit = (match.group("name"), match.group("unit")) if match else (column, None)
        names.append(_HEADER_ALIASES.get(name, name))
        units.append(unit)
    return names, units


def parse_csv_query(
    output: str,
    fields: Sequence[Tuple[str, str, Callable[[str], Any]]],
) -> List[Dict[str, Any]]:
    """Rows of ``--query-*`` CSV output as dicts keyed by the fields' result keys.

    Reads ``--format=csv,noheader,nounits`` (what the module asks for): the columns are ``fields``
    in order. Also reads ``--format=csv``
    with its header and units (what people capture): the header names the columns, in any order,
    units such as `` MiB`` are stripped from values, and fields it does not name are None.
    ``[N/A]``-style values become None.
    """
    by_name = {f[0]: f for f in fields}
    lines = [line for line in output.splitlines() if line.strip()]
    columns = list(fields)
    units = [None] * len(fields)  # type: List[Optional[str]]
    if lines:
        names, header_units = _split_header(lines[0])
        if names[0] in by_name:
            unknown = [n for n in names if n not in by_name]
            if unknown:
                raise NvidiaSmiParseError(
                    "nvidia-smi header names fields this parser does not know ({}): {!r}".format(
                        ", ".join(unknown), lines[0]
                    )
                )
            columns = [by_name[n] for n in names]
            units = header_units
            lines.pop(0)
    names_in_order = [c[0] for c in columns]
    free = names_in_order.index(_FREE_TEXT_FIELD) if _FREE_TEXT_FIELD in names_in_order else None
    rows = []
    for line in lines:
        values = [v.strip() for v in line.split(",")]
        if free is not None and len(values) > len(columns):
            # A process name with commas in it: nvidia-smi does not quote CSV values.
            extra = len(values) - len(columns)
            values[free : free + extra + 1] = [", ".join(values[free : free + extra + 1])]
        if len(values) != len(columns):
            raise NvidiaSmiParseError(
                f"unexpected nvidia-smi output line (expected {len(columns)} comma-separated values,"
                f" got {len(values)}): {line!r}"
            )
        row = {key: None for _name, key, _convert in fields}  # type: Dict[str, Any]
        for (name, key, convert), unit, raw in zip(columns, units, values):
            value = raw[: -len(unit) - 1] if unit and raw.endswith(" " + unit) else raw
            try:
                row[key] = convert(value)
            except ValueError:
                raise NvidiaSmiParseError(
                    f"cannot read {name} from nvidia-smi output line {line!r}: {value!r}"
                ) from None
        rows.append(row)
    return rows


def parse_gpu_query(output: str) -> List[Dict[str, Any]]:
    return parse_csv_query(output, GPU_QUERY_FIELDS)


def parse_compute_apps(output: str) -> List[Dict[str, Any]]:
    # With no process on any GPU the CSV output is empty (the table says "No running processes found").
    if output.strip().lower().startswith("no running"):
        return []
    return parse_csv_query(output, COMPUTE_APPS_FIELDS)


def _find_text(element: Any, path: str) -> Optional[str]:
    found = element.find(path)
    if found is None or found.text is None:
        return None
    return _text(found.text)


def parse_details_xml(output: str) -> Dict[str, Any]:
    """The parts of ``nvidia-smi -q -x`` the text query cannot give: CUDA version, compute mode, fabric.

    On NVSwitch systems (HGX) each GPU reports a fabric ``state`` (Not Started, In Progress,
    Completed) and ``status``; without NVSwitch they are N/A. GPUs only become usable there once
    the NVIDIA fabric manager has completed fabric registration.
    """
    try:
        root = ET.fromstring(output)  # noqa: S314 - local nvidia-smi output, not untrusted input
    except ET.ParseError as exc:
        first = output.strip().splitlines()[0] if output.strip() else ""
        raise NvidiaSmiParseError(f"nvidia-smi -q -x did not print XML ({exc}); first line: {first!r}") from None
    if root.tag != "nvidia_smi_log":
        raise NvidiaSmiParseError(f"nvidia-smi -q -x printed <{root.tag}>, expected <nvidia_smi_log>")
    gpus = []
    for gpu in root.findall("gpu"):
        processes = []
        for proc in gpu.findall("processes/process_info"):
            used = _find_text(proc, "used_memory")
            processes.append(
                {
                    "pid": _int(_find_text(proc, "pid") or "N/A"),
                    "type": _find_text(proc, "type"),
                    "process_name": _find_text(proc, "process_name"),
                    "used_memory_mib": _int(used[: -len(" MiB")]) if used and used.endswith(" MiB") else None,
                }
            )
        gpus.append(
            {
                "pci_bus_id": gpu.get("id"),
                "uuid": _find_text(gpu, "uuid"),
                "name": _find_text(gpu, "product_name"),
                "architecture": _find_text(gpu, "product_architecture"),
                "compute_mode": _find_text(gpu, "compute_mode"),
                "mig_mode": _find_text(gpu, "mig_mode/current_mig"),
                "fabric_state": _find_text(gpu, "fabric/state"),
                "fabric_status": _find_text(gpu, "fabric/status"),
                "processes": processes,
            }
        )
    attached = _find_text(root, "attached_gpus")
    return {
        "driver_version": _find_text(root, "driver_version"),
        "cuda_version": _find_text(root, "cuda_version"),
        "attached_gpus": int(attached) if attached else len(gpus),
        "gpus": gpus,
    }


def fabric_summary(details_gpus: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Whether the fabric manager is needed (any GPU reports a fabric state) and whether it is done."""
    states = [g["fabric_state"] for g in details_gpus if g.get("fabric_state") is not None]
    if not states:
        return {"fabric_manager_required": False, "fabric_state": None, "fabric_ready": True}
    pending = [g for g in details_gpus if g.get("fabric_state") is not None and g["fabric_state"] != "Completed"]
    failed = [g for g in details_gpus if g.get("fabric_status") not in (None, "Success")]
    state = pending[0]["fabric_state"] if pending else "Completed"
    return {
        "fabric_manager_required": True,
        "fabric_state": state,
        "fabric_ready": not pending and not failed,
    }


def merge_gpu_info(
    query_rows: List[Dict[str, Any]],
    apps_rows: List[Dict[str, Any]],
    details: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """One result: the CSV rows, each with its processes and the -q -x details of the same GPU."""
    by_uuid = {g["uuid"]: g for g in (details or {}).get("gpus", [])}
    gpus = []
    for row in query_rows:
        gpu = dict(row)
        extra = by_uuid.get(row["uuid"], {})
        for key in ("architecture", "compute_mode", "fabric_state", "fabric_status"):
            gpu[key] = extra.get(key)
        gpu["processes"] = [
            {k: v for k, v in app.items() if k != "gpu_uuid"} for app in apps_rows if app["gpu_uuid"] == row["uuid"]
        ]
        gpus.append(gpu)
    drivers = sorted({g["driver_version"] for g in gpus if g.get("driver_version")})
    result = {
        "count": len(gpus),
        "gpus": gpus,
        "driver_version": (details or {}).get("driver_version") or (drivers[0] if drivers else None),
        "cuda_version": (details or {}).get("cuda_version"),
    }
    result.update(fabric_summary((details or {}).get("gpus", [])))
    return result
