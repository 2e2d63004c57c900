"""The internal layout end to end, as an operator runs it (README quick start), on the API emulator with the
test node running the pods' real processes: LLaMA-Factory train and merge Jobs, MLflow, the WebUI and vLLM
(CPU build), vLLM's health gate sending real completions through a real kubectl port-forward. vLLM runs under a
name and Service port that are not the role's defaults (internal_layout.VLLM_NAME, VLLM_PORT, set in the
inventory only): the gate, the reload, the port-forwards and the teardown must find it by vllm_k8s's variables,
and nothing named like the default is ever written. See tests/k8s/internal_layout.py for what the test provides
and docs/kubernetes-testing.md for what this proves and what it does not.

One cluster for the module; the tests run in order and each checks one stage:
  internal.yml --check --diff -> internal.yml (first run: no merged model, vLLM at 0 replicas)
  -> train.yml -> merge.yml (a new model version; vLLM scaled onto it, the gate sends a real completion)
  -> merge.yml with a model vLLM cannot load (rollout fails fast, the previous version is restored)
  -> internal.yml again (changes nothing, vLLM keeps its pod) -> fleet_status.yml (the pod's row: release, digest)
  -> ui.yml (kubectl port-forwards through the emulator; the WebUI and MLflow opened in headless Chromium,
     a completion through vLLM's forward) -> ui.yml -e llmops_ui_state=stopped -> teardown.yml
  -> (every stage) nothing was ever written under vLLM's default name.
"""

from __future__ import annotations

import contextlib
import html
import json
import os
import re
import signal
import socket
import ssl
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import node as test_node  # noqa: E402
from browser import page_dom  # noqa: E402
from internal_layout import (  # noqa: E402
    API_KEY,
    BREAK_MERGE_MARKER,
    DEFAULT_VLLM_NAME,
    HF_TOKEN,
    NAMESPACE,
    SERVED_NAME,
    TEST_NODE_VARS,
    VLLM_NAME,
    VLLM_PORT,
    Stage,
    from_environment,
    stage_table,
)
from k8s_harness import wait_for  # noqa: E402

pytestmark = [pytest.mark.llamafactory, pytest.mark.vllm]

SECRETS = (API_KEY, HF_TOKEN)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    cluster = from_environment(tmp_path_factory.mktemp("internal-layout")).start()
    try:
        yield cluster
    finally:
        if cluster.stages:
            print("\n" + stage_table(cluster.stages))
        cluster.stop()


def require_ok(stage) -> None:
    assert stage.rc == 0, f"{stage.name} failed (rc {stage.rc}): {stage.failures()}\n{stage.output[-4000:]}"
    for secret in SECRETS:
        assert secret not in stage.output, f"{stage.name}: a secret reached the output"


def test_check_mode_on_an_empty_cluster_writes_nothing(cluster):
    stage = cluster.playbook("internal.yml --check --diff", "internal.yml", "--check", "--diff")
    require_ok(stage)
    assert stage.stats["changed"] > 0, stage.stats
    assert cluster.items("/api/v1/namespaces") == [], "check mode created a namespace"


def test_first_run_deploys_the_platform_and_keeps_vllm_at_zero(cluster):
    stage = cluster.playbook("internal.yml (first run)", "internal.yml")
    require_ok(stage)
    assert any("NO MERGED MODEL YET" in m for m in stage.messages()), stage.messages()
    assert any("HEALTH GATE SKIPPED" in m for m in stage.messages()), stage.messages()
    vllm = cluster.deployment(VLLM_NAME)
    assert vllm["spec"]["replicas"] == 0
    assert cluster.pods("app.kubernetes.io/name=vllm") == []
    # MLflow and the WebUI run for real: their Deployments became available through their real /health.
    for name in ("mlflow", "llama-factory-webui"):
        status = wait_for(
            f"{name} available", lambda n=name: cluster.deployment(n).get("status", {}).get("availableReplicas"), 180
        )
        assert status == 1
    code, body = cluster.http(cluster.service_url("mlflow", 5000) + "/health")
    assert code == 200 and "OK" in body, (code, body)


def test_a_training_job_that_cannot_start_fails_at_once(cluster):
    """An image the node cannot pull: the pod waits with ErrImagePull, then ImagePullBackOff (the kubelet's two
    reasons for one fault; a slow poll sees the second), and train.yml stops at once saying so instead of waiting
    out training_cluster_train_timeout."""
    image = "registry.example.internal/llm/no-such-image:0.0.1"
    stage = cluster.playbook("train.yml (missing image)", "train.yml", "-e", f"training_cluster_image={image}")
    assert stage.rc != 0
    failures = "\n".join(stage.failures())
    pull_reason = "ErrImagePull" in failures or "ImagePullBackOff" in failures
    assert "CANNOT START" in failures and pull_reason and image in failures, failures
    assert stage.seconds < 120, f"took {stage.seconds:.0f} s to notice"


def test_train_runs_the_training_job_and_reports_to_mlflow(cluster):
    stage = cluster.playbook("train.yml", "train.yml")
    require_ok(stage)
    # A person watching saw the run's progress: the last line is the finished run's.
    progress = [line for line in stage.output.splitlines() if line.startswith("[train] ")]
    assert progress and progress[-1].startswith("[train] step 4/4 (100%), loss "), progress
    job = cluster.get(f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs/llama-factory-train")
    assert any(c["type"] == "Complete" and c["status"] == "True" for c in job["status"]["conditions"]), job["status"]
    adapter = cluster.pvc / "output" / "lora-adapter"
    assert (adapter / "adapter_model.safetensors").is_file(), sorted(p.name for p in adapter.glob("*"))
    assert json.loads((adapter / "adapter_config.json").read_text())["r"] == 8
    # The MLflow server in the cluster holds the run with its per-step loss.
    mlflow = cluster.service_url("mlflow", 5000)
    code, body = cluster.http(mlflow + "/api/2.0/mlflow/experiments/search", {"max_results": 50})
    assert code == 200, body
    experiments = [e["experiment_id"] for e in json.loads(body).get("experiments", [])]
    code, body = cluster.http(mlflow + "/api/2.0/mlflow/runs/search", {"experiment_ids": experiments})
    runs = json.loads(body).get("runs", [])
    assert runs, f"no MLflow run in {experiments}"
    metrics = {m["key"] for run in runs for m in run["data"].get("metrics", [])}
    assert "loss" in metrics or "train_loss" in metrics, metrics


def test_merge_switches_vllm_onto_the_merged_model_behind_a_real_gate(cluster):
    stage = cluster.playbook("merge.yml", "merge.yml")
    require_ok(stage)
    # A new version directory, sealed with its manifest; the ADR's merged-model path is a link to it.
    record = cluster.model_record()
    version = record["revision"]
    assert record["model_path"] == f"/storage/models/merged-model-versions/{version}", record
    merged = cluster.pvc / "models" / "merged-model-versions" / version
    assert (merged / "config.json").is_file() and list(merged.glob("*.safetensors")), sorted(merged.glob("*"))
    manifest = json.loads((merged / ".llmops-manifest.json").read_text())
    assert manifest["content_digest"] == record["digest"] and manifest["file_count"] >= 3, manifest["file_count"]
    link = cluster.pvc / "models" / "merged-model"
    assert link.is_symlink() and link.resolve() == merged.resolve(), link
    assert "previous" not in record, "the first merge has no previous version"
    vllm = cluster.deployment(VLLM_NAME)
    assert vllm["spec"]["replicas"] == 1
    assert vllm["spec"]["template"]["metadata"]["annotations"]["llmops.io/model-revision"] == record["revision"]
    assert vllm["status"]["readyReplicas"] == 1
    # vllm_k8s's gate sent a real completion through a kubectl port-forward to the renamed Service and its port,
    # into the vLLM pod, and stopped the forward again.
    assert_gated_through_a_forward(cluster, stage)
    # The same Service from outside the pod: the key is required, a completion comes back with it.
    url = cluster.service_url(VLLM_NAME, VLLM_PORT)
    body = {"model": SERVED_NAME, "prompt": "Hello", "max_tokens": 4, "temperature": 0}
    assert cluster.http(url + "/v1/completions", body)[0] == 401
    code, answer = cluster.http(url + "/v1/completions", body, key=API_KEY)
    assert code == 200 and json.loads(answer)["choices"][0]["text"], answer
    # vLLM serves what the merge wrote: the pod's args name the merged directory on the PVC.
    pod = cluster.pods("app.kubernetes.io/name=vllm")[0]
    args = pod["spec"]["containers"][0]["args"]
    assert args[args.index("--model") + 1] == record["model_path"]


def assert_gated_through_a_forward(cluster, stage) -> None:
    """The stage's health gate: openai_health got a completion for the served model, through the forward the gate
    printed (svc/VLLM_NAME on VLLM_PORT), which reached the vLLM pod, and the forward is gone afterwards."""
    gates = stage_results(stage, "Send a real completion (llmops.platform.openai_health)")
    assert gates and all(g.get("ready") and g.get("model") == SERVED_NAME for g in gates), gates
    printed = [item["msg"] for item in item_results(stage, "Print the port-forward commands")]
    assert printed and all(
        m.startswith("vllm-gate: ") and f"svc/{VLLM_NAME} {cluster.gate_port}:{VLLM_PORT}" in m for m in printed
    ), printed
    vllm_pods = {p["metadata"]["name"] for p in cluster.pods("app.kubernetes.io/name=vllm")}
    forwarded = {line.rsplit("/", 1)[1] for line in cluster.audit() if line.startswith("PORTFORWARD ")}
    assert vllm_pods & forwarded, (vllm_pods, forwarded)
    stopped = [item["stdout"] for item in item_results(stage, "Stop the port forwards started here")]
    assert stopped and set(stopped) == {"stopped"}, stopped
    assert not (cluster.ui_state_dir / "vllm-gate.pid").exists()


def served_model_root(cluster) -> str:
    """The directory the running vLLM loaded, as its /v1/models says (`root`)."""
    code, body = cluster.http(cluster.service_url(VLLM_NAME, VLLM_PORT) + "/v1/models", key=API_KEY)
    assert code == 200, body
    return json.loads(body)["data"][0]["root"]


def test_a_merge_that_fails_its_rollout_restores_the_previous_version(cluster):
    """The next merge writes a model vLLM cannot load (fault injected, see BREAK_MERGE_MARKER): it passes the
    model check, the rollout fails fast on the crashing pod, and merge.yml puts the previous version back,
    gates it and fails naming both versions."""
    before = cluster.model_record()
    assert before, "needs the merged model of the previous test"
    marker = cluster.pvc / BREAK_MERGE_MARKER
    marker.touch()
    stage = cluster.playbook("merge.yml (model vLLM cannot load)", "merge.yml")
    assert not marker.exists(), "the fault was not injected: the merge did not run the wrapper"
    assert stage.rc != 0, "a merge whose model cannot be served must fail"
    for secret in SECRETS:
        assert secret not in stage.output
    failure = " ".join(stage.failures())
    after = cluster.model_record()
    failed = json.loads(after["failed"])
    assert failed["revision"] != before["revision"], failed
    assert f"Version {failed['revision']}" in failure and f"Version {before['revision']} is served again" in failure, (
        failure
    )
    assert "CANNOT BECOME AVAILABLE" in stage.output, stage.output[-3000:]
    # The previous version serves again, from the pods and through the Service.
    assert {k: after[k] for k in ("model_path", "revision", "digest")} == {
        k: before[k] for k in ("model_path", "revision", "digest")
    }
    vllm = cluster.deployment(VLLM_NAME)
    assert vllm["status"]["readyReplicas"] == 1
    assert served_model_root(cluster) == before["model_path"]
    # The restored version passed the gate again, through the renamed Service.
    assert_gated_through_a_forward(cluster, stage)
    url = cluster.service_url(VLLM_NAME, VLLM_PORT)
    body = {"model": SERVED_NAME, "prompt": "Hello", "max_tokens": 4, "temperature": 0}
    code, answer = cluster.http(url + "/v1/completions", body, key=API_KEY)
    assert code == 200 and json.loads(answer)["choices"][0]["text"], answer
    # The failed version stays on the volume for inspection (with its manifest: it passed the model check).
    assert (cluster.pvc / failed["model_path"].removeprefix("/storage/") / ".llmops-manifest.json").is_file()


def engine_core_pids() -> list:
    """vLLM's engine process (proctitle VLLM::EngineCore; setproctitle rewrites its command line, and its
    environ with it) whose parent is the pod's `vllm serve ... --served-model-name merged-model`."""

    def read(pid: str, name: str) -> bytes:
        try:
            return (Path("/proc") / pid / name).read_bytes()
        except OSError:
            return b""

    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or b"EngineCore" not in read(proc.name, "cmdline"):
            continue
        stat = read(proc.name, "stat").decode(errors="replace")
        parent = stat.rsplit(")", 1)[-1].split()[1] if ")" in stat else ""
        parent_cmdline = read(parent, "cmdline").replace(b"\0", b" ")
        if b"vllm serve" in parent_cmdline and b"--served-model-name " + SERVED_NAME.encode() in parent_cmdline:
            found.append(int(proc.name))
    return found


def test_a_hung_engine_is_restarted_by_the_liveness_probe(cluster):
    """SIGSTOP the engine inside the pod: /health stays 200 (the API server process still answers), every
    completion hangs, and the completion liveness probe makes the node restart the container."""
    url = cluster.service_url(VLLM_NAME, VLLM_PORT)
    pod = cluster.pods("app.kubernetes.io/name=vllm")[0]
    restarts = pod["status"]["containerStatuses"][0]["restartCount"]
    pids = engine_core_pids()
    assert len(pids) == 1, f"expected one vLLM engine process, found {pids}"
    os.kill(pids[0], signal.SIGSTOP)
    try:
        assert cluster.http(url + "/health")[0] == 200, "a stopped engine should keep /health at 200"
        restarted = wait_for(
            "the liveness probe to restart the container",
            lambda: (
                cluster.pods("app.kubernetes.io/name=vllm")[0]["status"]["containerStatuses"][0]["restartCount"]
                > restarts
            ),
            240,
        )
        assert restarted
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pids[0], signal.SIGCONT)

    def restarted_and_ready():
        status = cluster.pods("app.kubernetes.io/name=vllm")[0]["status"]["containerStatuses"][0]
        return status["restartCount"] > restarts and status["ready"]

    wait_for("the restarted engine ready", restarted_and_ready, 300)
    body = {"model": SERVED_NAME, "prompt": "Hello", "max_tokens": 4, "temperature": 0}
    code, answer = cluster.http(url + "/v1/completions", body, key=API_KEY)
    assert code == 200 and json.loads(answer)["choices"][0]["text"], answer
    assert engine_core_pids() not in ([], pids), "the engine process was not replaced"
    assert "liveness" in (cluster.k8s / "node.log").read_text()


def test_a_second_converge_changes_nothing_and_keeps_the_vllm_pod(cluster):
    pods_before = [p["metadata"]["name"] for p in cluster.pods("app.kubernetes.io/name=vllm")]
    stage = cluster.playbook("internal.yml (again)", "internal.yml")
    require_ok(stage)
    changed = [
        task["task"]["name"]
        for play in stage.report.get("plays", [])
        for task in play["tasks"]
        if any(result.get("changed") for result in task["hosts"].values())
    ]
    assert stage.stats["changed"] == 0, changed
    assert [p["metadata"]["name"] for p in cluster.pods("app.kubernetes.io/name=vllm")] == pods_before


def test_fleet_status_reports_each_vllm_pod_with_the_served_version_and_digest(cluster):
    """playbooks/fleet_status.yml on this cluster: one row per vLLM pod, probed through a port-forward to that pod,
    with the release the server reports, the model record's version and the manifest's content digest; read-only."""
    out = cluster.workdir / "fleet-status"
    stage = cluster.playbook("fleet_status.yml", "fleet_status.yml", "-e", f"llmops_fleet_status_output_dir={out}")
    require_ok(stage)
    assert stage.stats["changed"] == 0, stage.stats
    written = {name: (out / name).read_text() for name in ("fleet-status.json", "fleet-status.md")}
    for secret in SECRETS:
        assert all(secret not in text for text in written.values())
    rows = json.loads(written["fleet-status.json"])["rows"]
    pods = cluster.pods("app.kubernetes.io/name=vllm")
    assert [(r["layout"], r["instance"]) for r in rows] == [("internal", p["metadata"]["name"]) for p in pods], rows
    row, pod = rows[0], pods[0]
    record = cluster.model_record()
    version_dir = cluster.pvc / record["model_path"].removeprefix("/storage/")
    manifest = json.loads((version_dir / ".llmops-manifest.json").read_text())
    code, served = cluster.http(cluster.service_url(VLLM_NAME, VLLM_PORT) + "/version")
    assert code == 200, served
    assert row["state"] == "healthy", row
    assert (row["vllm_version"], row["vllm_version_source"]) == (json.loads(served)["version"], "server")
    assert row["digest"] == record["digest"] == manifest["content_digest"]
    template = cluster.deployment(VLLM_NAME)["spec"]["template"]["metadata"]["annotations"]
    assert row["current"] == record["revision"] == template["llmops.io/model-revision"]
    assert row["previous"] == json.loads(record.get("previous") or "{}").get("revision", "")
    assert row["served_model"] == SERVED_NAME
    assert row["restarts"] == pod["status"]["containerStatuses"][0]["restartCount"]
    deployment_revision = (
        cluster.deployment(VLLM_NAME)["metadata"].get("annotations", {}).get("deployment.kubernetes.io/revision")
    )
    assert row["promotion"] == (f"Deployment revision {deployment_revision}" if deployment_revision else "")
    # Probed through a forward to the pod itself (not the Service), stopped afterwards.
    printed = [item["msg"] for item in item_results(stage, "Print the port-forward commands")]
    assert any(f"pod/{pod['metadata']['name']} {cluster.status_port}:" in m for m in printed), printed
    assert not list(cluster.ui_state_dir.glob("vllm-status-*.pid"))
    assert f"| internal | {NAMESPACE}/{VLLM_NAME} | {pod['metadata']['name']} | healthy |" in written["fleet-status.md"]


# -- hybrid: staging (this cluster's vLLM) promoted to a production host (a real systemd host in nspawn) ---------
PROD_KEY = "e2e-hybrid-production-key-51c0d"
PROD_HOST = "hybrid-prod-1"


@pytest.fixture(scope="module")
def production(cluster):
    """One production host (tests/hosts: systemd in nspawn, vLLM's virtualenv from the shared layer) beside the
    cluster: an inventory like inventories/hybrid - the cluster's inventory for staging (localhost), the demo
    inventory's CPU settings for vllm_hosts with staging's served name and vLLM settings, and the cluster's PVC
    as the share production reads the model from (on the controller here; NFS on /storage in production)."""
    from fleet_support import booted_fleet

    for fleet in booted_fleet(
        "hybrid", {"vllm_hosts": [PROD_HOST]}, wheelhouse=True, env={"LLMOPS_DEMO_API_KEY": PROD_KEY}, vllm_layer=True
    ):
        inventory = fleet.state / "hybrid-production"
        (inventory / "group_vars").mkdir(parents=True, exist_ok=True)
        (inventory / "hosts.yml").write_text(json.dumps({"vllm_hosts": {"hosts": {PROD_HOST: None}}}))
        server = {k: v for k, v in TEST_NODE_VARS["vllm_k8s_server"].items() if k != "device"}
        (inventory / "group_vars" / "vllm_hosts.yml").write_text(
            json.dumps(
                {
                    "vllm_host_served_model_name": SERVED_NAME,
                    "vllm_host_server_defaults": server,
                    "model_sync_source_location": "controller",
                    "hybrid_storage_path": str(cluster.pvc),
                }
            )
        )
        fleet.inventories += [inventory, cluster.inventory]
        fleet.env.update({k: v for k, v in cluster.env().items() if k in ("KUBECONFIG", "ANSIBLE_VAULT_PASSWORD_FILE")})
        yield fleet


def hybrid(cluster, production, name: str, **extra):
    """hybrid.yml as an operator runs it, recorded as a stage of the cluster's table."""
    started = time.monotonic()
    rc, output, report = production.playbook("hybrid.yml", **extra)
    stage = Stage(name, ["ansible-playbook", "playbooks/hybrid.yml"], rc, time.monotonic() - started, report, output)
    cluster.stages.append(stage)
    for secret in (*SECRETS, PROD_KEY):
        assert secret not in output, f"{name} printed a key"
    return stage


def staging_answer(cluster, prompt: str) -> str:
    body = {"model": SERVED_NAME, "prompt": prompt, "max_tokens": 8, "temperature": 0}
    code, answer = cluster.http(cluster.service_url(VLLM_NAME, VLLM_PORT) + "/v1/completions", body, key=API_KEY)
    assert code == 200, answer
    return json.loads(answer)["choices"][0]["text"]


def test_hybrid_stops_at_a_production_setting_that_differs_from_staging(cluster, production):
    """A first promotion onto a host whose vLLM is configured with a shorter context than staging's: the instance
    starts and passes the health gate, the consistency gate fails naming the flag with both values, and the
    instance is stopped (not put into the balancer), so the next run starts it and gates it again."""
    record = cluster.model_record()
    assert record, "needs the merged model staging serves"
    server = {k: v for k, v in TEST_NODE_VARS["vllm_k8s_server"].items() if k != "device"}
    stage = hybrid(cluster, production, "hybrid.yml (production max_model_len differs)",
                   vllm_host_server_defaults={**server, "max_model_len": 128})  # fmt: skip
    assert stage.rc != 0, "a production host configured unlike staging must fail the promotion"
    failure = " ".join(stage.failures())
    assert "--max-model-len (max_model_len): 256 on staging" in failure and "128 on" in failure, failure
    assert "vllm_host_gate_tasks" in failure and "were stopped" in failure, failure
    assert production.current().endswith(record["digest"][:16])
    assert production.ssh("systemctl is-active vllm@main.service", check=False).strip() == "inactive"


def test_hybrid_promotes_the_model_staging_validated_behind_the_parity_gate(cluster, production):
    record = cluster.model_record()
    stage = hybrid(cluster, production, "hybrid.yml")
    assert stage.rc == 0, f"hybrid.yml failed: {stage.failures()}\n{stage.output[-4000:]}"
    # Exactly staging's content, verified on the host.
    assert production.current().endswith(record["digest"][:16])
    # The same server (consistency) and the same answers (openai_compare) as staging, through a port-forward.
    consistency = item_results(stage, "The candidates must run the same vLLM release, model content and settings")
    assert consistency and all(c["consistent"] for c in consistency), consistency
    compared = item_results(stage, f"The candidates must answer as the baseline does, staging {NAMESPACE}/{VLLM_NAME}")
    assert compared and all(c["passed"] and c["agreement"] == 1.0 and c["compared"] >= 16 for c in compared), compared
    assert compared[0]["baseline"]["server_version"] == compared[0]["candidate"]["server_version"]
    # And for a prompt of the test's own, asked directly: production answers as staging.
    prompt = "The hybrid layout promotes"
    assert production.answer(PROD_KEY, prompt=prompt, model=SERVED_NAME) == staging_answer(cluster, prompt)
    assert not list((cluster.ui_state_dir).glob("parity-*.pid")), "the port-forward to staging was left running"


def test_hybrid_again_changes_nothing(cluster, production):
    stage = hybrid(cluster, production, "hybrid.yml (again)")
    assert stage.rc == 0, stage.failures()
    assert stage.report["stats"][PROD_HOST]["changed"] == 0, stage.report["stats"]


def test_hybrid_refuses_a_model_changed_on_the_share_after_staging_validated_it(cluster, production):
    record = cluster.model_record()
    target = cluster.pvc / record["model_path"].removeprefix("/storage/") / "generation_config.json"
    original = target.read_bytes()
    before = production.current()
    try:
        target.write_bytes(original.rstrip() + b"\n\n")
        stage = hybrid(cluster, production, "hybrid.yml (model changed after validation)")
    finally:
        target.write_bytes(original)
    assert stage.rc != 0, "a model that is no longer what staging validated must not be promoted"
    failure = " ".join(stage.failures())
    assert record["digest"][:16] in failure or record["digest"] in failure, failure
    assert production.current() == before
    assert production.answer(PROD_KEY, model=SERVED_NAME)


# -- migration (playbooks/migrate.yml): the in-cluster vLLM's traffic moved to the production host and back ---------
ENDPOINT = "vllm-api"


def migrate(cluster, production, phase: str, name: str = "", **extra):
    """migrate.yml as an operator runs it (direction to_external: the hybrid layout's cluster -> hosts)."""
    # No EndpointSlice controller here: the rollback does not wait for one (docs/roles/vllm_endpoint.md).
    extra = {"vllm_migration_phase": phase, "vllm_migration_direction": "to_external",
             "vllm_migration_report_dir": str(production.state / "migration"),
             "vllm_endpoint_controller_timeout": 0, **extra}  # fmt: skip
    started = time.monotonic()
    rc, output, report = production.playbook("migrate.yml", **extra)
    stage = Stage(name or f"migrate.yml {phase}", ["ansible-playbook", "playbooks/migrate.yml"], rc,
                  time.monotonic() - started, report, output)  # fmt: skip
    cluster.stages.append(stage)
    for secret in (*SECRETS, PROD_KEY):
        assert secret not in output, f"{stage.name} printed a key"
    return stage


def endpoint_state(cluster) -> dict:
    svc = cluster.get(f"/api/v1/namespaces/{NAMESPACE}/services/{ENDPOINT}")
    slices = cluster.items(f"/apis/discovery.k8s.io/v1/namespaces/{NAMESPACE}/endpointslices")
    return {
        "selector": svc["spec"].get("selector"),
        "fronts": sorted(
            f"{a}:{s['ports'][0]['port']}" for s in slices for e in s["endpoints"] for a in e["addresses"]
        ),
    }


def through_the_endpoint(cluster, production) -> str:
    """GET /v1/models through the stable endpoint's cluster IP on the test node (its proxy follows the Service's
    selector or EndpointSlices), TLS verified with the fleet's CA for the production host's name."""
    ip, ports = test_node.service_address(cluster.k8s, NAMESPACE, ENDPOINT)
    context = ssl.create_default_context(cafile=str(production.ca))
    request = (
        f"GET /v1/models HTTP/1.1\r\nHost: {ENDPOINT}\r\nAuthorization: Bearer {PROD_KEY}\r\nConnection: close\r\n\r\n"
    )
    answer = b""
    raw = socket.create_connection((ip, ports["api"]), timeout=30)
    with context.wrap_socket(raw, server_hostname=PROD_HOST) as tls:
        tls.sendall(request.encode())
        while chunk := tls.recv(65536):
            answer += chunk
    return answer.decode(errors="replace")


def test_migration_to_the_hosts_gated_cut_over_soaked_and_rolled_back(cluster, production):
    """The stable endpoint first leads to the in-cluster vLLM. prepare (hybrid.yml's gated promotion) -> a parallel
    run whose sides differ (production's inventory declares another context length) fails and blocks the cutover ->
    a passing parallel run with its report (agreement, latency, throughput, KV cache of both sides) -> cutover: the
    endpoint's Service and EndpointSlices before and after, traffic through it reaching the host, the in-cluster
    Deployment stopped but kept -> cleanup refused inside the soak window -> rollback: the in-cluster vLLM back and
    gated, the endpoint back on it."""
    first = cluster.playbook("endpoint.yml (internal)", "endpoint.yml", "-e", "vllm_endpoint_target=internal",
                             "-e", f"vllm_endpoint_internal_service={VLLM_NAME}")  # fmt: skip
    require_ok(first)
    before = endpoint_state(cluster)
    assert before == {"selector": {"app.kubernetes.io/name": "vllm", "app.kubernetes.io/instance": VLLM_NAME},
                      "fronts": []}, before  # fmt: skip

    require_ok(migrate(cluster, production, "prepare"))
    server = {k: v for k, v in TEST_NODE_VARS["vllm_k8s_server"].items() if k != "device"}
    differ = migrate(cluster, production, "parallel", "migrate.yml parallel (sides differ)",
                     vllm_host_server_defaults={**server, "max_model_len": 128})  # fmt: skip
    assert differ.rc != 0 and "--max-model-len" in " ".join(differ.failures()), differ.failures()
    blocked = migrate(cluster, production, "cutover", vllm_migration_allow_scheme_change=True)
    assert blocked.rc != 0 and "parallel-failed" in " ".join(blocked.failures()), blocked.failures()
    assert endpoint_state(cluster) == before, "a blocked cutover moved the endpoint"

    passed = migrate(cluster, production, "parallel")
    require_ok(passed)
    report = json.loads((production.state / "migration" / "parallel-run.json").read_text())
    assert report["passed"] and len(report["external"]) == 1, report
    side, internal = report["external"][0], report["internal"]
    assert side["agreement"] == 1.0 and side["compared"] >= 16 and side["digest"] == internal["digest"], side
    assert side["figures"]["latency_ms"]["p95"] and side["baseline_figures"]["output_tokens_per_second"], side
    for load in (side["load"], internal["load"]):
        assert load["kv_cache_usage"] is not None and load["generation_tokens_total"] > 0, load
    assert "agreement" in (production.state / "migration" / "parallel-run.md").read_text()

    cut = migrate(cluster, production, "cutover", vllm_migration_allow_scheme_change=True)
    require_ok(cut)
    after = endpoint_state(cluster)
    assert after == {"selector": None, "fronts": [f"{production.addresses[PROD_HOST]}:8000"]}, after
    assert through_the_endpoint(cluster, production).startswith("HTTP/1.1 200"), "the endpoint does not reach the host"
    wait_for("the in-cluster vLLM stopped", lambda: cluster.pods("app.kubernetes.io/name=vllm") == [], timeout=180)
    assert cluster.deployment(VLLM_NAME)["spec"]["replicas"] == 0, "the in-cluster vLLM must be kept, stopped"
    record = cluster.get(f"/api/v1/namespaces/{NAMESPACE}/configmaps/vllm-migration")["data"]
    assert record["phase"] == "cut-over" and record["cutover_at"], record

    soak = migrate(cluster, production, "cleanup")
    assert soak.rc != 0 and "soak window" in " ".join(soak.failures()), soak.failures()
    assert cluster.deployment(VLLM_NAME), "cleanup inside the soak window removed the in-cluster vLLM"

    back = migrate(cluster, production, "rollback", vllm_migration_allow_scheme_change=True)
    require_ok(back)
    assert endpoint_state(cluster) == before
    assert staging_answer(cluster, "After the rollback") == production.answer(
        PROD_KEY, prompt="After the rollback", model=SERVED_NAME
    )
    assert cluster.get(f"/api/v1/namespaces/{NAMESPACE}/configmaps/vllm-migration")["data"]["phase"] == "rolled-back"


def visible_text(dom: str) -> str:
    """The DOM's text without scripts, styles and tags, whitespace collapsed."""
    text = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S | re.I)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", text))).strip()


def stage_results(stage, task: str) -> list:
    """The host results of every task (by the end of its name) the stage ran, in order."""
    return [
        result
        for play in stage.report.get("plays", [])
        for entry in play["tasks"]
        if entry["task"]["name"].endswith(task)
        for result in entry["hosts"].values()
    ]


def item_results(stage, task: str) -> list:
    """The per-item results of every run of a loop task (by the end of its name) that was not skipped, in order
    (k8s_common's port_forward runs twice per gate: started, where its stop task is skipped, then stopped)."""
    return [
        item for result in stage_results(stage, task) for item in result.get("results", []) if not item.get("skipped")
    ]


def kubectl_forwards(cluster) -> list:
    """Live `kubectl port-forward` processes using this cluster's kubeconfig (zombies are gone)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if b"port-forward" in cmdline and str(cluster.kubeconfig).encode() in cmdline and state != "Z":
            found.append(int(proc.name))
    return found


def test_ui_forwards_the_webui_mlflow_and_vllm_to_a_browser(cluster, tmp_path_factory):
    """README: `ansible-playbook playbooks/ui.yml` starts kubectl port-forwards (real kubectl, through the
    emulator's port-forward, into the pods' network namespaces); a real browser then shows the LLaMA Board
    and the training run in MLflow, and vLLM answers through its forward with the key only."""
    try:
        check_ui(cluster, tmp_path_factory)
    finally:
        for pid in kubectl_forwards(cluster):  # what a failed check left running
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)


def check_ui(cluster, tmp_path_factory) -> None:
    stage = cluster.playbook("ui.yml", "ui.yml")
    require_ok(stage)
    ports = cluster.ui_ports
    services = {"webui": ("llama-factory-webui", 7860), "mlflow": ("mlflow", 5000)}
    services["vllm"] = (VLLM_NAME, VLLM_PORT)
    printed = [item["msg"] for item in item_results(stage, "Print the port-forward commands")]
    assert len(printed) == 3, printed
    for message, (name, (service, port)) in zip(printed, services.items()):
        assert message.startswith(f"{name}: ") and f"svc/{service} {ports[name]}:{port}" in message, printed
    started = [item["stdout"] for item in item_results(stage, "Start each forward in the background")]
    assert started == ["started"] * 3, started
    assert len(kubectl_forwards(cluster)) == 3, kubectl_forwards(cluster)
    url = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    again = cluster.playbook("ui.yml (again)", "ui.yml")
    require_ok(again)
    running = [item["stdout"] for item in item_results(again, "Start each forward in the background")]
    assert running == ["running"] * 3 and again.stats["changed"] == 0, (running, again.stats)
    assert len(kubectl_forwards(cluster)) == 3

    # LLaMA Board in a real browser (its labels come from its JavaScript's calls back to the server): the page
    # title names the WebUI pod (its HOSTNAME), and the training form is there.
    webui_pod = cluster.pods("app.kubernetes.io/name=llama-factory-webui")[0]["metadata"]["name"]
    form = ("Model name", "Model path", "Finetuning method", "Train", "Dataset", "Learning rate", "LoRA rank")

    def shows_form(dom: str) -> bool:
        return all(label in visible_text(dom) for label in form)

    dom = page_dom(url["webui"] + "/", tmp_path_factory.mktemp("chromium-webui"), shows_form)
    assert f"<title>LLaMA Factory ({webui_pod})</title>" in dom, dom[:2000]
    text = visible_text(dom)
    for label in form:
        assert label in text, f"LLaMA Board shows no {label!r}: {text[:3000]}"

    # MLflow: the run train.yml logged (read through the same forward's API) is on its experiment's page,
    # and its own page shows its metrics.
    code, body = cluster.http(url["mlflow"] + "/api/2.0/mlflow/experiments/search", {"max_results": 50})
    assert code == 200, body
    experiments = [e["experiment_id"] for e in json.loads(body)["experiments"]]
    code, body = cluster.http(url["mlflow"] + "/api/2.0/mlflow/runs/search", {"experiment_ids": experiments})
    (run,) = json.loads(body)["runs"]
    info, metrics = run["info"], {m["key"] for m in run["data"]["metrics"]}
    assert info["status"] == "FINISHED" and "loss" in metrics, (info, metrics)
    runs_page = f"{url['mlflow']}/#/experiments/{info['experiment_id']}/runs"

    def listed(dom: str) -> bool:  # "0 matching runs" while loading
        return info["run_name"] in visible_text(dom)

    text = visible_text(page_dom(runs_page, tmp_path_factory.mktemp("chromium-mlflow"), listed))
    assert info["run_name"] in text and "1 matching run" in text, text[:3000]

    def shown(dom: str) -> bool:
        return f"Metrics ({len(metrics)})" in visible_text(dom)

    text = visible_text(page_dom(f"{runs_page}/{info['run_id']}", tmp_path_factory.mktemp("chromium-run"), shown))
    assert info["run_name"] in text and "Status Finished" in text, text[:3000]
    assert f"Metrics ({len(metrics)})" in text, (sorted(metrics), text[:3000])
    assert re.search(r"Metric Value .*\bloss\b", text), text[:3000]

    # vLLM through its forward: the key is required; with it, a completion.
    body = {"model": SERVED_NAME, "prompt": "Hello", "max_tokens": 4, "temperature": 0}
    assert cluster.http(url["vllm"] + "/v1/completions", body)[0] == 401
    code, answer = cluster.http(url["vllm"] + "/v1/completions", body, key=API_KEY)
    assert code == 200 and json.loads(answer)["choices"][0]["text"], answer

    stop = cluster.playbook("ui.yml -e llmops_ui_state=stopped", "ui.yml", "-e", "llmops_ui_state=stopped")
    require_ok(stop)
    stopped = [item["stdout"] for item in item_results(stop, "Stop the port forwards started here")]
    assert stopped == ["stopped"] * 3, stopped
    wait_for("no kubectl port-forward left", lambda: kubectl_forwards(cluster) == [], 20)
    for name, port in ports.items():
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        assert not (cluster.ui_state_dir / f"{name}.pid").exists()


def test_teardown_removes_the_workloads_and_their_processes(cluster):
    stage = cluster.playbook("teardown.yml", "teardown.yml")
    require_ok(stage)
    # Nothing is left of the workloads, the renamed vLLM's Deployment and Service included, and teardown deleted
    # them by their names (it did not just find nothing under the default name).
    for name in (VLLM_NAME, "mlflow", "llama-factory-webui"):
        path = f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments"
        assert name not in [d["metadata"]["name"] for d in cluster.items(path)]
    assert VLLM_NAME not in [s["metadata"]["name"] for s in cluster.items(f"/api/v1/namespaces/{NAMESPACE}/services")]
    deleted = cluster.audit()
    for kind in ("deployments", "services", "serviceaccounts", "networkpolicies", "poddisruptionbudgets"):
        assert f"DELETE {kind} {NAMESPACE}/{VLLM_NAME}" in deleted, (kind, [d for d in deleted if "DELETE" in d])
    wait_for("every pod gone", lambda: cluster.pods() == [], 120)
    wait_for("no pod process left", lambda: cluster.node_processes() == [], 60)
    # The PVC (models, adapters, MLflow data) is kept unless llmops_teardown_storage is true.
    assert (cluster.pvc / "models" / "merged-model" / "config.json").is_file()


def test_nothing_was_ever_written_under_vllms_default_name(cluster):
    """vLLM runs as VLLM_NAME on VLLM_PORT (the inventory's settings, playbooks unmodified): no stage - gate, reload,
    restore, port-forward, teardown - wrote or forwarded to an object under the default name vllm-inference, and the
    renamed objects were written."""
    assert cluster.stages, "runs after the other stages"
    written = cluster.audit()
    assert [line for line in written if DEFAULT_VLLM_NAME in line] == []
    for line in (f"POST deployments {NAMESPACE}/{VLLM_NAME}", f"POST services {NAMESPACE}/{VLLM_NAME}"):
        assert line in written, [w for w in written if VLLM_NAME in w]
    assert any(line.startswith(f"PATCH deployments {NAMESPACE}/{VLLM_NAME}") for line in written), "never reloaded"
