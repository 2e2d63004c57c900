"""The action group llmops.platform.k8s (meta/runtime.yml): the roles give kubeconfig and context once, as
`module_defaults: group/llmops.platform.k8s` on each entry point's block, and every module that talks to the
cluster gets them - kubernetes.core's k8s and helm groups and this collection's own action plugins (k8s_job_wait,
k8s_rollout_wait), whose arguments ansible-core merges from module_defaults only when the group lists them. The
client's own defaults ($KUBECONFIG) point nowhere here, so a module that did not get the defaults could not reach
the emulator; with a wrong context every one of them must say so. Also: no role task passes kubeconfig or
context itself."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Iterator, List

import emulator as emu
import pytest
import yaml
from itest_support import write_playbook
from k8s_harness import Emulator, run_playbook

ROOT = Path(__file__).resolve().parents[2]
NS = "action-group"

INNER = f"""\
- name: kubernetes.core.k8s_info
  kubernetes.core.k8s_info: {{api_version: v1, kind: Namespace, name: {NS}}}
  register: info
  ignore_errors: true
- name: kubernetes.core.k8s
  kubernetes.core.k8s:
    definition: {{apiVersion: v1, kind: ConfigMap, metadata: {{name: probe, namespace: {NS}}}, data: {{a: b}}}}
  register: write
  ignore_errors: true
- name: llmops.platform.k8s_job_wait
  llmops.platform.k8s_job_wait: {{namespace: {NS}, name: done, timeout: 20, poll_interval: 1}}
  register: job
  ignore_errors: true
- name: llmops.platform.k8s_rollout_wait
  llmops.platform.k8s_rollout_wait: {{namespace: {NS}, name: web, timeout: 20, poll_interval: 1}}
  register: rollout
  ignore_errors: true
- name: Report
  ansible.builtin.debug:
    msg: "{{{{ {{'info': info, 'write': write, 'job': job, 'rollout': rollout}} | to_json }}}}"
"""


def results(run) -> Dict[str, Any]:
    (result,) = run.results("Report")
    return json.loads(result["msg"])


@pytest.fixture
def play(k8s_emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-such-kubeconfig"))
    k8s_emulator.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "done"},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "m", "image": "busybox"}]}}},
    }
    k8s_emulator.create(f"/apis/batch/v1/namespaces/{NS}/jobs", job)
    k8s_emulator.set_status(f"/apis/batch/v1/namespaces/{NS}/jobs/done", emu.job_finished_status("Complete"))
    labels = {"app": "web"}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]},
            },
        },
    }
    path = f"/apis/apps/v1/namespaces/{NS}/deployments"
    generation = k8s_emulator.create(path, deployment)["metadata"]["generation"]
    k8s_emulator.set_status(f"{path}/web", emu.deployment_available_status(1, generation))
    (tmp_path / "inner.yml").write_text(INNER)
    defaults = {"kubeconfig": str(k8s_emulator.kubeconfig), "context": "{{ ctx }}"}
    block = {
        "name": "Everything through the group's defaults",
        "module_defaults": {"group/llmops.platform.k8s": defaults},
        # include_tasks: the included tasks inherit the block's defaults, as the roles' internal files do.
        "block": [{"name": "Included", "ansible.builtin.include_tasks": str(tmp_path / "inner.yml")}],
    }
    return write_playbook([block], tmp_path, python="{{ ansible_playbook_python }}")


def test_every_module_of_the_group_gets_kubeconfig_and_context(play: Path, tmp_path: Path) -> None:
    run = run_playbook(play, cwd=tmp_path, extra_vars={"ctx": "llmops-emulator"})
    assert run.rc == 0, run.output[-3000:]
    got = results(run)
    for name, result in got.items():
        assert not result.get("failed"), (name, result.get("msg"))
    assert got["info"]["resources"][0]["metadata"]["name"] == NS
    assert got["write"]["changed"] is True
    assert got["job"]["outcome"] == "Complete", got["job"]
    assert got["rollout"]["state"] == "Done", got["rollout"]


def test_a_wrong_context_reaches_every_module_of_the_group(play: Path, tmp_path: Path) -> None:
    run = run_playbook(play, cwd=tmp_path, extra_vars={"ctx": "no-such-context"})
    got = results(run)
    for name, result in got.items():
        assert result.get("failed") and "no-such-context" in str(result.get("msg")), (name, result.get("msg"))


def tasks_of(node: Any) -> Iterator[Dict[str, Any]]:
    """Every task of a task file, into blocks."""
    for task in node or []:
        yield task
        for section in ("block", "rescue", "always"):
            yield from tasks_of(task.get(section))


GROUP_MODULES = ("kubernetes.core.", "llmops.platform.k8s_job_wait", "llmops.platform.k8s_rollout_wait")


def test_no_role_task_passes_kubeconfig_or_context_itself() -> None:
    """They come from the entry point's module_defaults; a task naming them would override those."""
    offenders: List[str] = []
    for path in sorted((ROOT / "roles").glob("*/tasks/*.yml")):
        for task in tasks_of(yaml.safe_load(path.read_text())):
            for module, args in task.items():
                cluster_module = module.startswith(GROUP_MODULES) and isinstance(args, dict)
                if cluster_module and {"kubeconfig", "context"} & set(args):
                    offenders.append(f"{path.relative_to(ROOT)}: {task.get('name')}")
    assert offenders == [], offenders


def test_every_role_block_with_cluster_tasks_sets_the_group_defaults() -> None:
    """Each task file that calls the cluster is reached only through a block with the group's module_defaults:
    the entry points' own blocks, or (for the files they import) a caller's."""
    entry_points = {
        "training_cluster": {"main", "merge", "teardown"},
        "vllm_k8s": {"main", "gate", "reload", "restore", "serve_merged", "served_versions", "teardown"},
        "k8s_common": {"namespace", "secrets", "run_job"},
    }
    for role, names in entry_points.items():
        for name in names:
            tasks = yaml.safe_load((ROOT / "roles" / role / "tasks" / f"{name}.yml").read_text())
            blocks = [t for t in tasks if "block" in t]
            assert len(blocks) == 1 and len(tasks) == 1, f"{role}/{name}.yml: one block with the tasks"
            defaults = blocks[0].get("module_defaults", {}).get("group/llmops.platform.k8s", {})
            assert set(defaults) == {"kubeconfig", "context"}, f"{role}/{name}.yml: {defaults}"
            assert f"{role}_kubeconfig" in defaults["kubeconfig"] and f"{role}_context" in defaults["context"]


def test_the_runtime_declares_the_group() -> None:
    runtime = yaml.safe_load((ROOT / "meta" / "runtime.yml").read_text())
    group = runtime["action_groups"]["k8s"]
    assert group[0]["metadata"] == {"extend_group": ["kubernetes.core.k8s", "kubernetes.core.helm"]}
    assert set(group[1:]) == {"k8s_job_wait", "k8s_rollout_wait"}
