"""Tree distribution (model_sync_distribution: tree) on three real systemd hosts, no vLLM.

The controller sends one copy; hosts that hold the verified version seed the others over a temporary
rsync daemon. Checked from outside, in order:

  all three hosts at once: round 1 controller -> tree-1, round 2 tree-1 -> tree-2 and tree-3 (fanout 2);
  every host ends on the version, verified; the copy printed its progress; no seed daemon or one-time
  password is left -> a new version one host per batch: tree-2 and tree-3 copy from a host of an earlier
  batch, not from the controller -> a seed daemon refuses a host that is not a target of its round and a
  wrong password.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from fleet_support import MODEL_DIR, Fleet, booted_fleet, digest, failures

FIXTURES = Path(os.environ["LLMOPS_FIXTURES"])
HOSTS = ["tree-1", "tree-2", "tree-3"]
COMMON = {"model_sync_reload": False, "model_sync_disk_margin_mb": 16, "model_sync_distribution": "tree"}

pytestmark = pytest.mark.hosts


@pytest.fixture(scope="module")
def fleet():
    yield from booted_fleet("tree", {"vllm_hosts": HOSTS})


def copies(report: dict) -> dict[str, list[str]]:
    """Per host, the names of the copy tasks that ran on it (controller push or pull from a seed)."""
    out: dict[str, list[str]] = {}
    for play in report.get("plays", []):
        for task in play["tasks"]:
            name = task["task"]["name"].split(" : ", 1)[-1]
            if not (name.startswith("Copy from the controller into staging") or name.startswith("Pull from the seed")):
                continue
            for host, result in task["hosts"].items():
                if not result.get("skipped"):
                    out.setdefault(host, []).append(name)
    return out


def labels(report: dict) -> list[str]:
    """The loop labels of the items that ran (the copy's progress lines, the rounds of the plan)."""
    found = (
        item.get("_ansible_item_label")
        for play in report.get("plays", [])
        for task in play["tasks"]
        for result in task["hosts"].values()
        for item in result.get("results", [])
        if not item.get("skipped")
    )
    return [label for label in found if isinstance(label, str)]


def test_tree_distribution(fleet: Fleet, tmp_path: Path) -> None:
    tiny = FIXTURES / "models" / "tiny"
    rc, out, report = fleet.playbook(
        "promote.yml", model_sync_source=str(tiny), llmops_rollout_batch="100%", model_sync_tree_fanout=2, **COMMON
    )
    assert rc == 0, failures(report) or out[-4000:]
    version = digest(tiny)[:16]
    for host in HOSTS:
        assert fleet.current(host) == f"versions/{version}", host
        assert fleet.ssh(f"cat {MODEL_DIR}/current/.llmops-verified", host).strip() == digest(tiny)
        leftovers = fleet.ssh(
            f"systemctl is-active llmops-model-seed.service; ls -a /run/llmops-model-seed {MODEL_DIR} 2>&1; true", host
        )
        assert "active\n" not in leftovers.replace("inactive", "") and "secret" not in leftovers, (host, leftovers)
    assert copies(report) == {
        "tree-1": ["Copy from the controller into staging, resuming a copy cut short"],
        "tree-2": ["Pull from the seed into staging, resuming a copy cut short"],
        "tree-3": ["Pull from the seed into staging, resuming a copy cut short"],
    }, copies(report)
    progress = [label for label in labels(report) if re.match(r"chunk 1/1: .* \(100%\)", label)]
    assert len(progress) == 3, labels(report)
    rounds = [label for label in labels(report) if label.startswith("round ")]
    assert sorted(set(rounds)) == ["round 1", "round 2"], rounds

    # One host per batch: the later batches copy from hosts of earlier batches, never from the controller.
    v2 = tmp_path / "tiny-v2b"
    shutil.copytree(FIXTURES / "models" / "tiny-v2", v2)
    (v2 / "README.md").write_text("tiny-v2, for the tree test\n")
    rc, out, report = fleet.playbook("promote.yml", model_sync_source=str(v2), llmops_rollout_batch=1, **COMMON)
    assert rc == 0, failures(report) or out[-4000:]
    assert copies(report) == {
        "tree-1": ["Copy from the controller into staging, resuming a copy cut short"],
        "tree-2": ["Pull from the seed into staging, resuming a copy cut short"],
        "tree-3": ["Pull from the seed into staging, resuming a copy cut short"],
    }, copies(report)
    for host in HOSTS:
        assert fleet.current(host) == f"versions/{digest(v2)[:16]}", host


def test_a_seed_admits_only_its_targets_with_the_password(fleet: Fleet) -> None:
    """A seed daemon set up by hand the way the role writes it: tree-3 is not a target, and a wrong password fails."""
    version = fleet.current(HOSTS[0]).split("/")[1]
    seed, target = fleet.addresses[HOSTS[0]], fleet.addresses[HOSTS[1]]
    config = (
        f"pid file = /run/llmops-model-seed/rsyncd.pid\naddress = {seed}\nport = 8730\nuse chroot = yes\n"
        "uid = 65534\ngid = 65534\nread only = yes\nlist = no\nreverse lookup = no\nmax connections = 2\n"
        f"[model]\n    path = {MODEL_DIR}/versions/{version}\n    auth users = llmops\n"
        "    secrets file = /run/llmops-model-seed/secrets\n    strict modes = yes\n"
        f"    hosts allow = {target}\n    hosts deny = *\n"
    )
    fleet.ssh("install -d -m 0700 /run/llmops-model-seed && cat > /run/llmops-model-seed/rsyncd.conf", HOSTS[0], config)
    fleet.ssh("umask 077 && echo llmops:right-password > /run/llmops-model-seed/secrets", HOSTS[0])
    fleet.ssh(
        "systemd-run --unit=llmops-model-seed --collect --quiet /usr/bin/rsync --daemon --no-detach "
        "--config=/run/llmops-model-seed/rsyncd.conf && sleep 1",
        HOSTS[0],
    )
    try:
        pull = f"rsync -r --password-file=/root/pw rsync://llmops@{seed}:8730/model/ /tmp/pulled/ 2>&1; echo rc=$?"
        ok = fleet.ssh(f"umask 077 && echo right-password > /root/pw && {pull}", HOSTS[1])
        assert ok.strip().endswith("rc=0"), ok
        wrong = fleet.ssh(f"umask 077 && echo wrong-password > /root/pw && {pull}", HOSTS[1])
        assert "rc=5" in wrong and "auth failed" in wrong, wrong
        refused = fleet.ssh(f"umask 077 && echo right-password > /root/pw && {pull}", HOSTS[2])
        # rsync does not even admit the module exists to a host outside "hosts allow".
        assert refused.strip().endswith("rc=5") and "unknown module 'model'" in refused.lower(), refused
    finally:
        fleet.ssh("systemctl stop llmops-model-seed.service; rm -rf /run/llmops-model-seed", HOSTS[0])
