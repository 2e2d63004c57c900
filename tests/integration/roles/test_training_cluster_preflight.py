"""training_cluster against its own Kubernetes API emulator.

1. Bad variables fail before anything is applied, naming the variable: each case runs the whole role
   with one bad setting on top of a valid configuration; the play must fail, a failure must name the
   variable, nothing may change and the emulator must hold no object. The valid baseline does create
   the objects, so the "nothing created" check can fail.
2. The Job paths of tasks_from train: the play creates the Job and polls it; the test, acting as the
   Job controller, writes Complete or Failed through the API. Complete passes; Failed fails at once
   with the reason and the pod's last log lines. A re-run replaces the previous Job.

The emulator has no pod log subresource; for the Failed path this module runs it with a small
extension that serves a Pod's log from the annotation llmops.test/log (the only stand-in here).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
K8S = ROOT / "tests" / "k8s"
if str(K8S) not in sys.path:
    sys.path.insert(0, str(K8S))

import emulator as emu  # noqa: E402
import k8s_harness  # noqa: E402
from itest_support import report_failures  # noqa: E402
from k8s_harness import Emulator, run_playbook  # noqa: E402

# Registers the fixture in this module (pytest finds fixtures by module attribute).
k8s_emulator = k8s_harness.k8s_emulator

HF = "hf_s3cret_preflight_token"
VALID = {
    "training_cluster_image": "registry.example.test/llm/llama-factory-train:0.9.5",
    "training_cluster_hf_token": HF,
}

CASES = {
    "no image": ({"training_cluster_image": ""}, "training_cluster_image"),
    "namespace not a DNS label": ({"training_cluster_namespace": "LLM_Training"}, "training_cluster_namespace"),
    "storage mode not a choice": ({"training_cluster_storage_mode": "hostpath"}, "training_cluster_storage_mode"),
    "static nfs without a server": ({"training_cluster_storage_mode": "static_nfs"}, "training_cluster_nfs_server"),
    "static nfs with a relative path": (
        {
            "training_cluster_storage_mode": "static_nfs",
            "training_cluster_nfs_server": "nfs1",
            "training_cluster_nfs_path": "x",
        },
        "training_cluster_nfs_path",
    ),
    "storage size not a quantity": ({"training_cluster_storage_size": "lots"}, "training_cluster_storage_size"),
    "root user": ({"training_cluster_run_as_user": 0}, "training_cluster_run_as_user"),
    "token in the plain environment": (
        {"training_cluster_environment": {"HF_TOKEN": "x"}},
        "training_cluster_environment",
    ),
    "fp16 on the cpu": (
        {"training_cluster_use_cpu": True, "training_cluster_precision": "fp16"},
        "training_cluster_use_cpu",
    ),
    "learning rate above one": ({"training_cluster_learning_rate": 2.0}, "training_cluster_learning_rate"),
    "no dataset": ({"training_cluster_dataset": []}, "training_cluster_dataset"),
    "database backend without a uri": (
        {"training_cluster_mlflow_backend": "database"},
        "training_cluster_mlflow_database_uri",
    ),
    "tolerations not a list of mappings": (
        {"training_cluster_tolerations": ["nvidia.com/gpu"]},
        "training_cluster_tolerations",
    ),
    "negative gpus": ({"training_cluster_train_gpus": -1}, "training_cluster_train_gpus"),
    "merge over the adapter": (
        {"training_cluster_merged_model_dir": "/storage/output/lora-adapter"},
        "training_cluster_merged_model_dir",
    ),
    "same name for both jobs": (
        {"training_cluster_merge_job_name": "llama-factory-train"},
        "training_cluster_merge_job_name",
    ),
    "resource quantity malformed": (
        {"training_cluster_train_resources": {"requests": {"cpu": "eight"}}},
        "training_cluster_train_resources",
    ),
}

PLAY = textwrap.dedent(
    """\
    - hosts: localhost
      connection: local
      gather_facts: false
      vars:
        ansible_python_interpreter: "{{ ansible_playbook_python }}"
      tasks:
        - ansible.builtin.include_role:
            name: llmops.platform.training_cluster
            tasks_from: %s
    """
)

WRITTEN = (
    "/api/v1/namespaces",
    "/api/v1/secrets",
    "/api/v1/persistentvolumes",
    "/api/v1/persistentvolumeclaims",
    "/api/v1/configmaps",
    "/apis/apps/v1/deployments",
    "/api/v1/services",
    "/apis/batch/v1/jobs",
)
JOB = "/apis/batch/v1/namespaces/llm-training/jobs/llama-factory-train"


def objects(emulator: Emulator) -> list:
    return k8s_harness.written_objects(emulator, WRITTEN)


def run_role(emulator: Emulator, tmp_path: Path, overrides: dict, tasks_from: str = "main", args=None):
    play = tmp_path / "play.yml"
    play.write_text(PLAY % tasks_from)
    extra = {**VALID, "training_cluster_kubeconfig": str(emulator.kubeconfig), **overrides}
    return run_playbook(play, cwd=tmp_path, extra_vars=extra, args=args)


@pytest.mark.parametrize("case", list(CASES))
def test_bad_variable_fails_before_anything_is_applied(k8s_emulator: Emulator, tmp_path: Path, case: str) -> None:
    overrides, variable = CASES[case]
    run = run_role(k8s_emulator, tmp_path, overrides)
    k8s_harness.assert_failed_before_apply(run, k8s_emulator, WRITTEN, case=case, variable=variable, secret=HF)


def test_valid_variables_apply_then_change_nothing(k8s_emulator: Emulator, tmp_path: Path) -> None:
    run = run_role(k8s_emulator, tmp_path, {})
    assert run.rc == 0, run.output[-3000:]
    assert run.stats["changed"] > 0
    written = objects(k8s_emulator)
    for name in (
        "/api/v1/secrets/hf-token",
        "/api/v1/persistentvolumeclaims/llama-storage",
        "/apis/apps/v1/deployments/mlflow",
    ):
        assert name in written, written
    again = run_role(k8s_emulator, tmp_path, {})
    assert again.rc == 0 and again.stats["changed"] == 0, again.stats
    assert HF not in run.output + again.output


def test_first_check_mode_run_predicts_without_writing(k8s_emulator: Emulator, tmp_path: Path) -> None:
    run = run_role(k8s_emulator, tmp_path, {}, args=["--check"])
    assert run.rc == 0, run.output[-3000:]
    assert run.stats["changed"] >= 2, run.stats
    assert objects(k8s_emulator) == []


# ---- Job paths --------------------------------------------------------------------------------------
LOG_EMULATOR = textwrap.dedent(
    """\
    import asyncio, sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[1])
    import aiohttp.web
    import emulator as emu

    class LogEmulator(emu.LlmopsEmulator):
        async def __call__(self, raw_request):
            route = emu.parse_route(raw_request.path)
            if route and route.plural == "pods" and route.subresource == "log" and raw_request.method == "GET":
                pod = self.store.get(("", "pods", route.namespace, route.name))
                if pod is None:
                    error = emu.ApiError(404, "NotFound", f'pods "{route.name}" not found')
                    return aiohttp.web.json_response(error.body(), status=404)
                lines = (pod["metadata"].get("annotations") or {}).get("llmops.test/log", "").splitlines()
                tail = int(raw_request.query.get("tailLines", len(lines)))
                return aiohttp.web.Response(text="".join(line + "\\n" for line in lines[-tail:]))
            return await super().__call__(raw_request)

    emu.LlmopsEmulator = LogEmulator
    asyncio.run(emu._serve("127.0.0.1", 0, Path(sys.argv[2]), Path(sys.argv[3])))
    """
)


@pytest.fixture
def log_emulator(tmp_path: Path):
    state = tmp_path / "emulator"
    state.mkdir()
    script, kubeconfig, ready = state / "log_emulator.py", state / "kubeconfig", state / "url"
    script.write_text(LOG_EMULATOR)
    with open(state / "log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, str(script), str(K8S), str(kubeconfig), str(ready)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert proc.poll() is None and time.monotonic() < deadline, (state / "log").read_text()
            time.sleep(0.05)
        yield Emulator(ready.read_text().strip(), kubeconfig, state / "pid")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def start_train(emulator: Emulator, tmp_path: Path) -> subprocess.Popen:
    play = tmp_path / "train.yml"
    play.write_text(PLAY % "train")
    varsfile = tmp_path / "train-vars.json"
    varsfile.write_text(
        json.dumps(
            {
                **VALID,
                "training_cluster_kubeconfig": str(emulator.kubeconfig),
                "training_cluster_job_poll_interval": 1,
                "training_cluster_train_timeout": 120,
                "training_cluster_job_log_lines": 3,
            }
        )
    )
    env = {
        **os.environ,
        "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_COLLECTIONS_PATH": str(ROOT / ".collections"),
        "ANSIBLE_NOCOLOR": "1",
    }
    return subprocess.Popen(
        ["ansible-playbook", "-i", "localhost,", str(play), "-e", f"@{varsfile}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=tmp_path,
    )


def wait_for_job(emulator: Emulator, proc: subprocess.Popen, old_uid: str = "") -> dict:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        if emulator.exists(JOB):
            job = emulator.get(JOB)
            if job["metadata"]["uid"] != old_uid:
                return job
        time.sleep(0.3)
    proc.kill()
    raise AssertionError("the play never created the Job")


def finish(proc: subprocess.Popen) -> tuple:
    output = proc.communicate(timeout=180)[0]
    report = json.loads(output[output.index("{") :]) if "{" in output else {}
    return proc.returncode, report, output


def test_job_complete_passes_and_a_rerun_replaces_the_job(log_emulator: Emulator, tmp_path: Path) -> None:
    proc = start_train(log_emulator, tmp_path)
    job = wait_for_job(log_emulator, proc)
    spec = job["spec"]["template"]["spec"]["containers"][0]
    assert spec["command"] == ["llamafactory-cli", "train", "/config/train.yaml"]
    log_emulator.set_status(JOB, emu.job_finished_status("Complete"))
    rc, report, output = finish(proc)
    assert rc == 0, output[-3000:]
    assert report["stats"]["localhost"]["failures"] == 0
    # A second run deletes the finished Job and creates a new one (Jobs are immutable).
    proc = start_train(log_emulator, tmp_path)
    second = wait_for_job(log_emulator, proc, old_uid=job["metadata"]["uid"])
    assert "status" not in second or not second["status"].get("conditions")
    log_emulator.set_status(JOB, emu.job_finished_status("Complete"))
    rc, _report, output = finish(proc)
    assert rc == 0, output[-3000:]


def test_job_failed_fails_at_once_with_the_pod_log(log_emulator: Emulator, tmp_path: Path) -> None:
    proc = start_train(log_emulator, tmp_path)
    wait_for_job(log_emulator, proc)
    log = "\n".join(["loading model", "step 1/4", "step 2/4", "torch.OutOfMemoryError: CUDA out of memory", "exiting"])
    for name, text in (("llama-factory-train-old01", "an older attempt"), ("llama-factory-train-new02", log)):
        log_emulator.create(
            "/api/v1/namespaces/llm-training/pods",
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": name,
                    "labels": {"job-name": "llama-factory-train"},
                    "annotations": {"llmops.test/log": text},
                },
                "spec": {"containers": [{"name": "train", "image": "x"}]},
            },
        )
        time.sleep(1.1)  # creationTimestamp has one-second resolution: the second pod is the newest
    started = time.monotonic()
    log_emulator.set_status(JOB, emu.job_finished_status("Failed"))
    rc, report, output = finish(proc)
    assert rc != 0, output[-3000:]
    assert time.monotonic() - started < 60, "the play did not fail at once"
    messages = "\n".join(report_failures(report))
    assert "llama-factory-train FAILED (BackoffLimitExceeded" in messages, messages
    assert "pod llama-factory-train-new02" in messages, messages
    assert "torch.OutOfMemoryError: CUDA out of memory" in messages and "exiting" in messages, messages
    assert "step 1/4" not in messages, "more than training_cluster_job_log_lines lines were included"
    assert HF not in output
