"""Following a Job (module_utils/k8s_job.py): progress from a real LLaMA-Factory log, how a Job ended, and why
a pod cannot start, on the API's own JSON shapes."""

from __future__ import annotations

import gzip
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from ansible_collections.llmops.platform.plugins.module_utils import k8s_job as kj

DATA = Path(__file__).resolve().parents[2] / "data" / "llamafactory"
NOW = datetime(2026, 11, 30, 12, 0, 0, tzinfo=timezone.utc)


def created(seconds_ago: int) -> str:
    return (NOW - timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


def pod(phase="Pending", waiting=None, message="", scheduled=None, age=5):
    status = {"phase": phase, "conditions": []}
    if waiting:
        status["containerStatuses"] = [{"name": "train", "state": {"waiting": {"reason": waiting, "message": message}}}]
    if scheduled is not None:
        status["conditions"].append(
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": scheduled}
        )
    return {"metadata": {"name": "train-abcde", "creationTimestamp": created(age)}, "status": status}


def test_progress_of_a_real_llamafactory_run():
    """The log of `llamafactory-cli train` (tiny model, 4 steps; captured on this project's test machine): tqdm
    redraws with carriage returns, loss dicts with quoted numbers, then the final train_loss summary."""
    # Gzipped: the log's carriage returns (tqdm redraws) are part of what is tested, and ansible-test's
    # line-endings check would refuse them in a text file.
    log = gzip.decompress((DATA / "train-tiny-4-steps.log.gz").read_bytes()).decode("utf-8")
    progress = kj.parse_progress(log)
    assert progress["step"] == 4 and progress["total"] == 4
    assert progress["loss"] == pytest.approx(8.52)  # the last per-step loss, not train_loss (8.597)
    assert progress["epoch"] == pytest.approx(0.5)
    # Halfway through: the log up to the third step's dict.
    partial = log[: log.index("'loss': '8.302'") + 40]
    middle = kj.parse_progress(partial)
    assert (middle["step"], middle["total"], middle["loss"]) == (3, 4, pytest.approx(8.302))
    # Before training starts there is nothing to report.
    assert kj.parse_progress(log[: log.index("Total optimization steps")]) == {}


def test_progress_from_a_long_run_with_time_left():
    log = " 12%|█▏        | 120/1000 [10:00<1:13:20,  5.00s/it]{'loss': 1.2345, 'epoch': 0.3}\n"
    progress = kj.parse_progress(log)
    assert progress == {
        "step": 120,
        "total": 1000,
        "elapsed": "10:00",
        "remaining": "1:13:20",
        "loss": 1.2345,
        "epoch": 0.3,
    }
    line = kj.progress_line("train", progress, "Running", 605)
    assert (
        line == "[train] step 120/1000 (12%), loss 1.234, epoch 0.30, about 1:13:20 left - pod Running, waited 10m05s"
    )
    # LLaMA-Factory's own progress record (trainer_log.jsonl / LogCallback).
    lf = '{"current_steps": 7, "total_steps": 50, "loss": 2.5, "elapsed_time": "0:01:10", "remaining_time": "0:08:20"}'
    assert kj.parse_progress(lf) == {"step": 7, "total": 50, "remaining": "0:08:20", "elapsed": "0:01:10", "loss": 2.5}
    # Carriage returns lost by a log collector: the last redraw on the line counts.
    squashed = "  0%|   | 0/4 [00:00<?, ?it/s] 25%|█ | 1/4 [00:01<00:03,  1.0s/it] 50%|██ | 2/4 [00:02<00:02,  1.0s/it]"
    assert kj.parse_progress(squashed)["step"] == 2
    assert kj.progress_line("train", {}, "Pending: ContainerCreating", 3).startswith("[train] no training progress")


@pytest.mark.parametrize(
    ("job", "outcome"),
    [
        (None, "Missing"),
        ({"status": {}}, "Running"),
        ({"status": {"conditions": [{"type": "Complete", "status": "True"}]}}, "Complete"),
        (
            {"status": {"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]}},
            "Failed",
        ),
        ({"status": {"conditions": [{"type": "Failed", "status": "False"}]}}, "Running"),
        # Kubernetes 1.31+ sets SuccessCriteriaMet / FailureTarget before the final condition.
        ({"status": {"conditions": [{"type": "FailureTarget", "status": "True"}]}}, "Running"),
    ],
)
def test_job_outcome(job, outcome):
    assert kj.job_outcome(job) == outcome


@pytest.mark.parametrize(
    ("the_pod", "blocked"),
    [
        (None, None),
        (pod("Running"), None),
        (pod(waiting="ContainerCreating"), None),
        (
            pod(waiting="ErrImagePull", message='pull "registry/x:1": not found'),
            "ErrImagePull: the image cannot be pulled",
        ),
        (pod(waiting="ImagePullBackOff"), "ImagePullBackOff"),
        (pod(waiting="InvalidImageName"), "invalid"),
        (
            pod(waiting="CreateContainerConfigError", message='secret "hf-token" not found'),
            'secret "hf-token" not found',
        ),
        # Unschedulable: allowed for pending_timeout (an autoscaler may add a node), then refused with the reason.
        (pod(scheduled="0/3 nodes are available: 3 Insufficient nvidia.com/gpu.", age=100), None),
        (
            pod(scheduled="0/3 nodes are available: 3 Insufficient nvidia.com/gpu.", age=700),
            "Insufficient nvidia.com/gpu",
        ),
        (pod(scheduled='persistentvolumeclaim "llama-storage" not found', age=601), "llama-storage"),
        (pod(waiting="ContainerCreating", age=900), "still Pending after 900 s (Pending: ContainerCreating)"),
    ],
)
def test_pod_blocker(the_pod, blocked):
    found = kj.pod_blocker(the_pod, NOW, 600)
    if blocked is None:
        assert found is None
    else:
        assert found and blocked in found


def test_newest_pod_and_state():
    older, newer = pod("Failed", age=50), pod(waiting="ErrImagePull", age=10)
    newer["metadata"]["name"] = "train-new"
    assert kj.pod_name(kj.newest_pod([older, newer])) == "train-new"
    assert kj.pod_state(newer) == "Pending: ErrImagePull"
    assert kj.pod_state(pod(scheduled="no node")) == "Pending: Unschedulable"
    assert kj.pod_state(None) == "no pod yet"
