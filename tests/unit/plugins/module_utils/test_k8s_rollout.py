"""llmops.platform.k8s_rollout_wait's decisions: the rollout's state, which pods run the new template, and when
a new pod cannot become available (objects shaped as the API returns them)."""

from __future__ import annotations

import copy
from datetime import datetime, timezone

from ansible_collections.llmops.platform.plugins.module_utils.k8s_rollout import (
    crash_blocker,
    new_pods,
    pods_line,
    rollout_blocker,
    rollout_state,
)

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)
TEMPLATE = {
    "metadata": {"labels": {"app": "vllm"}, "annotations": {"llmops.io/model-revision": "v2"}},
    "spec": {"containers": [{"name": "vllm", "image": "vllm/vllm-openai:v0.32.0", "args": ["--model", "/m/v2"]}]},
}


def deployment(**status):
    return {
        "metadata": {"name": "vllm", "generation": 3},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "vllm"}}, "template": copy.deepcopy(TEMPLATE)},
        "status": {"observedGeneration": 3, **status},
    }


def pod(name="vllm-abc", revision="v2", args=("--model", "/m/v2"), phase="Running", ready=False, **container):
    status = {"name": "vllm", "restartCount": 0, "state": {"running": {}}, **container}
    return {
        "metadata": {
            "name": name,
            "labels": {"app": "vllm", "pod-template-hash": "x"},
            "annotations": {"llmops.io/model-revision": revision},
            "creationTimestamp": "2026-11-30T11:59:00Z",
        },
        "spec": {"containers": [{"name": "vllm", "image": "vllm/vllm-openai:v0.32.0", "args": list(args)}]},
        "status": {
            "phase": phase,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            "containerStatuses": [status],
        },
    }


def test_rollout_states_follow_kubectl_rollout_status():
    assert rollout_state(None)[0] == "Missing"
    behind = deployment(updatedReplicas=1, replicas=1, availableReplicas=1)
    behind["status"]["observedGeneration"] = 2
    assert rollout_state(behind) == ("Waiting", "the controller has not seen the new template yet")
    assert rollout_state(deployment(updatedReplicas=0, replicas=1))[1] == "0 of 1 pods run the new template"
    assert rollout_state(deployment(updatedReplicas=1, replicas=2))[1] == "1 old pods are still terminating"
    assert rollout_state(deployment(updatedReplicas=1, replicas=1, availableReplicas=0))[0] == "Waiting"
    assert rollout_state(deployment(updatedReplicas=1, replicas=1, availableReplicas=1))[0] == "Done"
    stalled = deployment(
        updatedReplicas=0,
        conditions=[{"type": "Progressing", "reason": "ProgressDeadlineExceeded", "message": "took too long"}],
    )
    assert rollout_state(stalled) == ("Stalled", "took too long")


def test_only_pods_of_the_current_template_count():
    old = pod("vllm-old", revision="v1", args=("--model", "/m/v1"))
    new = pod("vllm-new")
    other_args = pod("vllm-args", args=("--model", "/m/v9"))
    going = pod("vllm-going")
    going["metadata"]["deletionTimestamp"] = "2026-11-30T11:59:30Z"
    assert [p["metadata"]["name"] for p in new_pods(deployment(), [old, new, other_args, going])] == ["vllm-new"]


def test_a_crash_looping_new_pod_blocks_the_rollout_and_an_old_one_does_not():
    crashing = pod(
        restartCount=1,
        state={"waiting": {"reason": "CrashLoopBackOff"}},
        lastState={"terminated": {"exitCode": 1, "reason": "Error"}},
    )
    why = crash_blocker(crashing, 2)
    assert why and "restarted 1 times" in why and "exit code 1" in why
    assert crash_blocker(pod(restartCount=1), 2) is None, "one restart without back-off may still recover"
    assert "restarted 2 times" in crash_blocker(pod(restartCount=2), 2)
    old_crashing = copy.deepcopy(crashing)
    old_crashing["metadata"]["annotations"]["llmops.io/model-revision"] = "v1"
    assert rollout_blocker(deployment(), [old_crashing], NOW, 600, 2) == (None, None)
    blocked, why = rollout_blocker(deployment(), [old_crashing, crashing], NOW, 600, 2)
    assert blocked is crashing and "keeps failing" in why


def test_an_image_that_cannot_be_pulled_blocks_at_once():
    pulling = pod(phase="Pending", state={"waiting": {"reason": "ImagePullBackOff", "message": "not found"}})
    _pod, why = rollout_blocker(deployment(), [pulling], NOW, 600, 2)
    assert why and why.startswith("ImagePullBackOff")


def test_the_progress_line_names_each_new_pod():
    line = pods_line(deployment(), [pod(ready=True, restartCount=1), pod("vllm-old", revision="v1")])
    assert line == "vllm-abc Running, ready, 1 restarts"
    assert pods_line(deployment(), []) == "no pod of the new template yet"
