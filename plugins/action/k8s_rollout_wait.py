# Copyright: (c) 2026, llmops.platform maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of llmops.platform.k8s_rollout_wait: follows a Deployment's rollout from the controller,
printing its state while it waits and failing at once when a new pod cannot start or keeps crashing. See
plugins/modules/k8s_rollout_wait.py."""

from __future__ import annotations

import time
from datetime import datetime, timezone

from ansible.module_utils.common.text.converters import to_text
from ansible.utils.display import Display

from ansible_collections.llmops.platform.plugins.action.k8s_job_wait import ActionModule as JobWaitAction
from ansible_collections.llmops.platform.plugins.action.k8s_job_wait import _raw
from ansible_collections.llmops.platform.plugins.module_utils.k8s_job import pod_name, pod_state
from ansible_collections.llmops.platform.plugins.module_utils.k8s_rollout import (
    ARGUMENT_SPEC,
    new_pods,
    pods_line,
    rollout_blocker,
    rollout_state,
)

try:
    from kubernetes import client as k8s_client
    from kubernetes.client.rest import ApiException
except ImportError:  # pragma: no cover - the base class reports the missing package
    k8s_client = ApiException = None

display = Display()


class ActionModule(JobWaitAction):
    """k8s_job_wait's run() (arguments, check mode, client), following a Deployment instead of a Job."""

    ARGUMENT_SPEC = ARGUMENT_SPEC
    CHECK_MODE_MSG = "check mode: the rollout is not followed"

    def _follow(self, api, args):
        apps, core = k8s_client.AppsV1Api(api), k8s_client.CoreV1Api(api)
        namespace, name = args["namespace"], args["name"]
        started = time.monotonic()
        deadline = started + args["timeout"]
        next_progress = started
        last_line = None
        while True:
            deploy = self._read_object(apps.read_namespaced_deployment, namespace, name)
            state, words = rollout_state(deploy)
            pods = []
            if deploy:
                labels = ((deploy.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
                selector = ",".join(f"{key}={value}" for key, value in sorted(labels.items()))
                pods = _raw(core.list_namespaced_pod(namespace, label_selector=selector, _preload_content=False))
                pods = pods.get("items") or []
            waited = time.monotonic() - started
            if state in ("Done", "Missing", "Stalled"):
                break
            pod, why = rollout_blocker(
                deploy, pods, datetime.now(timezone.utc), args["pending_timeout"], args["crash_restarts"]
            )
            if why:
                state, words = "Unavailable", f"pod {pod_name(pod)}: {why}"
                break
            if time.monotonic() >= deadline:
                state = "Timeout"
                break
            line = f"[rollout {name}] {words} - {pods_line(deploy, pods)}"
            if line != last_line or time.monotonic() >= next_progress:
                display.display(f"{line}, waited {int(waited) // 60}m{int(waited) % 60:02d}s", stderr=True)
                last_line = line
                next_progress = time.monotonic() + args["progress_interval"]
            time.sleep(max(1, min(args["poll_interval"], deadline - time.monotonic())))

        out = {
            "changed": False,
            "state": state,
            "message": words,
            "status": (deploy or {}).get("status") or {},
            "pods": [pod_name(p) for p in new_pods(deploy, pods)] if deploy else [],
            "seconds": round(time.monotonic() - started, 1),
        }
        if state == "Done":
            display.display(f"[rollout {name}] {words}, after {out['seconds']} s", stderr=True)
            return out
        culprit = pod if state == "Unavailable" else (new_pods(deploy, pods) or [None])[-1] if deploy else None
        log = self._log(core, namespace, pod_name(culprit), args["log_lines"]) if culprit else ""
        out["log_lines"] = log.splitlines()
        why = {
            "Missing": "does not exist",
            "Stalled": f"STALLED: {words}",
            "Unavailable": f"CANNOT BECOME AVAILABLE: {words}",
            "Timeout": f"did not finish within {args['timeout']} s ({words})",
        }[state]
        shown = "\n".join(out["log_lines"]) or "(empty log)"
        out.update(
            failed=True,
            msg=f"Deployment {namespace}/{name} {why}."
            + (
                f"\nLast {args['log_lines']} log lines of pod {pod_name(culprit)} ({pod_state(culprit)}):\n{shown}"
                if culprit
                else ""
            ),
        )
        return out

    @staticmethod
    def _log(core, namespace, pod, lines):
        """The log of the container's previous run when it restarted (why it died), else the current one."""
        for previous in (True, False):
            try:
                text = core.read_namespaced_pod_log(pod, namespace, tail_lines=lines, previous=previous)
            except ApiException:
                continue
            text = to_text(text, errors="surrogate_or_replace")
            if text.strip():
                return text
        return ""
