# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Following a Kubernetes Job (action plugin llmops.platform.k8s_job_wait): how it ended, why its pod cannot
start, and how far a LLaMA-Factory run is, read from the pod's log.

Pure functions over the API's JSON (dicts as the kubernetes client's ``to_dict()`` or the raw API gives
them, camelCase or snake_case) and over log text; no client here, so they are unit-tested on captured output.
"""

from __future__ import annotations

import contextlib
import re
from datetime import datetime, timezone
from typing import Any, Dict, List, Optional

# Container waiting reasons that waiting does not cure: the kubelet reports them for a wrong image name, an
# image it cannot pull, or a pod spec that refers to a Secret/ConfigMap key that does not exist.
FATAL_WAITING = {
    "ErrImagePull": "the image cannot be pulled",
    "ImagePullBackOff": "the image cannot be pulled",
    "InvalidImageName": "the image name is invalid",
    "ErrImageNeverPull": "imagePullPolicy is Never and the image is not on the node",
    "CreateContainerConfigError": "the container refers to something missing (a Secret or ConfigMap key?)",
    "CreateContainerError": "the container cannot be created",
    "RunContainerError": "the container cannot be started",
}

ARGUMENT_SPEC: Dict[str, Any] = {
    "kubeconfig": {"type": "path"},
    "context": {"type": "str"},
    "namespace": {"type": "str", "required": True},
    "name": {"type": "str", "required": True},
    "timeout": {"type": "int", "default": 3600},
    "poll_interval": {"type": "int", "default": 15},
    "progress_interval": {"type": "int", "default": 60},
    "pending_timeout": {"type": "int", "default": 600},
    "log_lines": {"type": "int", "default": 40},
    "label": {"type": "str", "default": ""},
}

# tqdm's bar as the Hugging Face trainer prints it: " 25%|██▌       | 1/4 [00:01<00:03,  1.02s/it]". The
# trainer's bar has no description; loading weights or tokenizing the dataset ("Loading weights: 100%|...")
# do, so a bar counts only right after the start of its line or after the previous redraw.
_TQDM = re.compile(r"(?:^|(?<=\]))\s*\d+%\|[^|]*\|\s*(\d+)/(\d+) \[(\d+(?::\d+){1,2})<(\d+(?::\d+){1,2}|\?)")
# The trainer's log dicts, numbers quoted by recent transformers releases:
# {'loss': '8.83', 'grad_norm': '2.589', 'learning_rate': '0.001', 'epoch': '0.125'}.
_LOSS = re.compile(r"""['"]loss['"]:\s*['"]?([-+0-9.eE]+|nan|inf)""")
_EPOCH = re.compile(r"""['"]epoch['"]:\s*['"]?([-+0-9.eE]+)""")
# LLaMA-Factory's own progress (trainer_log.jsonl and its LogCallback): "current_steps": 3, "total_steps": 4.
_LF_STEPS = re.compile(r"""['"]current_steps['"]:\s*(\d+),\s*['"]total_steps['"]:\s*(\d+)""")
_LF_REMAINING = re.compile(r"""['"]remaining_time['"]:\s*['"]([0-9:]+)['"]""")
_LF_ELAPSED = re.compile(r"""['"]elapsed_time['"]:\s*['"]([0-9:]+)['"]""")


def _get(obj: Any, *names: str) -> Any:
    """The first present key of ``names`` (camelCase or snake_case) in a dict, or None."""
    if not isinstance(obj, dict):
        return None
    for name in names:
        if name in obj and obj[name] is not None:
            return obj[name]
    return None


def _last(pattern: re.Pattern, line: str) -> Optional[re.Match]:
    matches = list(pattern.finditer(line))
    return matches[-1] if matches else None


def parse_progress(log: str) -> Dict[str, Any]:
    """The latest training progress found in a log tail: step, total, elapsed, remaining, loss, epoch.

    Keys are present only when the log says them; an empty dict means no progress line yet (loading the
    model, tokenizing the dataset, ...)."""
    progress: Dict[str, Any] = {}
    # tqdm redraws its bar with carriage returns: every redraw is one update.
    for line in re.split(r"[\r\n]+", log):
        # Several redraws can share a line when a log collector dropped the carriage returns: the last counts.
        drawn = _last(_TQDM, line)
        if drawn:
            progress.update(step=int(drawn.group(1)), total=int(drawn.group(2)), elapsed=drawn.group(3))
            if drawn.group(4) != "?":
                progress["remaining"] = drawn.group(4)
        steps = _last(_LF_STEPS, line)
        if steps:
            progress.update(step=int(steps.group(1)), total=int(steps.group(2)))
            for key, pattern in (("remaining", _LF_REMAINING), ("elapsed", _LF_ELAPSED)):
                found = pattern.search(line)
                if found:
                    progress[key] = found.group(1)
        loss = _last(_LOSS, line)
        if loss:
            with contextlib.suppress(ValueError):
                progress["loss"] = float(loss.group(1))
        epoch = _last(_EPOCH, line)
        if epoch:
            with contextlib.suppress(ValueError):
                progress["epoch"] = float(epoch.group(1))
    return progress


def job_outcome(job: Optional[Dict[str, Any]]) -> str:
    """Complete, Failed, Running (no final condition yet) or Missing (no Job)."""
    if not job:
        return "Missing"
    conditions = _get(_get(job, "status") or {}, "conditions") or []
    for condition in conditions:
        if condition.get("status") == "True" and condition.get("type") in ("Complete", "Failed"):
            return condition["type"]
    return "Running"


def failed_condition(job: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    for condition in _get(_get(job or {}, "status") or {}, "conditions") or []:
        if condition.get("type") == "Failed" and condition.get("status") == "True":
            return condition
    return {}


def _parse_time(value: Any) -> Optional[datetime]:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, str) and value:
        try:
            return datetime.strptime(value.replace("Z", "+0000"), "%Y-%m-%dT%H:%M:%S%z")
        except ValueError:
            return None
    return None


def newest_pod(pods: List[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    def created(pod: Dict[str, Any]) -> datetime:
        metadata = _get(pod, "metadata") or {}
        return _parse_time(_get(metadata, "creationTimestamp", "creation_timestamp")) or datetime.min.replace(
            tzinfo=timezone.utc
        )

    return max(pods, key=created) if pods else None


def pod_name(pod: Optional[Dict[str, Any]]) -> str:
    return str(_get(_get(pod or {}, "metadata") or {}, "name") or "")


def pod_state(pod: Optional[Dict[str, Any]]) -> str:
    """A short description: the phase, and the container's waiting reason while it waits."""
    if not pod:
        return "no pod yet"
    status = _get(pod, "status") or {}
    phase = _get(status, "phase") or "Pending"
    for container in _get(status, "containerStatuses", "container_statuses") or []:
        waiting = _get(_get(container, "state") or {}, "waiting")
        if waiting and _get(waiting, "reason"):
            return f"{phase}: {_get(waiting, 'reason')}"
    for condition in _get(status, "conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            return f"{phase}: {condition.get('reason') or 'not scheduled'}"
    return str(phase)


def pod_blocker(pod: Optional[Dict[str, Any]], now: datetime, pending_timeout: int) -> Optional[str]:
    """Why this pod will not start, or None while it may still start.

    Fails at once on the container waiting reasons in FATAL_WAITING; an unscheduled pod (no node fits: GPUs,
    node selector, taints, a missing PVC) and a pod stuck creating its container (volumes that do not
    mount) only after ``pending_timeout`` seconds, since a cluster autoscaler may still add a node."""
    if not pod:
        return None
    status = _get(pod, "status") or {}
    if (_get(status, "phase") or "Pending") != "Pending":
        return None
    for container in _get(status, "containerStatuses", "container_statuses") or []:
        waiting = _get(_get(container, "state") or {}, "waiting") or {}
        reason = _get(waiting, "reason")
        if reason in FATAL_WAITING:
            message = _get(waiting, "message") or ""
            return f"{reason}: {FATAL_WAITING[reason]}" + (f" ({message})" if message else "")
    metadata = _get(pod, "metadata") or {}
    created = _parse_time(_get(metadata, "creationTimestamp", "creation_timestamp"))
    waited = (now - created).total_seconds() if created else 0
    if waited < pending_timeout:
        return None
    for condition in _get(status, "conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            return (
                f"{condition.get('reason') or 'Unschedulable'} for {waited:.0f} s: "
                f"{condition.get('message') or 'no node fits the pod'}"
            )
    return f"still Pending after {waited:.0f} s ({pod_state(pod)})"


def progress_line(label: str, progress: Dict[str, Any], state: str, waited: float) -> str:
    """One line for a person watching: where the run is and how long it has left."""
    parts = []
    if "step" in progress and "total" in progress:
        total = max(int(progress["total"]), 1)
        parts.append(f"step {progress['step']}/{progress['total']} ({100 * int(progress['step']) // total}%)")
    if "loss" in progress:
        parts.append(f"loss {progress['loss']:.4g}")
    if "epoch" in progress:
        parts.append(f"epoch {progress['epoch']:.2f}")
    if "remaining" in progress:
        parts.append(f"about {progress['remaining']} left")
    what = ", ".join(parts) if parts else "no training progress in the log yet"
    return f"[{label}] {what} - pod {state}, waited {int(waited) // 60}m{int(waited) % 60:02d}s"
