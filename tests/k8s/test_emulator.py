"""The API emulator serves kubernetes.core for real: ansible-playbook round-trips through it.

Each test starts its own emulator process (fixture ``k8s_emulator``) and drives it with
kubernetes.core.k8s / k8s_info through ansible-playbook, as the roles do.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import emulator as emu
import pytest
from k8s_harness import Emulator, run_playbook

NS = "llm-training"

OBJECTS = textwrap.dedent(
    """\
    - apiVersion: v1
      kind: Namespace
      metadata: {name: llm-training}
    - apiVersion: v1
      kind: ConfigMap
      metadata: {name: settings, namespace: llm-training}
      data: {mode: "{{ mode }}"}
    - apiVersion: apps/v1
      kind: Deployment
      metadata: {name: web, namespace: llm-training, labels: {app: web}}
      spec:
        replicas: 1
        selector: {matchLabels: {app: web}}
        template:
          metadata: {labels: {app: web}}
          spec:
            containers:
              - name: web
                image: "nginx:{{ tag }}"
                resources: {limits: {cpu: "1", memory: 64Mi}}
    - apiVersion: v1
      kind: Service
      metadata: {name: web, namespace: llm-training}
      spec:
        selector: {app: web}
        ports: [{port: 80, targetPort: 8080}]
    """
)


def write_play(tmp_path: Path, emulator: Emulator, state: str = "present") -> Path:
    play = tmp_path / "play.yml"
    play.write_text(
        textwrap.dedent(
            f"""\
            - hosts: localhost
              connection: local
              gather_facts: false
              vars:
                ansible_python_interpreter: "{{{{ ansible_playbook_python }}}}"
                mode: fast
                tag: "1.27"
              module_defaults:
                group/kubernetes.core.k8s:
                  kubeconfig: {emulator.kubeconfig}
              tasks:
                - name: Apply the objects
                  kubernetes.core.k8s:
                    state: {state}
                    apply: "{{{{ '{state}' == 'present' }}}}"
                    definition: "{{{{ item }}}}"
                  loop: "{{{{ objects }}}}"
                  loop_control:
                    label: "{{{{ item.kind }}}}/{{{{ item.metadata.name }}}}"
                  vars:
                    all_objects: "{{{{ lookup('ansible.builtin.template', 'objects.yml') | from_yaml }}}}"
                    objects: "{{{{ all_objects | reverse if '{state}' == 'absent' else all_objects }}}}"
            """
        )
    )
    (tmp_path / "objects.yml").write_text(OBJECTS)
    return play


def changed_objects(run) -> int:
    """How many loop items of the apply task changed (ansible's stats count the task once)."""
    return sum(
        1 for result in run.results("Apply the objects") for item in result.get("results", []) if item.get("changed")
    )


def test_apply_is_idempotent_and_writes_real_objects(k8s_emulator: Emulator, tmp_path: Path) -> None:
    play = write_play(tmp_path, k8s_emulator)
    first = run_playbook(play, cwd=tmp_path)
    assert first.rc == 0, first.output[-3000:]
    assert changed_objects(first) == 4, first.output[-2000:]
    deployment = k8s_emulator.get(f"/apis/apps/v1/namespaces/{NS}/deployments/web")
    assert deployment["metadata"]["uid"] and deployment["metadata"]["resourceVersion"]
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.27"
    rv = deployment["metadata"]["resourceVersion"]

    second = run_playbook(play, cwd=tmp_path)
    assert second.rc == 0, second.output[-3000:]
    assert changed_objects(second) == 0 and second.stats["changed"] == 0, second.output[-2000:]
    assert k8s_emulator.get(f"/apis/apps/v1/namespaces/{NS}/deployments/web")["metadata"]["resourceVersion"] == rv

    changed = run_playbook(play, cwd=tmp_path, extra_vars={"tag": "1.28"})
    assert changed_objects(changed) == 1, changed.output[-2000:]
    after = k8s_emulator.get(f"/apis/apps/v1/namespaces/{NS}/deployments/web")
    assert after["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.28"
    assert after["metadata"]["generation"] == 2
    assert after["metadata"]["resourceVersion"] != rv


def test_check_mode_predicts_without_writing_and_diff_shows_the_change(k8s_emulator: Emulator, tmp_path: Path) -> None:
    """kubernetes.core (>= 2.x with kubernetes >= 18.20) runs check mode as a server-side dry run
    (dryRun=All): the server answers as if it wrote, and writes nothing."""
    play = write_play(tmp_path, k8s_emulator)
    k8s_emulator.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    predicted = run_playbook(play, cwd=tmp_path, args=["--check"])
    assert predicted.rc == 0, predicted.output[-3000:]
    assert changed_objects(predicted) == 4, predicted.output[-2000:]
    assert not k8s_emulator.exists(f"/apis/apps/v1/namespaces/{NS}/deployments/web"), "check mode wrote"
    assert k8s_emulator.items(f"/api/v1/namespaces/{NS}/configmaps") == []

    assert run_playbook(play, cwd=tmp_path).rc == 0
    configmap = k8s_emulator.get(f"/api/v1/namespaces/{NS}/configmaps/settings")

    diffed = run_playbook(play, cwd=tmp_path, extra_vars={"mode": "slow"}, args=["--check", "--diff"])
    assert diffed.rc == 0, diffed.output[-3000:]
    assert changed_objects(diffed) == 1, diffed.output[-2000:]
    item = next(r for r in diffed.results("Apply the objects")[0]["results"] if r.get("changed"))
    assert item["diff"]["before"]["data"] == {"mode": "fast"}
    assert item["diff"]["after"]["data"] == {"mode": "slow"}
    # Still only predicted.
    assert k8s_emulator.get(f"/api/v1/namespaces/{NS}/configmaps/settings") == configmap


def test_check_mode_cannot_dry_run_into_a_missing_namespace(k8s_emulator: Emulator, tmp_path: Path) -> None:
    """As on a real API server, a dry-run create in a namespace that does not exist yet is refused
    (the namespace's own creation was only a dry run too): roles must handle a first check-mode run."""
    predicted = run_playbook(write_play(tmp_path, k8s_emulator), cwd=tmp_path, args=["--check"])
    assert predicted.rc != 0
    assert any(
        'namespaces \\"llm-training\\" not found' in m or 'namespaces "llm-training" not found' in m
        for m in predicted.failures()
    ), predicted.failures()
    assert not k8s_emulator.exists(f"/api/v1/namespaces/{NS}")


def test_delete_removes_the_objects(k8s_emulator: Emulator, tmp_path: Path) -> None:
    assert run_playbook(write_play(tmp_path, k8s_emulator), cwd=tmp_path).rc == 0
    assert k8s_emulator.exists(f"/api/v1/namespaces/{NS}/services/web")
    delete = run_playbook(write_play(tmp_path, k8s_emulator, state="absent"), cwd=tmp_path)
    assert delete.rc == 0, delete.output[-3000:]
    assert changed_objects(delete) == 4, delete.output[-2000:]
    for path in (
        f"/api/v1/namespaces/{NS}/services/web",
        f"/apis/apps/v1/namespaces/{NS}/deployments/web",
        f"/api/v1/namespaces/{NS}",
    ):
        assert not k8s_emulator.exists(path), path
    again = run_playbook(write_play(tmp_path, k8s_emulator, state="absent"), cwd=tmp_path)
    assert changed_objects(again) == 0, again.output[-2000:]


WAIT_JOB = textwrap.dedent(
    """\
    - hosts: localhost
      connection: local
      gather_facts: false
      vars:
        ansible_python_interpreter: "{{ ansible_playbook_python }}"
      tasks:
        - name: Wait for the Job to finish either way
          kubernetes.core.k8s_info:
            kubeconfig: KUBECONFIG
            api_version: batch/v1
            kind: Job
            namespace: llm-training
            name: merge
          register: job
          until: >-
            job.resources | length > 0 and
            (job.resources[0].status.conditions | default([]) | selectattr('status', 'eq', 'True')
             | map(attribute='type') | select('in', ['Complete', 'Failed']) | list | length > 0)
          retries: 20
          delay: 1

        - name: Fail when the Job failed
          ansible.builtin.assert:
            that: "'Complete' in (job.resources[0].status.conditions | selectattr('status', 'eq', 'True')
                                  | map(attribute='type'))"
            fail_msg: "the Job failed: {{ job.resources[0].status.conditions }}"
    """
)


@pytest.mark.parametrize("outcome", ["Complete", "Failed"])
def test_a_test_can_write_status_to_drive_wait_logic(k8s_emulator: Emulator, tmp_path: Path, outcome: str) -> None:
    k8s_emulator.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "merge"},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "m", "image": "busybox"}]}}},
        # A client cannot set status on create when the resource has a status subresource.
        "status": {"succeeded": 1},
    }
    created = k8s_emulator.create(f"/apis/batch/v1/namespaces/{NS}/jobs", job)
    assert "status" not in created
    play = tmp_path / "wait.yml"
    play.write_text(WAIT_JOB.replace("KUBECONFIG", str(k8s_emulator.kubeconfig)))
    job_path = f"/apis/batch/v1/namespaces/{NS}/jobs/merge"
    k8s_emulator.set_status(job_path, emu.job_finished_status(outcome))
    result = run_playbook(play, cwd=tmp_path)
    if outcome == "Complete":
        assert result.rc == 0, result.output[-3000:]
    else:
        assert result.rc != 0
        assert any("the Job failed" in m for m in result.failures()), result.failures()
    # A status write changes neither the spec nor the generation.
    assert k8s_emulator.get(job_path)["metadata"]["generation"] == 1


def test_deployment_wait_sees_an_available_deployment(k8s_emulator: Emulator, tmp_path: Path) -> None:
    """kubernetes.core's own `wait: true` reads the Deployment's status: without a written status it
    times out (no controller runs here), with one it passes."""
    assert run_playbook(write_play(tmp_path, k8s_emulator), cwd=tmp_path).rc == 0
    play = tmp_path / "wait-deploy.yml"
    play.write_text(
        textwrap.dedent(
            f"""\
            - hosts: localhost
              connection: local
              gather_facts: false
              vars:
                ansible_python_interpreter: "{{{{ ansible_playbook_python }}}}"
              tasks:
                - name: Wait for the rollout
                  kubernetes.core.k8s:
                    kubeconfig: {k8s_emulator.kubeconfig}
                    api_version: apps/v1
                    kind: Deployment
                    namespace: {NS}
                    name: web
                    state: present
                    wait: true
                    wait_timeout: 3
                    wait_sleep: 1
            """
        )
    )
    not_ready = run_playbook(play, cwd=tmp_path)
    assert not_ready.rc != 0, "wait passed although no status was ever written"
    path = f"/apis/apps/v1/namespaces/{NS}/deployments/web"
    generation = k8s_emulator.get(path)["metadata"]["generation"]
    k8s_emulator.set_status(path, emu.deployment_available_status(1, generation))
    ready = run_playbook(play, cwd=tmp_path)
    assert ready.rc == 0, ready.output[-3000:]


def test_crd_registers_its_resource(k8s_emulator: Emulator) -> None:
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "servicemonitors.monitoring.coreos.com"},
        "spec": {
            "group": "monitoring.coreos.com",
            "scope": "Namespaced",
            "names": {"kind": "ServiceMonitor", "plural": "servicemonitors", "singular": "servicemonitor"},
            "versions": [
                {"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {"type": "object"}}}
            ],
        },
    }
    with pytest.raises(RuntimeError, match="HTTP 404"):
        k8s_emulator.get("/apis/monitoring.coreos.com/v1")
    k8s_emulator.create("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
    names = [r["name"] for r in k8s_emulator.get("/apis/monitoring.coreos.com/v1")["resources"]]
    assert names == ["servicemonitors"]


def test_api_semantics() -> None:
    """The object layer directly: conflicts, missing namespace, quantities, stringData, selectors."""
    server = emu.LlmopsEmulator()
    ns = emu.parse_route("/api/v1/namespaces")
    assert ns == emu.Route("", "v1", "namespaces")
    assert emu.parse_route("/api/v1/namespaces/a/status") == emu.Route("", "v1", "namespaces", None, "a", "status")
    assert emu.parse_route("/apis/apps/v1/namespaces/a/deployments/d/status") == emu.Route(
        "apps", "v1", "deployments", "a", "d", "status"
    )
    body = b'{"metadata": {"name": "s"}, "stringData": {"k": "v"}}'
    secrets = emu.parse_route("/api/v1/namespaces/a/secrets")
    with pytest.raises(emu.ApiError, match='namespaces "a" not found'):
        server.handle_object_request("POST", secrets, {}, {}, body)
    server.handle_object_request("POST", ns, {}, {}, b'{"metadata": {"name": "a", "labels": {"team": "ml"}}}')
    code, secret = server.handle_object_request("POST", secrets, {}, {}, body)
    assert code == 201 and secret["data"] == {"k": "dg=="} and "stringData" not in secret
    with pytest.raises(emu.ApiError, match="already exists"):
        server.handle_object_request("POST", secrets, {}, {}, body)
    stale = b'{"metadata": {"name": "s", "resourceVersion": "1"}, "data": {}}'
    with pytest.raises(emu.ApiError, match="has been modified"):
        server.handle_object_request("PUT", emu.parse_route("/api/v1/namespaces/a/secrets/s"), {}, {}, stale)
    pods = emu.parse_route("/api/v1/namespaces/a/pods")
    pod = b'{"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "resources": {"limits": {"cpu": 4}}}]}}'
    stored = server.handle_object_request("POST", pods, {}, {}, pod)[1]
    assert stored["spec"]["containers"][0]["resources"]["limits"]["cpu"] == "4"
    listed = server.handle_object_request("GET", ns, {"labelSelector": "team in (ml,ops)"}, {}, b"")[1]
    assert [o["metadata"]["name"] for o in listed["items"]] == ["a"]
    listed = server.handle_object_request("GET", ns, {"labelSelector": "team!=ml"}, {}, b"")[1]
    assert listed["items"] == [] and listed["kind"] == "NamespaceList"
    server.handle_object_request("DELETE", emu.parse_route("/api/v1/namespaces/a"), {}, {}, b"")
    assert server.store == {}


def test_strategic_merge_patch_merges_keyed_lists() -> None:
    current = {"spec": {"containers": [{"name": "a", "image": "x", "env": [{"name": "A", "value": "1"}]}]}}
    patch = {"spec": {"containers": [{"name": "a", "env": [{"name": "B", "value": "2"}]}, {"name": "b", "image": "y"}]}}
    merged = emu.strategic_merge_patch(current, patch)
    assert merged["spec"]["containers"][0] == {
        "name": "a",
        "image": "x",
        "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
    }
    assert merged["spec"]["containers"][1] == {"name": "b", "image": "y"}
    deleted = emu.strategic_merge_patch(merged, {"spec": {"containers": [{"name": "b", "$patch": "delete"}]}})
    assert [c["name"] for c in deleted["spec"]["containers"]] == ["a"]
    assert emu.json_patch(
        {"a": [1]}, [{"op": "add", "path": "/a/-", "value": 2}, {"op": "add", "path": "/b", "value": 0}]
    ) == {"a": [1, 2], "b": 0}
