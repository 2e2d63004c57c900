# Copyright: (c) 2026, llmops.platform maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The fleet status report (playbooks/fleet_status.yml): one row per vLLM instance or pod, in both layouts.

What each host or cluster reported (the ``status`` entry points of roles vllm_host + model_sync and vllm_k8s) comes
in as one *entry* per host or Deployment; this module turns the entries into rows, decides each row's state and
renders the rows as a fixed-width table, Markdown and JSON. One computation for every caller (the
``fleet_status_report`` filter, the unit tests).

An entry::

    {layout: external|internal, host: str, reachable: bool (default true), error: str (status not collected),
     model: {current, previous, digest, previous_digest, promoted_at (epoch s or ISO), promotion: str},
     instances: [{name, unit: {load, active, sub, n_restarts} (external) | pod: {phase, ready, restarts,
                  waiting_reason} (internal), maintenance, installed_version, image, model: {...overrides},
                  health: openai_health's result (ready, server_version, served_models, model, kind, msg) or null}]}

States, decided from the process supervisor first and from a real completion second:
``healthy`` (answered the completion), ``hung`` (running, but the health check timed out: it accepts and does
not answer), ``unhealthy`` (running, answered with an error), ``stopped`` (unit inactive, pod gone or
succeeded), ``failed`` (unit failed, pod failed or crash-looping), ``starting`` (unit activating, pod pending
or not ready yet), ``absent`` (no such unit), ``unreachable`` (the host did not answer), ``error`` (the host
answered but its status could not be read), ``unknown`` (running, not probed: check mode).
"""

from __future__ import annotations

import datetime
import json
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

STATES = (
    "healthy",
    "hung",
    "unhealthy",
    "stopped",
    "failed",
    "starting",
    "absent",
    "unreachable",
    "error",
    "unknown",
)
# States an operator must look at: the report's summary counts them, and the playbook can fail on them.
BAD_STATES = frozenset(STATES) - {"healthy"}

COLUMNS = (
    ("layout", "LAYOUT"),
    ("host", "HOST"),
    ("instance", "INSTANCE"),
    ("state", "STATE"),
    ("vllm_version", "VLLM"),
    ("served_model", "MODEL"),
    ("digest", "DIGEST"),
    ("current", "CURRENT"),
    ("previous", "PREVIOUS"),
    ("restarts", "RESTARTS"),
    ("promoted_at", "LAST PROMOTION"),
    ("detail", "DETAIL"),
)
# The table shows the start of a digest (as model versions do); Markdown and JSON carry it whole.
TABLE_DIGEST_CHARS = 16
TABLE_DETAIL_CHARS = 60
REDACTED = "********"
# Health failure kinds (plugins/module_utils/openai_client.py) that mean "accepts, but does not answer in time".
HUNG_KINDS = frozenset({"timeout"})


class FleetStatusError(ValueError):
    """An entry that is not shaped as the status entry points write it."""


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def format_time(value: Any) -> str:
    """Epoch seconds (int, float or numeric string) as ISO 8601 UTC to the second; other text as it is."""
    if value is None or value == "":
        return ""
    if isinstance(value, bool):
        raise FleetStatusError(f"a time must be epoch seconds or text, got {value!r}")
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return str(value)
    stamp = datetime.datetime.fromtimestamp(seconds, tz=datetime.timezone.utc)
    return stamp.strftime("%Y-%m-%dT%H:%M:%SZ")


def _first_line(text: Any, limit: int = 300) -> str:
    line = " ".join(_text(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def external_state(instance: Mapping[str, Any]) -> tuple[str, str]:
    """(state, detail) of a systemd instance: the unit's state first, then its health check."""
    unit = instance.get("unit") or {}
    active, sub = _text(unit.get("active")), _text(unit.get("sub"))
    if _text(unit.get("load")) == "not-found":
        return "absent", "no unit vllm@{} on the host".format(instance.get("name", ""))
    if active == "failed":
        return "failed", f"unit failed ({sub})" if sub else "unit failed"
    if active in ("inactive", "deactivating"):
        return "stopped", f"unit {active} ({sub})" if sub else f"unit {active}"
    if active in ("activating", "reloading"):
        return "starting", f"unit {active} ({sub})" if sub else f"unit {active}"
    return _health_state(instance, f"unit {active}" if active and active != "active" else "")


def internal_state(instance: Mapping[str, Any]) -> tuple[str, str]:
    """(state, detail) of a vLLM pod: its phase and readiness first, then its health check."""
    pod = instance.get("pod") or {}
    phase, waiting = _text(pod.get("phase")), _text(pod.get("waiting_reason"))
    if phase == "Failed" or waiting in ("CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull", "CreateContainerError"):
        return "failed", f"pod {phase}" + (f", {waiting}" if waiting else "")
    if phase == "Succeeded":
        return "stopped", "pod Succeeded (its container exited)"
    if (phase in ("Pending", "") or not pod.get("ready")) and instance.get("health") is None:
        return "starting", f"pod {phase or 'without phase'}, not ready" + (f" ({waiting})" if waiting else "")
    return _health_state(instance, "" if pod.get("ready") else f"pod {phase}, not ready")


def _health_state(instance: Mapping[str, Any], note: str) -> tuple[str, str]:
    health = instance.get("health")
    if not isinstance(health, Mapping):
        return "unknown", note or "not probed (check mode)"
    if health.get("ready"):
        latency = (health.get("latencies") or {}).get("completion")
        detail = f"completion in {latency:.0f} ms" if isinstance(latency, (int, float)) else "completion answered"
        return "healthy", f"{note}; {detail}" if note else detail
    message = _first_line(health.get("msg") or "health check failed")
    if _text(health.get("kind")) in HUNG_KINDS:
        return "hung", f"accepts but does not answer: {message}"
    return "unhealthy", message


def _instance_row(entry: Mapping[str, Any], instance: Mapping[str, Any]) -> Dict[str, Any]:
    layout = _text(entry.get("layout")) or "external"
    if layout == "internal":
        state, detail = internal_state(instance)
        restarts = (instance.get("pod") or {}).get("restarts")
    else:
        state, detail = external_state(instance)
        restarts = (instance.get("unit") or {}).get("n_restarts")
    if state != "healthy" and instance.get("maintenance"):
        detail = f"{detail}; in maintenance (drained)" if detail else "in maintenance (drained)"
    health = instance.get("health") if isinstance(instance.get("health"), Mapping) else {}
    model = dict(entry.get("model") or {})
    model.update({k: v for k, v in (instance.get("model") or {}).items() if v not in (None, "")})
    served = health.get("model") or ", ".join(health.get("served_models") or []) or instance.get("expected_model")
    # The release that answered (/version) when it answered; otherwise what is installed (venv, image).
    version = health.get("server_version") or instance.get("installed_version") or ""
    return {
        "layout": layout,
        "host": _text(entry.get("host")),
        "instance": _text(instance.get("name")),
        "state": state,
        "vllm_version": _text(version),
        "vllm_version_source": "server" if health.get("server_version") else ("installed" if version else ""),
        "installed_version": _text(instance.get("installed_version")),
        "served_model": _text(served),
        "digest": _text(model.get("digest")),
        "current": _text(model.get("current")),
        "previous": _text(model.get("previous")),
        "previous_digest": _text(model.get("previous_digest")),
        "restarts": None if restarts is None else int(restarts),
        "promoted_at": format_time(model.get("promoted_at")),
        "promotion": _text(model.get("promotion")),
        "detail": detail,
    }


def _host_row(entry: Mapping[str, Any], state: str, detail: str) -> Dict[str, Any]:
    model = entry.get("model") or {}
    return {
        "layout": _text(entry.get("layout")) or "external",
        "host": _text(entry.get("host")),
        "instance": "",
        "state": state,
        "vllm_version": "",
        "vllm_version_source": "",
        "installed_version": "",
        "served_model": "",
        "digest": _text(model.get("digest")),
        "current": _text(model.get("current")),
        "previous": _text(model.get("previous")),
        "previous_digest": _text(model.get("previous_digest")),
        "restarts": None,
        "promoted_at": format_time(model.get("promoted_at")),
        "promotion": _text(model.get("promotion")),
        "detail": _first_line(detail),
    }


def _served_name(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return str(value[0]) if value else ""
    return _text(value)


def external_entry(entry: Mapping[str, Any]) -> Dict[str, Any]:
    """An entry of playbooks/fleet_status.yml's external play ({host, reachable, error, vllm_host: the vllm_host_status
    fact, model_sync: the model_sync_status fact}) as instances and a model."""
    status = entry.get("vllm_host") or {}
    store = entry.get("model_sync") or {}
    health = {}
    for result in status.get("health") or []:
        if isinstance(result, Mapping) and "item" in result:
            health[_text(result["item"])] = result
    maintenance = set(status.get("maintenance") or [])
    units = status.get("units") or {}
    served = list(status.get("served_models") or [])
    instances = []
    for index, name in enumerate(status.get("names") or []):
        instances.append(
            {
                "name": name,
                "unit": units.get(f"vllm@{name}.service") or {},
                "maintenance": name in maintenance,
                "installed_version": status.get("installed_version") or "",
                "expected_model": _served_name(served[index]) if index < len(served) else "",
                "health": health.get(name),
            }
        )
    model = {
        "current": store.get("current"),
        "previous": store.get("previous"),
        "digest": store.get("digest"),
        "previous_digest": store.get("previous_digest"),
        "promoted_at": store.get("promoted_at"),
        "promotion": "current switched" if store.get("promoted_at") not in (None, "") else "",
    }
    out = {k: entry.get(k) for k in ("layout", "host", "reachable", "error")}
    out.update(layout="external", model=model, instances=instances)
    return out


def _matches(pod: Mapping[str, Any], selector: Mapping[str, Any]) -> bool:
    labels = (pod.get("metadata") or {}).get("labels") or {}
    return all(labels.get(key) == value for key, value in (selector or {}).items())


def pods_to_probe(pods: Iterable[Any], selector: Mapping[str, Any], base_port: Any, default_port: Any) -> List[Dict]:
    """The port-forwards of a status read: one per running pod the selector matches ({name, pod, port, local_port})."""
    out: List[Dict[str, Any]] = []
    for pod in pods or []:
        if not isinstance(pod, Mapping) or not _matches(pod, selector):
            continue
        if (pod.get("status") or {}).get("phase") != "Running":
            continue
        containers = (pod.get("spec") or {}).get("containers") or [{}]
        ports = containers[0].get("ports") or [{}]
        name = _text((pod.get("metadata") or {}).get("name"))
        out.append(
            {
                "name": f"vllm-status-{len(out)}",
                "pod": name,
                "port": int(ports[0].get("containerPort") or default_port),
                "local_port": int(base_port) + len(out),
            }
        )
    return out


def _json_record(value: Any) -> Dict[str, Any]:
    if isinstance(value, Mapping):
        return dict(value)
    try:
        parsed = json.loads(value) if value else {}
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _pod_state(pod: Mapping[str, Any]) -> Dict[str, Any]:
    status = pod.get("status") or {}
    statuses = status.get("containerStatuses") or []
    waiting = ""
    for container in statuses:
        waiting = ((container.get("state") or {}).get("waiting") or {}).get("reason") or waiting
    return {
        "phase": _text(status.get("phase")),
        "ready": bool(statuses) and all(container.get("ready") for container in statuses),
        "restarts": sum(int(container.get("restartCount") or 0) for container in statuses),
        "waiting_reason": waiting,
    }


def internal_entry(entry: Mapping[str, Any]) -> Dict[str, Any]:
    """An entry of the internal play ({host, error, vllm_k8s: the vllm_k8s_status fact}) as instances and a model."""
    status = entry.get("vllm_k8s") or {}
    host = _text(entry.get("host")) or _text(status.get("name"))
    out: Dict[str, Any] = {
        "layout": "internal",
        "host": host,
        "reachable": entry.get("reachable"),
        "error": entry.get("error"),
    }
    deployment = status.get("deployment")
    if not entry.get("error") and not isinstance(deployment, Mapping):
        out["error"] = f"no Deployment {status.get('name', host)}: vLLM is not deployed in this cluster"
        return out
    deployment = deployment or {}
    record = status.get("record") or {}
    previous = _json_record(record.get("previous"))
    annotations = (deployment.get("metadata") or {}).get("annotations") or {}
    revision = annotations.get("deployment.kubernetes.io/revision")
    conditions = (deployment.get("status") or {}).get("conditions") or []
    rolled = [c.get("lastUpdateTime") for c in conditions if c.get("type") == "Progressing" and c.get("lastUpdateTime")]
    out["model"] = {
        "current": record.get("revision"),
        "previous": previous.get("revision"),
        "digest": record.get("digest"),
        "previous_digest": previous.get("digest"),
        "promoted_at": rolled[0] if rolled else "",
        "promotion": f"Deployment revision {revision}" if revision else "",
    }
    selector = ((deployment.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    key = _text(status.get("revision_annotation")) or "llmops.io/model-revision"
    health = {}
    for result in status.get("health") or []:
        if isinstance(result, Mapping) and isinstance(result.get("item"), Mapping):
            health[_text(result["item"].get("pod"))] = result
    instances = []
    for pod in status.get("pods") or []:
        if not isinstance(pod, Mapping) or not _matches(pod, selector):
            continue
        meta = pod.get("metadata") or {}
        containers = (pod.get("spec") or {}).get("containers") or [{}]
        image = _text(containers[0].get("image"))
        pod_revision = _text((meta.get("annotations") or {}).get(key))
        model: Dict[str, Any] = {}
        # A pod of an older ReplicaSet (mid-rollout) serves the revision it was started with.
        if pod_revision and pod_revision != _text(record.get("revision")):
            model = {
                "current": pod_revision,
                "digest": previous.get("digest") if pod_revision == previous.get("revision") else "",
            }
        instances.append(
            {
                "name": _text(meta.get("name")),
                "pod": _pod_state(pod),
                "image": image,
                "installed_version": image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else "",
                "model": model,
                "health": health.get(_text(meta.get("name"))),
            }
        )
    out["instances"] = instances
    return out


def normalise_entry(entry: Any) -> Any:
    """Raw entries (what the playbook's plays collect) to the instances/model shape; shaped ones pass through."""
    if isinstance(entry, Mapping) and "instances" not in entry:
        if "vllm_k8s" in entry:
            return internal_entry(entry)
        if "vllm_host" in entry or "model_sync" in entry:
            return external_entry(entry)
    return entry


def fleet_rows(entries: Iterable[Any]) -> List[Dict[str, Any]]:
    """One row per instance (or pod) of every entry; a host that gave no status is one row saying why."""
    rows: List[Dict[str, Any]] = []
    for entry in map(normalise_entry, entries):
        if not isinstance(entry, Mapping) or not _text(entry.get("host")):
            raise FleetStatusError(f"a fleet status entry must be a mapping with a host, got {entry!r}")
        instances = entry.get("instances")
        if entry.get("reachable") is False:
            rows.append(_host_row(entry, "unreachable", entry.get("error") or "the host did not answer"))
        elif entry.get("error"):
            rows.append(_host_row(entry, "error", entry["error"]))
        elif not instances:
            none = "no vLLM pod" if entry.get("layout") == "internal" else "no vLLM instance configured"
            rows.append(_host_row(entry, "stopped" if entry.get("layout") == "internal" else "absent", none))
        else:
            if not isinstance(instances, Sequence) or isinstance(instances, (str, bytes)):
                raise FleetStatusError(f"instances of {entry.get('host')} must be a list, got {instances!r}")
            rows.extend(_instance_row(entry, instance) for instance in instances)
    return rows


def _redact(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return text


def _cell(row: Mapping[str, Any], key: str, *, table: bool) -> str:
    value = row.get(key)
    if value is None or value == "":
        return "-"
    text = str(value)
    if table and key == "digest":
        return text[:TABLE_DIGEST_CHARS]
    if table and key == "detail" and len(text) > TABLE_DETAIL_CHARS:
        return text[: TABLE_DETAIL_CHARS - 3] + "..."
    return text


def summary(rows: Sequence[Mapping[str, Any]]) -> Dict[str, int]:
    counts = {state: 0 for state in STATES}
    for row in rows:
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    return {state: count for state, count in counts.items() if count}


def render_table(rows: Sequence[Mapping[str, Any]]) -> List[str]:
    """Fixed-width lines: a header, one line per row, then the summary."""
    cells = [[title for _key, title in COLUMNS]]
    cells += [[_cell(row, key, table=True) for key, _title in COLUMNS] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(value.ljust(width) for value, width in zip(line, widths)).rstrip() for line in cells]
    counts = summary(rows)
    lines.append(", ".join(f"{count} {state}" for state, count in counts.items()) if counts else "no vLLM found")
    return lines


def render_markdown(rows: Sequence[Mapping[str, Any]], generated_at: str) -> str:
    counts = summary(rows)
    out = [
        "# vLLM fleet status",
        "",
        f"Generated {generated_at}: " + (", ".join(f"{n} {state}" for state, n in counts.items()) or "no vLLM found"),
        "",
        "| " + " | ".join(title for _key, title in COLUMNS) + " |",
        "| " + " | ".join("---" for _column in COLUMNS) + " |",
    ]
    for row in rows:
        values = [_cell(row, key, table=False).replace("|", "\\|") for key, _title in COLUMNS]
        out.append("| " + " | ".join(values) + " |")
    return "\n".join(out) + "\n"


def fleet_status_report(
    entries: Iterable[Any], generated_at: Any = None, secrets: Optional[Sequence[str]] = None
) -> Dict[str, Any]:
    """The rows, their summary, and the report as table lines, Markdown and JSON (no secret in any of them)."""
    stamp = format_time(generated_at) or datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    rows = fleet_rows(entries)
    hidden = [str(secret) for secret in secrets or [] if secret]
    if hidden:
        rows = [json.loads(_redact(json.dumps(row), [json.dumps(s)[1:-1] for s in hidden])) for row in rows]
    counts = summary(rows)
    document = {"generated_at": stamp, "summary": counts, "rows": rows}
    return {
        "generated_at": stamp,
        "rows": rows,
        "summary": counts,
        "bad": [row for row in rows if row["state"] in BAD_STATES],
        "table": render_table(rows),
        "markdown": render_markdown(rows, stamp),
        "json": json.dumps(document, indent=2, sort_keys=False) + "\n",
    }
