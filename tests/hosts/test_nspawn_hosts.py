"""The nspawn test hosts really are systemd machines reachable over SSH, and destroy removes them.

Boots two hosts through the CLI (a few seconds once the base root filesystem is cached; the
first run on a machine builds it, ~1 min), then checks them from the outside.
Run: scripts/run python -m pytest -q -m hosts tests/hosts
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
CLI = HERE / "nspawn_hosts.py"
sys.path.insert(0, str(HERE))
import nspawn_hosts  # noqa: E402

pytestmark = pytest.mark.hosts

PREFIX = f"pyt{os.getpid()}"


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root: mounts overlays, creates network namespaces and boots containers"
    if "overlay" not in Path("/proc/filesystems").read_text():
        return "the kernel has no overlayfs"
    if not all(h.is_dir() for h in nspawn_hosts.CGROUP_HIERARCHIES):
        return "needs the cgroup hierarchies /sys/fs/cgroup/unified and /sys/fs/cgroup/systemd"
    return None


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, str(CLI), *args], capture_output=True, text=True, timeout=900, check=False)
    if check and result.returncode != 0:
        pytest.fail(f"nspawn_hosts.py {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
    return result


def ssh(state_dir: Path, ip: str, command: str) -> subprocess.CompletedProcess:
    return nspawn_hosts.ssh(state_dir, ip, command, timeout=60)


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory):
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    state_dir = tmp_path_factory.mktemp("nspawn") / "state"
    # A read-only layer above the base (what tests/hosts/vllm_layer.py makes with a vLLM virtualenv).
    layer = state_dir.parent / "layer"
    (layer / "opt" / "llmops-layer").mkdir(parents=True)
    (layer / "opt" / "llmops-layer" / "marker").write_text("from the layer\n")
    started = time.monotonic()
    result = cli("create", "--prefix", PREFIX, "--count", "2", "--state-dir", str(state_dir), f"--layer={layer}")
    print(f"create took {time.monotonic() - started:.1f} s\n{result.stderr}")
    state = json.loads((state_dir / "state.json").read_text())
    try:
        yield state_dir, state
    finally:
        cli("destroy", "--prefix", PREFIX, "--state-dir", str(state_dir), check=False)


def test_inventory_lists_both_hosts(hosts):
    state_dir, state = hosts
    inventory = (state_dir / "inventory.yml").read_text()
    for name, spec in state["hosts"].items():
        assert f"    {name}:\n      ansible_host: {spec['ip']}\n" in inventory
    assert f'ansible_ssh_private_key_file: "{state_dir / "id_ed25519"}"' in inventory


def test_a_layer_is_seen_by_every_host_and_written_by_none(hosts):
    state_dir, state = hosts
    (a, spec_a), (_b, spec_b) = sorted(state["hosts"].items())
    marker = "/opt/llmops-layer/marker"
    for spec in (spec_a, spec_b):
        assert ssh(state_dir, spec["ip"], f"cat {marker}").stdout == "from the layer\n"
    assert ssh(state_dir, spec_a["ip"], f"echo changed on a > {marker}").returncode == 0
    assert ssh(state_dir, spec_a["ip"], f"cat {marker}").stdout == "changed on a\n"
    assert ssh(state_dir, spec_b["ip"], f"cat {marker}").stdout == "from the layer\n"
    assert (state_dir.parent / "layer" / "opt" / "llmops-layer" / "marker").read_text() == "from the layer\n"
    assert (state_dir / "hosts" / a / "upper" / "opt" / "llmops-layer" / "marker").read_text() == "changed on a\n"


def test_ssh_works_both_ways_between_hosts(hosts):
    state_dir, state = hosts
    (a, spec_a), (b, spec_b) = sorted(state["hosts"].items())
    # Controller -> A -> B (by name, through /etc/hosts) and controller -> B -> A.
    forward = ssh(state_dir, spec_a["ip"], f"ssh -o BatchMode=yes {b} hostname")
    assert forward.returncode == 0, forward.stderr
    assert forward.stdout.strip() == b
    backward = ssh(state_dir, spec_b["ip"], f"ssh -o BatchMode=yes {a} hostname")
    assert backward.returncode == 0, backward.stderr
    assert backward.stdout.strip() == a


def test_ansible_facts_say_systemd(hosts):
    state_dir, state = hosts
    ansible = shutil.which("ansible") or str(Path(os.environ.get("LLMOPS_TOOLS_VENV", "/nonexistent"), "bin/ansible"))
    if not Path(ansible).exists():
        pytest.skip("ansible is not installed here: run through scripts/run")
    env = dict(os.environ, ANSIBLE_LOAD_CALLBACK_PLUGINS="1", ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json")
    result = subprocess.run(
        [ansible, "-i", str(state_dir / "inventory.yml"), "all", "-m", "setup", "-a", "filter=ansible_service_mgr"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    per_host = json.loads(result.stdout)["plays"][0]["tasks"][0]["hosts"]
    assert set(per_host) == set(state["hosts"])
    for name, outcome in per_host.items():
        assert outcome["ansible_facts"]["ansible_service_mgr"] == "systemd", name


def test_a_systemd_unit_starts_and_serves_the_controller(hosts):
    state_dir, state = hosts
    spec = state["hosts"][sorted(state["hosts"])[0]]
    unit = (
        "[Unit]\nDescription=test\n[Service]\n"
        "ExecStart=/usr/bin/python3 -m http.server 8081 --directory /etc\n"
        "[Install]\nWantedBy=multi-user.target\n"
    )
    setup = ssh(
        state_dir,
        spec["ip"],
        f"printf '{unit}' > /etc/systemd/system/pytest-web.service && systemctl daemon-reload"
        " && systemctl enable --now pytest-web.service && systemctl is-active pytest-web.service",
    )
    assert setup.returncode == 0, setup.stderr
    assert setup.stdout.strip().splitlines()[-1] == "active"
    deadline = time.monotonic() + 15
    while True:
        try:
            with urllib.request.urlopen(f"http://{spec['ip']}:8081/hostname", timeout=2) as response:
                body = response.read().decode()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    assert body.strip() == sorted(state["hosts"])[0]
    main_pid = ssh(state_dir, spec["ip"], "systemctl show -p MainPID --value pytest-web.service").stdout.strip()
    assert int(main_pid) > 1


def test_destroy_leaves_nothing_behind(hosts):
    state_dir, state = hosts
    pids = [spec["pid"] for spec in state["hosts"].values()]
    result = cli("destroy", "--prefix", PREFIX, "--state-dir", str(state_dir))
    assert "destroyed prefix" in result.stderr
    assert not state_dir.exists()
    assert not (nspawn_hosts.REGISTRY / f"{PREFIX}.json").exists()
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists(), f"systemd-nspawn {pid} still runs"
    for spec in state["hosts"].values():
        assert not Path("/run/netns", spec["netns"]).exists()
        assert not Path("/sys/class/net", spec["veth"]).exists()
        for hierarchy in nspawn_hosts.CGROUP_HIERARCHIES:
            assert not (hierarchy / spec["cgroup"]).exists()
    assert nspawn_hosts.mounts_under(state_dir) == []
    assert nspawn_hosts.sweep_names(PREFIX) == {"netns": [], "links": [], "cgroups": []}
    if not list(nspawn_hosts.REGISTRY.glob("*.json")):  # no other set of hosts shares the bridge
        assert not Path("/sys/class/net", nspawn_hosts.BRIDGE).exists()
