"""Cold sync of one model from the controller to 1 and to 4 hosts, with the controller's uplink capped.

With N hosts, a star push (every host copies from the controller) sends N copies through the
controller's link. model_sync's tree distribution (`model_sync_distribution: tree`) sends one; hosts that
hold the verified version then seed the others over their own links. This benchmark boots four nspawn
hosts on the test bridge, caps the controller's side of the bridge with a `tc tbf` qdisc (host-to-host
traffic is bridged from port to port and is not capped; the controller's packets leave through the
bridge device and are), writes a sharded safetensors model with random weights on the controller, and
times `playbooks/promote.yml` (model_sync_reload false: the copy, verification and switch, no vLLM):

  1. star, 1 host             the baseline
  2. star, 4 hosts at once    the controller's link carries 4 copies
  3. tree, 4 hosts at once    the controller's link carries 1 copy
  4. tree, 4 hosts one per batch (the prod inventory's rollout): each batch seeds from the hosts before it

Every host's store is wiped before each run; the controller's manifest cache is kept (recorded once).
Prints each run's wall time and the ratios against the 1-host run (target for tree, 4 hosts: <= 1.6x; a
star push is ~4x), plus the progress lines the copy printed. Prints figures; asserts nothing.

    scripts/run python benchmarks/fleet_sync.py [--size-mib 512] [--rate-mbit 200] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLI = ROOT / "tests" / "hosts" / "nspawn_hosts.py"
sys.path.insert(0, str(ROOT / "tests" / "hosts"))
import nspawn_hosts  # noqa: E402  (the bridge's name)

PREFIX = "fsync"
HOSTS = [f"{PREFIX}-{i}" for i in range(1, 5)]
TENSOR_BYTES = 16 << 20


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def write_model(directory: Path, size_mib: int, shards: int) -> int:
    """A sharded safetensors model with random F32 tensors (nothing compresses) and the tiny config."""
    tiny = Path(os.environ["LLMOPS_FIXTURES"]) / "models" / "tiny"
    directory.mkdir(parents=True)
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        if (tiny / name).exists():
            shutil.copy(tiny / name, directory / name)
    shard_bytes = size_mib * (1 << 20) // shards // TENSOR_BYTES * TENSOR_BYTES
    weight_map, total = {}, 0
    for i in range(shards):
        name = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        header, offset = {}, 0
        for t in range(shard_bytes // TENSOR_BYTES):
            key = f"model.layers.{i}.w{t}.weight"
            header[key] = {
                "dtype": "F32",
                "shape": [TENSOR_BYTES // 4096, 1024],
                "data_offsets": [offset, offset + TENSOR_BYTES],
            }
            offset += TENSOR_BYTES
            weight_map[key] = name
        raw = json.dumps(header).encode()
        raw += b" " * (-len(raw) % 8)
        with (directory / name).open("wb") as handle:
            handle.write(len(raw).to_bytes(8, "little") + raw)
            for _tensor in header:
                handle.write(os.urandom(TENSOR_BYTES))
        total += offset
    (directory / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map})
    )
    return sum(f.stat().st_size for f in directory.iterdir())


def ssh(state: Path, address: str, command: str) -> None:
    subprocess.run(
        ["ssh", "-i", str(state / "id_ed25519"), "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
         "-o", "LogLevel=ERROR", f"root@{address}", command],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip


def promote(state: Path, model: Path, hosts: list[str], distribution: str, batch: str) -> tuple[float, str]:
    groups = state / "groups.yml"
    groups.write_text(json.dumps({"vllm_hosts": {"hosts": {h: None for h in hosts}}}))
    cmd = ["ansible-playbook", "-i", str(state / "inventory.yml"), "-i", str(groups),
           str(ROOT / "playbooks" / "promote.yml"),
           "-e", f"model_sync_source={model}", "-e", "model_sync_source_location=controller",
           "-e", "model_sync_reload=false", "-e", "model_sync_disk_margin_mb=64",
           "-e", f"model_sync_distribution={distribution}",
           "-e", f"llmops_rollout_batch={batch}", "-e", "model_sync_chunk_mb=128"]  # fmt: skip
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    wall = time.monotonic() - started
    if proc.returncode != 0:
        sys.exit(
            f"promote.yml failed ({distribution}, {len(hosts)} hosts):\n{proc.stdout[-5000:]}\n{proc.stderr[-2000:]}"
        )
    return wall, proc.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--rate-mbit", type=int, default=200, help="the controller's capped uplink")
    parser.add_argument("--keep", action="store_true", help="leave the hosts up")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (systemd-nspawn hosts, tc)")
    state = Path(os.environ["LLMOPS_CACHE"]) / "bench-fleet-sync"
    destroy = ["python3", str(CLI), "destroy", "--prefix", PREFIX, "--state-dir", str(state)]
    subprocess.run(destroy, check=False, capture_output=True)
    work = Path(tempfile.mkdtemp(prefix="fleet-sync-"))
    bridge = nspawn_hosts.BRIDGE
    results: list[tuple[str, float]] = []
    progress = ""
    try:
        log(f"writing a {args.size_mib} MiB model in {args.shards} shards on the controller")
        model = work / "model"
        size = write_model(model, args.size_mib, args.shards)
        log("booting 4 test hosts")
        create = ["python3", str(CLI), "create", "--prefix", PREFIX, "--state-dir", str(state)]
        subprocess.run(create + [f"--host={h}" for h in HOSTS], check=True, capture_output=True)
        addresses = {h: v["ip"] for h, v in json.loads((state / "state.json").read_text())["hosts"].items()}
        log(f"capping the controller's uplink on {bridge} to {args.rate_mbit} Mbit/s (tc tbf)")
        subprocess.run(["tc", "qdisc", "replace", "dev", bridge, "root", "tbf", "rate", f"{args.rate_mbit}mbit",
                        "burst", "256kb", "latency", "100ms"], check=True)  # fmt: skip
        # The controller's manifest cache is recorded once, so every run measures distribution, not hashing.
        promote(state, model, HOSTS[:1], "star", "100%")
        runs = [
            ("star, 1 host", HOSTS[:1], "star", "100%"),
            ("star, 4 hosts at once", HOSTS, "star", "100%"),
            ("tree, 4 hosts at once", HOSTS, "tree", "100%"),
            ("tree, 4 hosts one per batch", HOSTS, "tree", "1"),
        ]
        for label, hosts, distribution, batch in runs:
            for host in HOSTS:
                ssh(state, addresses[host], "rm -rf /srv/vllm/models && sync")
            log(f"{label}: cold sync")
            wall, out = promote(state, model, hosts, distribution, batch)
            results.append((label, wall))
            log(f"{label}: {wall:.1f} s")
            if label.startswith("tree, 4 hosts at once"):
                progress = "\n".join(line for line in out.splitlines() if re.search(r"chunk \d+/\d+|round \d+:", line))
    finally:
        subprocess.run(["tc", "qdisc", "del", "dev", bridge, "root"], check=False, capture_output=True)
        if not args.keep:
            subprocess.run(destroy, check=False, capture_output=True)
        shutil.rmtree(work, ignore_errors=True)

    base = results[0][1]
    print()
    print(f"model: {size / (1 << 20):.0f} MiB in {args.shards} shards, random weights; controller uplink capped at "
          f"{args.rate_mbit} Mbit/s (one copy needs >= {size * 8 / args.rate_mbit / 1e6:.1f} s); "
          "host-to-host uncapped; "
          f"{os.cpu_count()} CPUs")  # fmt: skip
    for label, wall in results:
        print(f"  {label:30s} {wall:7.1f} s  = {wall / base:.2f}x the 1-host run")
    print("target: tree, 4 hosts at once <= 1.6x the 1-host run (a star push is ~4x)")
    print("progress lines of the tree run:")
    print(progress)
    return 0


if __name__ == "__main__":
    sys.exit(main())
