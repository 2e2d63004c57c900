# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of llmops.platform.k8s_job_wait: follows a Job from the controller and prints its progress
while it runs (a module could only report once it returned). See plugins/modules/k8s_job_wait.py."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone

from ansible.module_utils.common.text.converters import to_text
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

from ansible_collections.llmops.platform.plugins.module_utils.k8s_job import (
    ARGUMENT_SPEC,
    failed_condition,
    job_outcome,
    newest_pod,
    parse_progress,
    pod_blocker,
    pod_name,
    pod_state,
    progress_line,
)

try:
    from kubernetes import client as k8s_client
    from kubernetes import config as k8s_config
    from kubernetes.client.rest import ApiException
    from kubernetes.config.config_exception import ConfigException

    HAS_KUBERNETES = True
except ImportError:  # pragma: no cover - kubernetes.core needs the same package
    HAS_KUBERNETES = False

display = Display()


def _raw(response):
    """The API's JSON as plain dicts: the typed models of some kubernetes client releases refuse objects that
    omit fields they declare required (a waiting container's imageID), which says nothing about the Job."""
    return json.loads(response.data or b"{}")


# Log lines read each time progress is looked for: enough to hold the trainer's last log dict and bar.
PROGRESS_TAIL = 200


class ActionModule(ActionBase):
    """Also the base of k8s_rollout_wait's action: the arguments, check mode and the client are the same."""

    TRANSFERS_FILES = False
    _requires_connection = False
    ARGUMENT_SPEC = ARGUMENT_SPEC
    CHECK_MODE_MSG = "check mode: the Job is neither created nor followed"

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        validation, args = self.validate_argument_spec(argument_spec=self.ARGUMENT_SPEC)
        del validation
        if self._play_context.check_mode:
            result.update(skipped=True, msg=self.CHECK_MODE_MSG)
            return result
        if not HAS_KUBERNETES:
            result.update(
                failed=True, msg="the kubernetes Python package is missing on the controller (pip install kubernetes)"
            )
            return result
        try:
            api = self._client(args)
        except (ConfigException, OSError, TypeError, ValueError) as exc:
            result.update(failed=True, msg=f"cannot load the cluster configuration: {exc}")
            return result
        result.update(self._follow(api, args))
        return result

    @staticmethod
    def _client(args):
        if args.get("kubeconfig") or args.get("context"):
            return k8s_config.new_client_from_config(config_file=args.get("kubeconfig"), context=args.get("context"))
        try:
            return k8s_config.new_client_from_config()
        except ConfigException:
            k8s_config.load_incluster_config()
            return k8s_client.ApiClient()

    def _follow(self, api, args):
        batch, core = k8s_client.BatchV1Api(api), k8s_client.CoreV1Api(api)
        namespace, name = args["namespace"], args["name"]
        label = args["label"] or f"job {namespace}/{name}"
        started = time.monotonic()
        deadline = started + args["timeout"]
        next_progress = started
        last_state, progress, pod, job = None, {}, None, None
        while True:
            job = self._read_object(batch.read_namespaced_job, namespace, name)
            outcome = job_outcome(job)
            pods = _raw(core.list_namespaced_pod(namespace, label_selector=f"job-name={name}", _preload_content=False))
            pods = pods.get("items") or []
            pod = newest_pod(pods)
            state = pod_state(pod)
            waited = time.monotonic() - started
            if outcome != "Running":
                break
            blocker = pod_blocker(pod, datetime.now(timezone.utc), args["pending_timeout"])
            if blocker:
                outcome = "Unstartable"
                break
            if time.monotonic() >= deadline:
                outcome = "Timeout"
                break
            if state != last_state or time.monotonic() >= next_progress:
                if pod and state.startswith("Running"):
                    progress = parse_progress(self._log(core, namespace, pod_name(pod), PROGRESS_TAIL)) or progress
                display.display(progress_line(label, progress, state, waited), stderr=True)
                last_state = state
                next_progress = time.monotonic() + args["progress_interval"]
            time.sleep(max(1, min(args["poll_interval"], deadline - time.monotonic())))

        status = (job or {}).get("status") or {}
        out = {
            "changed": False,
            "outcome": outcome,
            "uid": ((job or {}).get("metadata") or {}).get("uid", ""),
            "status": status,
            "pod": pod_name(pod),
            "pod_state": state,
            "seconds": round(time.monotonic() - started, 1),
        }
        if pod and state.startswith(("Running", "Succeeded", "Failed")):
            progress = parse_progress(self._log(core, namespace, pod_name(pod), PROGRESS_TAIL)) or progress
        out["progress"] = progress
        if outcome == "Complete":
            display.display(progress_line(label, progress, "Succeeded", out["seconds"]), stderr=True)
            return out
        log = self._log(core, namespace, pod_name(pod), args["log_lines"]) if pod else ""
        out["log_lines"] = log.splitlines()
        condition = failed_condition(job)
        why = {
            "Failed": f"FAILED ({condition.get('reason', '?')}: {condition.get('message', 'no message')})",
            "Missing": "disappeared while it ran (deleted by someone else?)",
            "Timeout": f"did not finish within {args['timeout']} s (still running; activeDeadlineSeconds stops it)",
            "Unstartable": f"CANNOT START: pod {pod_name(pod)} {blocker}" if outcome == "Unstartable" else "",
        }[outcome]
        counts = (
            f"succeeded={status.get('succeeded', 0)} failed={status.get('failed', 0)} active={status.get('active', 0)}"
        )
        shown = (
            "\n".join(out["log_lines"])
            if out["log_lines"]
            else (f"(no pod found with label job-name={name})" if not pod else "(empty log)")
        )
        out.update(
            failed=True,
            msg=f"Job {namespace}/{name} {why}.\n{counts}\nLast {args['log_lines']} log lines"
            + (f" of pod {pod_name(pod)}" if pod else "")
            + f":\n{shown}",
        )
        return out

    @staticmethod
    def _read_object(read, namespace, name):
        """The object as the API returns it (``read``: a read_namespaced_* method), or None when it is gone."""
        try:
            return _raw(read(name, namespace, _preload_content=False))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    @staticmethod
    def _log(core, namespace, pod, lines):
        try:
            return to_text(
                core.read_namespaced_pod_log(pod, namespace, tail_lines=lines), errors="surrogate_or_replace"
            )
        except ApiException as exc:
            return f"(logs unavailable: HTTP {exc.status} {exc.reason})"
