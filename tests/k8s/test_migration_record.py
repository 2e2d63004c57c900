"""playbooks/migrate.yml's bookkeeping on the Kubernetes API emulator: the migration record (a ConfigMap) decides
which phase may run, before anything changes. A cutover without a passed parallel run, a cleanup inside the soak
window, a rollback after cleanup and a migration while the other direction is under way are refused naming the
variable; a bad phase is refused by the argument specs; status reads; an allowed cleanup (the soak window over, or
forced) removes the in-cluster side's objects and records it. The phases that run both sides for real (prepare,
parallel run, cutover with stop-but-keep, rollback) are tests/k8s/test_internal_layout.py's, on the test node with a
real vLLM in the cluster and on a systemd host."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import emulator as emu
import yaml
from k8s_harness import run_playbook

ROOT = Path(__file__).resolve().parents[2]
NS = "llm-training"
CONFIGMAPS = f"/api/v1/namespaces/{NS}/configmaps"


def migrate(emulator, tmp_path: Path, phase: str, *args: str, **extra):
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(yaml.safe_dump({
        "all": {"children": {
            "staging": {"hosts": {"localhost": {"ansible_connection": "local"}}},
            # Never contacted by these phases (a connection would fail: the address is TEST-NET-1).
            "vllm_hosts": {"hosts": {"prod-1": {"ansible_host": "192.0.2.1"}}},
        }},
    }))  # fmt: skip
    extra = {"vllm_migration_phase": phase, "vllm_k8s_kubeconfig": str(emulator.kubeconfig),
             "vllm_migration_report_dir": str(tmp_path / "report"), **extra}  # fmt: skip
    return run_playbook(ROOT / "playbooks" / "migrate.yml", cwd=tmp_path, extra_vars=extra,
                        args=[f"--inventory={inventory}", *args])  # fmt: skip


def record(emulator, **data) -> None:
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "vllm-migration", "namespace": NS},
            "data": data}  # fmt: skip
    if emulator.exists(f"{CONFIGMAPS}/vllm-migration"):
        emu.request(emulator.url, "PUT", f"{CONFIGMAPS}/vllm-migration", body)
    else:
        emu.request(emulator.url, "POST", CONFIGMAPS, body)


def recorded(emulator) -> dict:
    return emulator.get(f"{CONFIGMAPS}/vllm-migration")["data"]


def failure(run) -> str:
    assert run.rc != 0, run.output[-2000:]
    return " ".join(run.failures())


def hours_ago(hours: float) -> str:
    return (dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_the_record_decides_which_phase_may_run(k8s_emulator, tmp_path: Path) -> None:
    em = k8s_emulator
    emu.request(
        em.url, "POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}
    )

    status = migrate(em, tmp_path, "status")
    assert status.rc == 0 and status.stats["changed"] == 0, status.output[-2000:]
    assert not em.exists(f"{CONFIGMAPS}/vllm-migration")

    bad = migrate(em, tmp_path, "flip")
    assert "vllm_migration_phase" in failure(bad) and bad.stats.get("changed", 0) == 0

    early = failure(migrate(em, tmp_path, "cutover"))
    assert "vllm_migration_phase=cutover" in early and "needs a passed parallel run" in early, early

    record(em, direction="to_external", phase="parallel-failed", report="/tmp/r/parallel-run.json")
    refused = failure(migrate(em, tmp_path, "cutover", vllm_migration_direction="to_external"))
    assert "parallel-failed" in refused and "/tmp/r/parallel-run.json" in refused, refused

    other = failure(migrate(em, tmp_path, "prepare"))  # to_internal while to_external is under way
    assert "a migration to_external is in phase parallel-failed" in other, other

    # Cut over an hour ago: cleanup is refused inside the 48 h window, naming how to override it.
    record(em, direction="to_external", phase="cut-over", cutover_at=hours_ago(1))
    soak = migrate(em, tmp_path, "soak", vllm_migration_direction="to_external")
    assert soak.rc == 0 and soak.stats["changed"] == 0
    assert any(
        "cleanup is refused for another 47" in str(r.get("msg"))
        for r in soak.results("Say how long the new side has served alone")
    ), soak.output[-2000:]
    inside = failure(migrate(em, tmp_path, "cleanup", vllm_migration_direction="to_external"))
    assert "1.0 h of the 48.0 h soak window" in inside and "vllm_migration_force" in inside, inside
    assert recorded(em)["phase"] == "cut-over"

    # The window over (a shorter one), the cleanup runs: the in-cluster vLLM's objects go, the record says so.
    emu.request(em.url, "POST", f"/apis/apps/v1/namespaces/{NS}/deployments", {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "vllm-inference", "namespace": NS},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "vllm"}},
                 "template": {"metadata": {"labels": {"app": "vllm"}},
                              "spec": {"containers": [{"name": "vllm", "image": "x"}]}}},
    })  # fmt: skip
    done = migrate(em, tmp_path, "cleanup", vllm_migration_direction="to_external", vllm_migration_soak_hours=0.5)
    assert done.rc == 0, done.output[-3000:]
    assert not em.exists(f"/apis/apps/v1/namespaces/{NS}/deployments/vllm-inference")
    data = recorded(em)
    assert data["phase"] == "cleaned" and data["cutover_at"] and data["cleaned_at"], data

    after = failure(migrate(em, tmp_path, "rollback", vllm_migration_direction="to_external"))
    assert "the old side was removed at cleanup" in after, after

    # Forced inside the window: predicted in check mode (nothing written), then done.
    record(em, direction="to_external", phase="cut-over", cutover_at=hours_ago(2))
    for check, phase in ((True, "cut-over"), (False, "cleaned")):
        forced = migrate(em, tmp_path, "cleanup", *(["--check"] if check else []),
                         vllm_migration_direction="to_external", vllm_migration_force=True)  # fmt: skip
        assert forced.rc == 0, forced.output[-3000:]
        assert recorded(em)["phase"] == phase
