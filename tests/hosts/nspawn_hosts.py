"""Real systemd test hosts for the external layout (vLLM under systemd on "bare-metal" hosts).

Each host is a Debian 12 system booted with systemd-nspawn: systemd is PID 1 inside, sshd listens
on the host's own address, and Ansible reaches it over SSH exactly like a datacenter machine.
No Docker is needed. Runs as root on the controller; standard library only.

    nspawn_hosts.py create  --prefix P --state-dir DIR (--count N | --host NAME ...)
                            [--bind-ro SRC:DST ...] [--layer DIR ...] [--wheelhouse [--wheelhouse-port PORT]]
    nspawn_hosts.py destroy --prefix P --state-dir DIR
    nspawn_hosts.py status  [--prefix P --state-dir DIR]
    nspawn_hosts.py base    [--wheelhouse]      build the cached base (and wheelhouse) ahead of time

Layout (see docs/testing-hosts.md):
  - one base root filesystem, built once by debootstrap and cached under
    $LLMOPS_CACHE/nspawn/base-<hash of package list and script version>/rootfs;
  - per host an overlayfs (lower = base, upper/work in DIR/hosts/NAME/), so hosts boot in ~1 s
    and never change the base; --layer DIR puts a prepared tree (an installed vLLM virtualenv,
    tests/hosts/vllm_layer.py) between the base and the host's own writes;
  - one bridge on the controller, llmopsbr0 = 10.200.0.1/24, shared by every prefix; each host
    lives in its own network namespace with a veth pair whose controller end is on the bridge and
    whose host end is eth0 = 10.200.0.(10+k)/24: hosts reach each other and the controller reaches
    every host; nothing reaches the outside world;
  - an SSH key in DIR, authorized for root on every host (and present on them, so host-to-host
    SSH works too); DIR/inventory.yml for Ansible.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import fcntl
import hashlib
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import wheelhouse  # noqa: E402  (sibling module; this file runs as a script)

# Bump when the way the base is configured changes: the cached base is keyed by it.
SCRIPT_VERSION = "4"
SUITE = "bookworm"
# What a host needs beyond minbase: systemd as PID 1, sshd for Ansible, python3 (+venv for the
# vLLM virtualenv), and the one system library the vLLM CPU wheels load that no wheel ships:
# libnuma1 (vllm/_C*.abi3.so links libnuma.so.1; torch bundles its own libgomp). Checked by
# installing the lock in a host and serving the tiny model (docs/testing-hosts.md). Plus what
# Ansible modules commonly need on a target (acl for become to an unprivileged user, rsync for
# synchronize) and small tools for debugging and health checks (ping, curl).
PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "openssh-server",
    "python3",
    "python3-venv",
    "python3-packaging",  # ansible.builtin.pip needs it on the target
    "python3-apt",  # ansible.builtin.apt (through package) needs it on the target
    "iproute2",
    "iputils-ping",
    "sudo",
    "ca-certificates",
    "procps",
    "libnuma1",
    "acl",
    "rsync",
    "curl",
    # The TLS and API-key front of every vLLM instance (roles/vllm_host, proxy.yml): hosts have no
    # internet, so the distribution package the role installs is baked in, as in a golden image.
    "haproxy",
    "less",
)
# Timers/services that make no sense on a host without internet or real disks.
MASKED_UNITS = (
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "apt-daily.service",
    "apt-daily-upgrade.service",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
    "fstrim.timer",
    "console-getty.service",
    "systemd-networkd-wait-online.service",
)

BRIDGE = "llmopsbr0"
NETWORK = ipaddress.ip_network("10.200.0.0/24")
BRIDGE_IP = "10.200.0.1"
FIRST_HOST = 10
REGISTRY = Path("/run/llmops-hosts")
MARKER = ".llmops-nspawn-hosts"
CGROUP_HIERARCHIES = (Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup/systemd"))
SSH_OPTS = (
    "-o",
    "StrictHostKeyChecking=no",
    "-o",
    "UserKnownHostsFile=/dev/null",
    "-o",
    "BatchMode=yes",
    "-o",
    "LogLevel=ERROR",
    "-o",
    "ConnectTimeout=5",
)
NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,40}[a-z0-9])?$")

_log_lock = threading.Lock()


def log(msg: str, host: str | None = None) -> None:
    prefix = f"{host}: " if host else ""
    with _log_lock:
        print(f"[{time.strftime('%H:%M:%S')}] {prefix}{msg}", file=sys.stderr, flush=True)


def run(cmd: list[str], check: bool = True, capture: bool = False, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=check, text=True, capture_output=capture, **kw)


def cache_root() -> Path:
    return wheelhouse.cache_root()


@contextlib.contextmanager
def file_lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# --------------------------------------------------------------------------------------------
# Controller packages and the cached base root filesystem


def ensure_controller_packages() -> None:
    needed = {"systemd-nspawn": "systemd-container", "debootstrap": "debootstrap", "ip": "iproute2"}
    needed["ssh-keygen"] = "openssh-client"
    missing = sorted({pkg for tool, pkg in needed.items() if shutil.which(tool) is None})
    if not missing:
        return
    log(f"installing controller packages: {' '.join(missing)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    run(["apt-get", "update", "-q"], env=env, stdout=subprocess.DEVNULL)
    run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing], env=env, stdout=subprocess.DEVNULL)
    log("controller packages installed")


def debian_mirror() -> str:
    sources = Path("/etc/apt/sources.list.d/debian.sources")
    if sources.is_file():
        for stanza in sources.read_text().split("\n\n"):
            fields = dict(
                line.split(":", 1) for line in stanza.splitlines() if ":" in line and not line.startswith("#")
            )
            suites = fields.get("Suites", "").split()
            if SUITE in suites and fields.get("URIs"):
                return fields["URIs"].split()[0].strip()
    legacy = Path("/etc/apt/sources.list")
    if legacy.is_file():
        for line in legacy.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "deb" and parts[2] == SUITE:
                return parts[1]
    return "http://deb.debian.org/debian"


def base_key() -> str:
    text = "\n".join([SCRIPT_VERSION, SUITE, *sorted(PACKAGES), *sorted(MASKED_UNITS)])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def base_dir() -> Path:
    return cache_root() / "nspawn" / f"base-{base_key()}"


def _stream(cmd: list[str], logfile: Path, what: str) -> None:
    """Run cmd, keep its full output in logfile, show a line every few seconds or stage change."""
    last_shown = 0.0
    last_stage = ""
    with logfile.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            out.write(line)
            words = line.split()
            # One line per stage; the per-package Retrieving/Validating flood only every few seconds.
            stage = words[1] if len(words) > 1 else ""
            if stage in ("Retrieving", "Validating"):
                stage = "Retrieving"
            now = time.monotonic()
            if stage != last_stage or now - last_shown > 5:
                log(f"{what}: {line.strip()}")
                last_shown, last_stage = now, stage
        if proc.wait() != 0:
            tail = "".join(logfile.read_text().splitlines(keepends=True)[-20:])
            raise SystemExit(f"{what} failed (exit {proc.returncode}); last lines of {logfile}:\n{tail}")


def configure_base(root: Path) -> None:
    """Make the freshly debootstrapped tree a good test host (applies to every host)."""
    sshd = root / "etc/ssh/sshd_config.d/llmops-test-host.conf"
    sshd.write_text(
        "# Test host: key-only root login, no DNS (the hosts have no resolver).\n"
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "UseDNS no\n"
    )
    # Host-to-host SSH with the shared test key, without known_hosts prompts.
    (root / "etc/ssh/ssh_config.d").mkdir(parents=True, exist_ok=True)
    (root / "etc/ssh/ssh_config.d/llmops-test-host.conf").write_text(
        "Host *\n    StrictHostKeyChecking no\n    UserKnownHostsFile /dev/null\n    LogLevel ERROR\n"
    )
    for unit in MASKED_UNITS:
        link = root / "etc/systemd/system" / unit
        link.unlink(missing_ok=True)
        link.symlink_to("/dev/null")
    journald = root / "etc/systemd/journald.conf.d"
    journald.mkdir(parents=True, exist_ok=True)
    (journald / "llmops-test-host.conf").write_text("[Journal]\nStorage=volatile\nRuntimeMaxUse=32M\n")
    # No nameserver: lookups fail at once instead of timing out (there is no DNS anywhere).
    resolv = root / "etc/resolv.conf"
    resolv.unlink(missing_ok=True)
    resolv.write_text("# test host: no DNS; names come from /etc/hosts\n")
    (root / "etc/machine-id").write_text("")
    (root / "etc/hostname").write_text("localhost\n")
    for pattern in ("var/cache/apt/archives/*.deb", "var/lib/apt/lists/*_*"):
        for leftover in root.glob(pattern):
            leftover.unlink()


def ensure_base() -> Path:
    """Return the cached base rootfs, building it (debootstrap, ~1-2 min) when missing."""
    final = base_dir()
    with file_lock(final.parent / ".build.lock"):
        if (final / ".complete").is_file():
            log(f"base rootfs cached: {final}/rootfs")
            return final / "rootfs"
        tmp = final.with_name(final.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(final, ignore_errors=True)
        tmp.mkdir(parents=True)
        mirror = debian_mirror()
        log(f"building base rootfs {final.name} from {mirror} (once per machine; ~1-2 min)")
        started = time.monotonic()
        cmd = ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, str(tmp / "rootfs")]
        _stream([*cmd, mirror], tmp / "debootstrap.log", "debootstrap")
        configure_base(tmp / "rootfs")
        (tmp / ".complete").write_text(f"built in {time.monotonic() - started:.0f} s\n")
        tmp.rename(final)
        log(f"base rootfs built in {time.monotonic() - started:.0f} s")
        prune_old_bases(final)
        return final / "rootfs"


def prune_old_bases(keep: Path) -> None:
    """Remove bases of earlier package lists / script versions that no mounted overlay uses."""
    with open("/proc/self/mountinfo") as fh:
        mountinfo = fh.read()
    for old in keep.parent.glob("base-*"):
        if old != keep and old.is_dir() and str(old) not in mountinfo:
            log(f"removing outdated base {old.name}")
            shutil.rmtree(old, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# State: DIR/state.json, mirrored into /run/llmops-hosts/<prefix>.json for address allocation


def tag_for(prefix: str) -> str:
    return hashlib.sha1(prefix.encode()).hexdigest()[:6]  # noqa: S324 (a name, not security)


def names_for(prefix: str, host: str) -> dict[str, str]:
    return {
        "netns": f"llmops-{prefix}-{host}",
        "cgroup": f"llmops-{prefix}-{host}",
    }


def load_state(prefix: str, state_dir: Path) -> dict:
    for candidate in (state_dir / "state.json", REGISTRY / f"{prefix}.json"):
        with contextlib.suppress(OSError, ValueError):
            return json.loads(candidate.read_text())
    return {"prefix": prefix, "state_dir": str(state_dir), "tag": tag_for(prefix), "hosts": {}}


def save_state(state: dict) -> None:
    text = json.dumps(state, indent=2, sort_keys=True) + "\n"
    REGISTRY.mkdir(parents=True, exist_ok=True)
    (REGISTRY / f"{state['prefix']}.json").write_text(text)
    state_dir = Path(state["state_dir"])
    if state_dir.is_dir():
        (state_dir / "state.json").write_text(text)


def used_ips(except_prefix: str) -> set[str]:
    used = set()
    for entry in REGISTRY.glob("*.json"):
        if entry.stem == except_prefix:
            continue
        with contextlib.suppress(OSError, ValueError):
            used.update(h["ip"] for h in json.loads(entry.read_text()).get("hosts", {}).values())
    return used


def allocate(state: dict, hosts: list[str]) -> None:
    taken = used_ips(state["prefix"]) | {h["ip"] for h in state["hosts"].values()}
    free = (str(ip) for ip in NETWORK.hosts() if int(ip.packed[-1]) >= FIRST_HOST and str(ip) not in taken)
    for host in hosts:
        if host in state["hosts"]:
            continue
        index = 1 + max([h["index"] for h in state["hosts"].values()] or [0])
        try:
            ip = next(free)
        except StopIteration:
            raise SystemExit(f"no free address left in {NETWORK}") from None
        veth = f"vl{state['tag']}-{index}"
        state["hosts"][host] = {"index": index, "ip": ip, "veth": veth, "pid": None, **names_for(state["prefix"], host)}


# --------------------------------------------------------------------------------------------
# Network


def link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def netns_exists(name: str) -> bool:
    return Path("/run/netns", name).exists()


def ensure_bridge() -> None:
    if not link_exists(BRIDGE):
        run(["ip", "link", "add", BRIDGE, "type", "bridge"])
        log(f"bridge {BRIDGE} created")
    addrs = run(["ip", "-o", "-4", "addr", "show", "dev", BRIDGE], capture=True).stdout
    if f" {BRIDGE_IP}/" not in addrs:
        run(["ip", "addr", "add", f"{BRIDGE_IP}/{NETWORK.prefixlen}", "dev", BRIDGE])
    run(["ip", "link", "set", BRIDGE, "up"])


def ensure_host_network(host: str, spec: dict) -> None:
    ns, veth = spec["netns"], spec["veth"]
    if not netns_exists(ns):
        run(["ip", "netns", "add", ns])
    inside = run(["ip", "-n", ns, "-o", "link", "show", "eth0"], check=False, capture=True)
    if inside.returncode != 0:
        if link_exists(veth):
            run(["ip", "link", "del", veth])
        peer = veth.replace("vl", "vp", 1)
        run(["ip", "link", "add", veth, "type", "veth", "peer", "name", peer])
        run(["ip", "link", "set", peer, "netns", ns])
        run(["ip", "-n", ns, "link", "set", peer, "name", "eth0"])
    run(["ip", "link", "set", veth, "master", BRIDGE, "up"])
    addrs = run(["ip", "-n", ns, "-o", "-4", "addr", "show", "dev", "eth0"], capture=True).stdout
    if f" {spec['ip']}/" not in addrs:
        run(["ip", "-n", ns, "addr", "add", f"{spec['ip']}/{NETWORK.prefixlen}", "dev", "eth0"])
    run(["ip", "-n", ns, "link", "set", "lo", "up"])
    run(["ip", "-n", ns, "link", "set", "eth0", "up"])
    # A default route via the controller gives Ansible a default IPv4 (ansible_default_ipv4); the
    # controller does not forward, so nothing leaves the test network.
    run(["ip", "-n", ns, "route", "replace", "default", "via", BRIDGE_IP])
    log(f"network {spec['ip']} (netns {ns}, veth {veth})", host)


# --------------------------------------------------------------------------------------------
# Hosts


def mounted(path: Path) -> bool:
    target = str(path)
    with open("/proc/self/mountinfo") as fh:
        return any(line.split()[4] == target for line in fh)


def mounts_under(path: Path) -> list[str]:
    base = str(path).rstrip("/") + "/"
    with open("/proc/self/mountinfo") as fh:
        points = [line.split()[4] for line in fh]
    return sorted((p for p in points if p.startswith(base)), key=len, reverse=True)


def process_alive(pid: int | None, comm: str = "systemd-nspawn") -> bool:
    if not pid:
        return False
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == comm
    except OSError:
        return False


def hosts_file(state: dict) -> str:
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback", f"{BRIDGE_IP}\tllmops-controller"]
    lines += [f"{spec['ip']}\t{name}" for name, spec in sorted(state["hosts"].items(), key=lambda kv: kv[1]["index"])]
    return "# test hosts of prefix " + state["prefix"] + " (nspawn_hosts.py)\n" + "\n".join(lines) + "\n"


def prepare_root(host: str, spec: dict, base: Path, state_dir: Path, state: dict) -> Path:
    hdir = state_dir / "hosts" / host
    root = hdir / "rootfs"
    for sub in ("upper", "work", "rootfs"):
        (hdir / sub).mkdir(parents=True, exist_ok=True)
    if not mounted(root):
        # Extra read-only layers (--layer) sit above the base: a host starts with what they hold, e.g. an
        # installed vLLM virtualenv (tests/hosts/vllm_layer.py); its own writes still go to its upper dir.
        lower = ":".join([*spec.get("layers", []), str(base)])
        opts = f"lowerdir={lower},upperdir={hdir / 'upper'},workdir={hdir / 'work'}"
        run(["mount", "-t", "overlay", "overlay", "-o", opts, str(root)])
    (root / "etc/hostname").write_text(host + "\n")
    (root / "etc/hosts").write_text(hosts_file(state))
    machine_id = root / "etc/machine-id"
    if not machine_id.read_text().strip():
        machine_id.write_text(uuid.uuid4().hex + "\n")
    ssh_dir = root / "root/.ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    pub = (state_dir / "id_ed25519.pub").read_text()
    (ssh_dir / "authorized_keys").write_text(pub)
    shutil.copy2(state_dir / "id_ed25519", ssh_dir / "id_ed25519")
    shutil.copy2(state_dir / "id_ed25519.pub", ssh_dir / "id_ed25519.pub")
    os.chmod(ssh_dir / "authorized_keys", 0o600)
    os.chmod(ssh_dir / "id_ed25519", 0o600)
    return root


def boot(host: str, spec: dict, root: Path, state_dir: Path, binds: list[str]) -> int:
    cgroups = [h / spec["cgroup"] for h in CGROUP_HIERARCHIES]
    for cg in cgroups:
        cg.mkdir(exist_ok=True)
    nspawn = [
        "systemd-nspawn",
        "-D",
        str(root),
        "-M",
        host,
        "-b",
        "--register=no",
        "--keep-unit",
        f"--network-namespace-path=/run/netns/{spec['netns']}",
        "--console=pipe",
        "--resolv-conf=off",
        # The controller's hard limit (often 20000) would cap the host's; vLLM wants to raise its
        # soft limit to 65536 like on a real server (systemd's default hard limit is 524288).
        "--rlimit=NOFILE=1024:524288",
        *[f"--bind-ro={b}" for b in binds],
    ]
    # Enter the host's own cgroups first (a shared cgroup makes the second container collide),
    # then exec nspawn so the recorded PID is nspawn's.
    enter = "; ".join(f"echo $$ > {cg}/cgroup.procs" for cg in cgroups)
    console = (state_dir / "hosts" / host / "console.log").open("ab")
    proc = subprocess.Popen(
        ["sh", "-c", f'{enter}; exec "$@"', "nspawn", *nspawn],
        stdin=subprocess.DEVNULL,
        stdout=console,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    console.close()
    # The PID belongs to sh until it execs nspawn; wait for that so liveness checks are exact.
    deadline = time.monotonic() + 10
    while not process_alive(proc.pid):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{host}: systemd-nspawn did not start (exit {proc.poll()})")
        time.sleep(0.05)
    return proc.pid


def ssh(state_dir: Path, ip: str, command: str, timeout: float = 30) -> subprocess.CompletedProcess:
    key = str(state_dir / "id_ed25519")
    return subprocess.run(
        ["ssh", "-i", key, *SSH_OPTS, f"root@{ip}", command],
        text=True,
        capture_output=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def wait_ready(host: str, spec: dict, state_dir: Path, timeout: float = 120) -> None:
    console = state_dir / "hosts" / host / "console.log"
    deadline = time.monotonic() + timeout

    def fail(why: str) -> None:
        tail = "".join(console.read_text(errors="replace").splitlines(keepends=True)[-25:])
        raise RuntimeError(f"{host}: {why}; last console lines ({console}):\n{tail}")

    while True:
        if not process_alive(spec["pid"]):
            fail("systemd-nspawn exited")
        try:
            with socket.create_connection((spec["ip"], 22), timeout=1):
                break
        except OSError:
            pass
        if time.monotonic() > deadline:
            fail("sshd did not answer")
        time.sleep(0.2)
    while True:
        with contextlib.suppress(subprocess.TimeoutExpired):
            result = ssh(state_dir, spec["ip"], "systemctl is-system-running --wait", timeout=60)
            state = result.stdout.strip()
            if state in ("running", "degraded"):
                break
        if time.monotonic() > deadline:
            fail(f"systemd did not finish booting (state {state!r}, ssh: {result.stderr.strip()})")
        time.sleep(0.5)
    if state == "degraded":
        failed = ssh(state_dir, spec["ip"], "systemctl --failed --plain --no-legend").stdout.strip()
        log(f"systemd is degraded; failed units: {failed}", host)


def start_host(host: str, spec: dict, *, base: Path, state_dir: Path, state: dict, binds: list[str]) -> float:
    started = time.monotonic()
    root = prepare_root(host, spec, base, state_dir, state)
    if process_alive(spec.get("pid")):
        log(f"already running (pid {spec['pid']})", host)
    else:
        spec["pid"] = boot(host, spec, root, state_dir, binds)
        log(f"booting (systemd-nspawn pid {spec['pid']})", host)
    wait_ready(host, spec, state_dir)
    elapsed = time.monotonic() - started
    log(f"ready at {spec['ip']} in {elapsed:.1f} s", host)
    return elapsed


def ensure_key(state_dir: Path) -> None:
    key = state_dir / "id_ed25519"
    if not key.is_file():
        key.with_suffix(".pub").unlink(missing_ok=True)
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "llmops-test-hosts", "-f", str(key)])


def q(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid YAML double-quoted scalar


def write_inventory(state: dict, state_dir: Path) -> str:
    lines = [
        "---",
        f"# Written by tests/hosts/nspawn_hosts.py for prefix {state['prefix']}; removed by destroy.",
        "all:",
        "  vars:",
        "    ansible_user: root",
        f"    ansible_ssh_private_key_file: {q(str(state_dir / 'id_ed25519'))}",
        "    ansible_ssh_common_args: " + q("-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"),
        "    ansible_python_interpreter: /usr/bin/python3",
    ]
    lines += [f"    {key}: {q(value)}" for key, value in sorted(state.get("inventory_vars", {}).items())]
    lines.append("  hosts:")
    for name, spec in sorted(state["hosts"].items(), key=lambda kv: kv[1]["index"]):
        lines += [f"    {name}:", f"      ansible_host: {spec['ip']}"]
    text = "\n".join(lines) + "\n"
    (state_dir / "inventory.yml").write_text(text)
    return text


def create(args: argparse.Namespace) -> int:
    started = time.monotonic()
    prefix, state_dir = args.prefix, args.state_dir.resolve()
    hosts = list(args.host) or [f"{prefix}-{i}" for i in range(1, args.count + 1)]
    for name in [prefix, *hosts]:
        if not NAME_RE.match(name):
            raise SystemExit(f"invalid name {name!r}: use lowercase letters, digits and '-' (max 42)")
    if len(set(hosts)) != len(hosts):
        raise SystemExit("host names must be unique")
    ensure_controller_packages()
    base = ensure_base()
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / MARKER).write_text(f"prefix={prefix}\n")
    ensure_key(state_dir)
    layers = [str(layer.resolve()) for layer in args.layer]
    for layer in layers:
        if not Path(layer).is_dir():
            raise SystemExit(f"--layer {layer}: not a directory")
    with file_lock(REGISTRY / ".lock"):
        state = load_state(prefix, state_dir)
        state["state_dir"] = str(state_dir)
        allocate(state, hosts)
        for host in hosts:
            state["hosts"][host].setdefault("layers", layers)
        save_state(state)  # recorded before anything is made, so destroy finds it all
        ensure_bridge()
        for host in hosts:
            ensure_host_network(host, state["hosts"][host])
    others = sorted(set(state["hosts"]) - set(hosts))
    if others:
        log(f"note: hosts from an earlier create stay up: {', '.join(others)}")
    if args.wheelhouse:
        url = wheelhouse.serve(state_dir, BRIDGE_IP, args.wheelhouse_port)
        state["wheelhouse_url"] = url
        # Variables for every host (inventory.yml; molecule/_shared/create.yml copies them too).
        # Plain HTTP inside the test network: pip wants --trusted-host for it.
        state["inventory_vars"] = {
            "llmops_test_wheelhouse_url": url,
            "llmops_test_pip_args": f"--no-index --find-links {url} --trusted-host {BRIDGE_IP}",
        }
    boot_started = time.monotonic()
    errors = []
    # No hosts (--count 0) is allowed: with --wheelhouse it keeps the bridge and one wheelhouse server up for
    # every set of hosts created until its destroy (tests/run_all.sh does that for its parallel workers).
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(hosts))) as pool:
        futures = {
            pool.submit(
                start_host, h, state["hosts"][h], base=base, state_dir=state_dir, state=state, binds=args.bind_ro
            ): h
            for h in hosts
        }
        for fut in concurrent.futures.as_completed(futures):
            try:
                fut.result()
            except Exception as exc:  # report every host's failure, not only the first
                errors.append(f"{futures[fut]}: {exc}")
    # Other hosts of this prefix need the new names in /etc/hosts too.
    for name in others:
        with contextlib.suppress(OSError):
            (state_dir / "hosts" / name / "rootfs/etc/hosts").write_text(hosts_file(state))
    save_state(state)
    if errors:
        for err in errors:
            log(f"FAILED {err}")
        log(f"clean up with: python3 {Path(__file__).resolve()} destroy --prefix {prefix} --state-dir {state_dir}")
        return 1
    total = time.monotonic() - started
    log(f"{len(hosts)} host(s) up in {time.monotonic() - boot_started:.1f} s ({total:.1f} s with preparation)")
    print(write_inventory(state, state_dir), end="")
    return 0


# --------------------------------------------------------------------------------------------
# Destroy / status


def cgroup_pids(cg: Path) -> list[int]:
    pids = []
    for procs in cg.rglob("cgroup.procs") if cg.is_dir() else []:
        with contextlib.suppress(OSError):
            pids += [int(p) for p in procs.read_text().split()]
    return pids


def remove_cgroup(cg: Path) -> None:
    if not cg.is_dir():
        return
    for sub in sorted((p for p in cg.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            sub.rmdir()
    cg.rmdir()


def stop_host(host: str, spec: dict) -> None:
    cgroups = [h / spec["cgroup"] for h in CGROUP_HIERARCHIES]
    pid = spec.get("pid")
    if process_alive(pid):
        # nspawn turns SIGTERM into an orderly shutdown of the container's systemd.
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while process_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        log("stopped (SIGTERM)" if not process_alive(pid) else "did not stop in 20 s, killing", host)
    for _attempt in range(50):
        pids = sorted({p for cg in cgroups for p in cgroup_pids(cg)})
        if not pids:
            break
        for p in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)
        time.sleep(0.1)
    else:
        raise RuntimeError(f"{host}: processes survive SIGKILL: {pids}")
    for cg in cgroups:
        remove_cgroup(cg)


def sweep_names(prefix: str) -> dict[str, list[str]]:
    """Everything named after this prefix, whether or not the state file knows it."""
    tag = tag_for(prefix)
    ns = sorted(p.name for p in Path("/run/netns").glob(f"llmops-{prefix}-*")) if Path("/run/netns").is_dir() else []
    links = sorted(p.name for p in Path("/sys/class/net").iterdir() if re.match(rf"^v[lp]{tag}-\d+$", p.name))
    cgroups = sorted(str(p) for h in CGROUP_HIERARCHIES for p in h.glob(f"llmops-{prefix}-*") if p.is_dir())
    return {"netns": ns, "links": links, "cgroups": cgroups}


def destroy(args: argparse.Namespace) -> int:
    prefix, state_dir = args.prefix, args.state_dir.resolve()
    errors = []
    with file_lock(REGISTRY / ".lock"):
        state = load_state(prefix, state_dir)
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(state["hosts"]))) as pool:
            futures = {pool.submit(stop_host, h, s): h for h, s in state["hosts"].items()}
            for fut in concurrent.futures.as_completed(futures):
                try:
                    fut.result()
                except Exception as exc:
                    errors.append(str(exc))
        wheelhouse.stop(state_dir)
        swept = sweep_names(prefix)
        for cg in swept["cgroups"]:  # a host the state file never recorded (half-failed create)
            stop_host(Path(cg).name, {"cgroup": Path(cg).name, "pid": None})
        for point in mounts_under(state_dir):
            if run(["umount", point], check=False).returncode != 0:
                run(["umount", "-l", point], check=False)
        for ns in sorted(set(swept["netns"]) | {s["netns"] for s in state["hosts"].values()}):
            if netns_exists(ns):
                run(["ip", "netns", "del", ns])
        for link in swept["links"] + [s["veth"] for s in state["hosts"].values()]:
            if link_exists(link):  # usually gone with its namespace's peer already
                run(["ip", "link", "del", link], check=False, capture=True)
        (REGISTRY / f"{prefix}.json").unlink(missing_ok=True)
        others = list(REGISTRY.glob("*.json"))
        if link_exists(BRIDGE) and not others and not any(Path(f"/sys/class/net/{BRIDGE}/brif").iterdir()):
            run(["ip", "link", "del", BRIDGE])
            log(f"bridge {BRIDGE} removed")
    left = mounts_under(state_dir)
    if left:
        errors.append(f"still mounted, state dir kept: {left}")
    elif state_dir.is_dir():
        if (state_dir / MARKER).is_file() or not any(state_dir.iterdir()):
            shutil.rmtree(state_dir)
        else:
            errors.append(f"{state_dir} has no {MARKER} marker; not deleting a directory this tool did not make")
    for err in errors:
        log(f"ERROR {err}")
    log(f"destroyed prefix {prefix}" if not errors else f"destroy of {prefix} incomplete")
    return 1 if errors else 0


def prepare_base(args: argparse.Namespace) -> int:
    """Build what create needs ahead of time (CI setup), with visible progress."""
    ensure_controller_packages()
    print(ensure_base())
    if args.wheelhouse:
        print(wheelhouse.build())
    return 0


def status(args: argparse.Namespace) -> int:
    entries = []
    if args.prefix:
        state_dir = (args.state_dir or Path(".")).resolve()
        entries.append(load_state(args.prefix, state_dir))
    else:
        for entry in sorted(REGISTRY.glob("*.json")):
            with contextlib.suppress(OSError, ValueError):
                entries.append(json.loads(entry.read_text()))
    print(f"bridge {BRIDGE}: {'present' if link_exists(BRIDGE) else 'absent'}")
    for state in entries:
        print(f"prefix {state['prefix']} (state dir {state['state_dir']}):")
        for host, spec in sorted(state["hosts"].items(), key=lambda kv: kv[1]["index"]):
            root = Path(state["state_dir"]) / "hosts" / host / "rootfs"
            running = "running" if process_alive(spec.get("pid")) else "stopped"
            overlay = "mounted" if mounted(root) else "no"
            netns = "yes" if netns_exists(spec["netns"]) else "no"
            print(f"  {host:20} {spec['ip']:15} nspawn={running} overlay={overlay} netns={netns}")
        swept = sweep_names(state["prefix"])
        known = {n for spec in state["hosts"].values() for n in (spec["netns"], spec["veth"], spec["cgroup"])}
        stray = [n for names in swept.values() for n in names if Path(n).name not in known]
        if stray:
            print(f"  not recorded in the state (destroy removes them too): {', '.join(stray)}")
        if state.get("wheelhouse_url"):
            print(f"  wheelhouse: {state['wheelhouse_url']}")
    if not entries:
        print("no test hosts recorded")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p_create = sub.add_parser("create", help="boot test hosts (idempotent)")
    p_create.add_argument("--prefix", required=True, help="names this set of hosts; sets can coexist")
    p_create.add_argument("--state-dir", type=Path, required=True, help="overlays, SSH key, inventory.yml")
    which = p_create.add_mutually_exclusive_group(required=True)
    which.add_argument("--count", type=int, help="hosts named PREFIX-1 .. PREFIX-N")
    which.add_argument("--host", action="append", default=[], help="a host name (repeat for several)")
    p_create.add_argument("--bind-ro", action="append", default=[], metavar="SRC:DST", help="read-only bind mount")
    p_create.add_argument(
        "--layer",
        action="append",
        default=[],
        type=Path,
        metavar="DIR",
        help="a read-only overlay layer above the base (a tree from /), e.g. from tests/hosts/vllm_layer.py",
    )
    p_create.add_argument("--wheelhouse", action="store_true", help="build and serve the vLLM wheelhouse")
    p_create.add_argument("--wheelhouse-port", type=int, default=wheelhouse.DEFAULT_PORT)
    p_destroy = sub.add_parser("destroy", help="stop the hosts and remove everything create made")
    p_destroy.add_argument("--prefix", required=True)
    p_destroy.add_argument("--state-dir", type=Path, required=True)
    p_base = sub.add_parser("base", help="install controller packages and build the cached base rootfs")
    p_base.add_argument("--wheelhouse", action="store_true", help="also download the vLLM wheelhouse")
    p_status = sub.add_parser("status", help="show what exists")
    p_status.add_argument("--prefix")
    p_status.add_argument("--state-dir", type=Path)
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("nspawn_hosts.py must run as root (it mounts, makes network namespaces, boots containers)")
    return {"create": create, "destroy": destroy, "status": status, "base": prepare_base}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
