# Copyright: (c) 2026, llmops.platform maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Following a Deployment's rollout (llmops.platform.k8s_rollout_wait): the state kubectl rollout status
reports, which pods run the Deployment's current template, and when waiting longer cannot help (a new pod
whose image cannot be pulled, or whose container keeps crashing: a model vLLM cannot load)."""

from __future__ import absolute_import, division, print_function  # noqa: UP010

__metaclass__ = type  # noqa: UP001

from typing import Any, Dict, List, Optional, Tuple

from ansible_collections.llmops.platform.plugins.module_utils.k8s_job import (
    FATAL_WAITING,
    pod_blocker,
    pod_name,
)

ARGUMENT_SPEC: Dict[str, Any] = {
    "kubeconfig": {"type": "path"},
    "context": {"type": "str"},
    "namespace": {"type": "str", "required": True},
    "name": {"type": "str", "required": True},
    "timeout": {"type": "int", "default": 1800},
    "poll_interval": {"type": "int", "default": 5},
    "progress_interval": {"type": "int", "default": 30},
    "pending_timeout": {"type": "int", "default": 600},
    "crash_restarts": {"type": "int", "default": 2},
    "log_lines": {"type": "int", "default": 40},
}


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def rollout_state(deploy: Optional[Dict[str, Any]]) -> Tuple[str, str]:
    """(state, words): Done, Waiting, Stalled (progress deadline exceeded) or Missing, the way
    ``kubectl rollout status`` decides it."""
    if not deploy:
        return "Missing", "the Deployment does not exist"
    metadata, spec, status = deploy.get("metadata") or {}, deploy.get("spec") or {}, deploy.get("status") or {}
    wanted = _int(spec.get("replicas", 1))
    if _int(status.get("observedGeneration")) < _int(metadata.get("generation")):
        return "Waiting", "the controller has not seen the new template yet"
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Progressing" and condition.get("reason") == "ProgressDeadlineExceeded":
            return "Stalled", condition.get("message") or "progress deadline exceeded"
    updated, total = _int(status.get("updatedReplicas")), _int(status.get("replicas"))
    available = _int(status.get("availableReplicas"))
    if updated < wanted:
        return "Waiting", f"{updated} of {wanted} pods run the new template"
    if total > updated:
        return "Waiting", f"{total - updated} old pods are still terminating"
    if available < updated:
        return "Waiting", f"{available} of {updated} new pods are available"
    return "Done", f"{available} of {wanted} pods available with the new template"


def _subset(small: Dict[str, Any], big: Dict[str, Any]) -> bool:
    return all(big.get(key) == value for key, value in (small or {}).items())


def runs_template(pod: Dict[str, Any], template: Dict[str, Any]) -> bool:
    """Whether a pod was made from this pod template: its labels and annotations, and each container's
    image, command and args (what a new template changes; the pod-template-hash is not in the template)."""
    t_meta, p_meta = template.get("metadata") or {}, pod.get("metadata") or {}
    if not _subset(t_meta.get("labels") or {}, p_meta.get("labels") or {}):
        return False
    if not _subset(t_meta.get("annotations") or {}, p_meta.get("annotations") or {}):
        return False
    wanted = (template.get("spec") or {}).get("containers") or []
    have = {c.get("name"): c for c in (pod.get("spec") or {}).get("containers") or []}
    for container in wanted:
        other = have.get(container.get("name"))
        if other is None:
            return False
        for key in ("image", "command", "args"):
            if (container.get(key) or None) != (other.get(key) or None):
                return False
    return True


def new_pods(deploy: Dict[str, Any], pods: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The pods of the Deployment's current template that are not being deleted."""
    template = (deploy.get("spec") or {}).get("template") or {}
    return [
        pod for pod in pods if not (pod.get("metadata") or {}).get("deletionTimestamp") and runs_template(pod, template)
    ]


def crash_blocker(pod: Dict[str, Any], crash_restarts: int) -> Optional[str]:
    """Why a running pod of the new template will not become available: a container in CrashLoopBackOff or
    restarted ``crash_restarts`` times (the process keeps dying: a model that does not load, a bad flag)."""
    for container in (pod.get("status") or {}).get("containerStatuses") or []:
        waiting = (container.get("state") or {}).get("waiting") or {}
        restarts = _int(container.get("restartCount"))
        reason = waiting.get("reason")
        if reason in FATAL_WAITING:
            return f"{reason}: {FATAL_WAITING[reason]}"
        if restarts >= max(crash_restarts, 1) or (reason == "CrashLoopBackOff" and restarts >= 1):
            last = (container.get("lastState") or {}).get("terminated") or {}
            exit_words = (
                f" (last exit code {last.get('exitCode')}, {last.get('reason') or 'no reason'})" if last else ""
            )
            return f"container {container.get('name')} restarted {restarts} times{exit_words}: it keeps failing"
    return None


def rollout_blocker(deploy: Dict[str, Any], pods: List[Dict[str, Any]], now, pending_timeout: int, crash_restarts: int):
    """(pod, why) for the first new pod that cannot become available, else (None, None)."""
    for pod in new_pods(deploy, pods):
        why = pod_blocker(pod, now, pending_timeout) or crash_blocker(pod, crash_restarts)
        if why:
            return pod, why
    return None, None


def pods_line(deploy: Dict[str, Any], pods: List[Dict[str, Any]]) -> str:
    """The new template's pods and their state, for a person watching."""
    parts = []
    for pod in new_pods(deploy, pods):
        status = pod.get("status") or {}
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
        restarts = sum(_int(c.get("restartCount")) for c in status.get("containerStatuses") or [])
        words = status.get("phase") or "Pending"
        words += ", ready" if ready else ", not ready"
        if restarts:
            words += f", {restarts} restarts"
        parts.append(f"{pod_name(pod)} {words}")
    return "; ".join(parts) if parts else "no pod of the new template yet"
