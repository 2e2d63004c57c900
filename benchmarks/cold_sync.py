"""Cold sync of a multi-GiB sharded model between two real hosts: model_sync against plain `rsync -a`.

Boots two nspawn test hosts on one bridge, writes a sharded safetensors model of --size-gib (random
weights: nothing compresses, nothing deduplicates) on the source host, lets the source host reach the
target over SSH (what `model_sync_source_location: remote` needs), then, in one run on the same data and
link, with the page cache dropped before each cold copy:

  1. baseline: `rsync -a SRC/ root@TARGET:DIR/` run on the source host;
  2. model_sync cold (playbooks/promote.yml, source on the source host): the source manifest is built
     from nothing, then copy into staging, verify against the manifest, rename, switch;
  3. model_sync cold again onto an emptied target, the source manifest already recorded (what a re-run
     after a producer or a first host has hashed the source costs);
  4. unchanged re-syncs (playbooks/promote.yml again, several runs): wall time and changed count.

Prints the figures and the ratios against the baseline: copy throughput (model_sync's copy step against
rsync, target >= 0.9x) and whole time with verification (target <= 1.3x rsync's time), and the unchanged
re-sync (target: changed=0 in under 3 s). Prints figures; asserts nothing.

    scripts/run python benchmarks/cold_sync.py [--size-gib 4] [--shards 8] [--resyncs 5] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLI = ROOT / "tests" / "hosts" / "nspawn_hosts.py"
PREFIX = "csync"
SRC, DST = "csync-src", "csync-dst"
SOURCE_DIR = "/srv/source/merged-model"
TENSOR_BYTES = 16 << 20
COLD = "source hashed in this run"
RECORDED = "source manifest already recorded"
# The role's tasks on the cold path (name prefixes), timed from the JSON callback.
STEPS = {
    "manifest": "Build the manifest of the source on the source host",
    "lookup": "Lock and read the host's model store",
    "room": "Require room",
    "rsync_pkg": "Install rsync",
    "dirs": "Remove staging copies abandoned",
    "copy": "Copy from the source host into staging",
    "verify": "Verify the copy against the source manifest",
    "install": "Flush the verified copy to disk",
    "switch": "Switch `current`",
}

# Runs on the source host: a sharded safetensors model with random F32 tensors of 16 MiB each, plus the
# index; config and tokenizer come from the tiny fixture.
GENERATE = r"""
import json, os, struct, sys
root, shards, shard_bytes, tensor_bytes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
os.makedirs(root, exist_ok=True)
weight_map, total = {}, 0
for i in range(shards):
    name = "model-%05d-of-%05d.safetensors" % (i + 1, shards)
    header, offset = {}, 0
    for t in range(shard_bytes // tensor_bytes):
        key = "model.layers.%d.w%d.weight" % (i, t)
        shape = [tensor_bytes // 4096, 1024]
        header[key] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + tensor_bytes]}
        offset += tensor_bytes
        weight_map[key] = name
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(os.path.join(root, name), "wb") as handle:
        handle.write(struct.pack("<Q", len(raw)) + raw)
        for _ in range(len(header)):
            handle.write(os.urandom(tensor_bytes))
    total += offset
with open(os.path.join(root, "model.safetensors.index.json"), "w") as handle:
    json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, handle)
"""


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Bench:
    def __init__(self, state: Path) -> None:
        self.state = state
        hosts = json.loads((state / "state.json").read_text())["hosts"]
        self.ip = {name: hosts[name]["ip"] for name in (SRC, DST)}

    def ssh(self, host: str, command: str, stdin: bytes | None = None) -> str:
        proc = subprocess.run(
            ["ssh", "-i", str(self.state / "id_ed25519"), "-o", "StrictHostKeyChecking=no",
             "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", f"root@{self.ip[host]}", command],
            input=stdin, capture_output=True, timeout=1800, check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            sys.exit(f"{host}: {command}: {proc.stderr.decode()}")
        return proc.stdout.decode()

    def playbook(self) -> tuple[int, float, dict]:
        env = {**os.environ, "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json"}
        cmd = ["ansible-playbook", "-i", str(self.state / "inventory.yml"), "-i", str(self.state / "groups.yml"),
               str(ROOT / "playbooks" / "promote.yml"), "-e", f"model_sync_source={SOURCE_DIR}",
               "-e", "model_sync_source_location=remote", "-e", f"model_sync_source_host={SRC}",
               "-e", "model_sync_reload=false", "-e", "model_sync_disk_margin_mb=64"]  # fmt: skip
        started = time.monotonic()
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
        elapsed = time.monotonic() - started
        report = json.loads(proc.stdout) if proc.stdout.lstrip().startswith("{") else {}
        if proc.returncode != 0:
            print(proc.stdout[-4000:], proc.stderr[-2000:])
        return proc.returncode, elapsed, report


def task_seconds(report: dict, prefix: str) -> float:
    """Seconds of the first task whose name starts with `prefix` and that ran; 0 when none ran."""
    for play in report.get("plays", []):
        for task in play.get("tasks", []):
            results = task.get("hosts", {}).values()
            name = task["task"]["name"].split(" : ", 1)[-1]  # "<role> : <task>"
            if name.startswith(prefix) and any(not r.get("skipped") for r in results):
                duration = task["task"]["duration"]
                start = datetime.fromisoformat(duration["start"].replace("Z", "+00:00"))
                end = datetime.fromisoformat(duration["end"].replace("Z", "+00:00"))
                return (end - start).total_seconds()
    return 0.0


def changed(report: dict) -> int:
    return sum(s.get("changed", 0) for s in report.get("stats", {}).values())


def drop_caches() -> None:
    subprocess.run(["sync"], check=True)
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-gib", type=float, default=4.0)
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3, help="cold rounds (baseline + both model_sync runs)")
    parser.add_argument("--resyncs", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="leave the hosts up")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (systemd-nspawn hosts, dropping the page cache)")
    state = Path(os.environ["LLMOPS_CACHE"]) / "bench-cold-sync"
    tiny = Path(os.environ["LLMOPS_FIXTURES"]) / "models" / "tiny"
    destroy = ["python3", str(CLI), "destroy", "--prefix", PREFIX, "--state-dir", str(state)]
    subprocess.run(destroy, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shard_bytes = int(args.size_gib * (1 << 30) / args.shards) // TENSOR_BYTES * TENSOR_BYTES
    try:
        log("booting 2 test hosts")
        create = ["python3", str(CLI), "create", "--prefix", PREFIX, "--state-dir", str(state)]
        subprocess.run([*create, f"--host={SRC}", f"--host={DST}"], check=True, stdout=subprocess.DEVNULL)
        (state / "groups.yml").write_text(
            json.dumps({"vllm_hosts": {"hosts": {DST: None}}, "model_sources": {"hosts": {SRC: None}}})
        )
        bench = Bench(state)
        # The source host pushes to the target over SSH as root: give it the key the target trusts.
        key = (state / "id_ed25519").read_bytes()
        install_key = "install -d -m 0700 /root/.ssh && cat > /root/.ssh/id_ed25519 && chmod 600 /root/.ssh/id_ed25519"
        bench.ssh(SRC, install_key, stdin=key)
        log(f"writing a {args.shards}-shard model of {shard_bytes * args.shards / (1 << 30):.2f} GiB on {SRC}")
        bench.ssh(SRC, f"mkdir -p {SOURCE_DIR}")
        for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json"):
            if (tiny / name).exists():
                bench.ssh(SRC, f"cat > {SOURCE_DIR}/{name}", stdin=(tiny / name).read_bytes())
        script = shlex.quote(GENERATE)
        bench.ssh(SRC, f"python3 -c {script} {SOURCE_DIR} {args.shards} {shard_bytes} {TENSOR_BYTES}")
        size = int(bench.ssh(SRC, f"du -sb {SOURCE_DIR} | cut -f1"))
        ssh_opts = "ssh -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"

        rsync_runs: list[float] = []
        runs: dict[str, list[dict]] = {COLD: [], RECORDED: []}
        for round_ in range(1, args.repeat + 1):
            log(f"round {round_}/{args.repeat}: baseline rsync -a from the source host (page cache dropped)")
            bench.ssh(DST, "rm -rf /srv/baseline /srv/vllm/models /var/cache/llmops-platform && sync")
            bench.ssh(SRC, "rm -rf /var/cache/llmops-platform")
            drop_caches()
            started = time.monotonic()
            bench.ssh(SRC, f"rsync -a -e {shlex.quote(ssh_opts)} {SOURCE_DIR}/ root@{bench.ip[DST]}:/srv/baseline/")
            rsync_runs.append(time.monotonic() - started)
            for label in (COLD, RECORDED):
                log(f"round {round_}/{args.repeat}: model_sync cold, {label} (page cache dropped)")
                bench.ssh(DST, "rm -rf /srv/baseline /srv/vllm/models && sync")
                drop_caches()
                rc, wall, report = bench.playbook()
                if rc != 0:
                    sys.exit(f"promote.yml failed (rc={rc})")
                run = {key: task_seconds(report, name) for key, name in STEPS.items()}
                run["role"] = sum(run.values())
                run.update(wall=wall, changed=changed(report))
                runs[label].append(run)

        log(f"unchanged re-sync x{args.resyncs}")
        resyncs = []
        for _round in range(args.resyncs):
            rc, wall, report = bench.playbook()
            resyncs.append((rc, wall, changed(report)))
    finally:
        if not args.keep:
            subprocess.run(destroy, check=False, stdout=subprocess.DEVNULL)

    def median(values: list[float]) -> float:
        ordered = sorted(values)
        return ordered[len(ordered) // 2]

    gib = size / (1 << 30)
    rsync_s = median(rsync_runs)
    print()
    print(f"model: {gib:.2f} GiB in {args.shards} safetensors shards (+ index, config, tokenizer), random weights")
    print(f"link: {SRC} -> {DST}, SSH over the test bridge, no compression on either side; {os.cpu_count()} CPUs")
    print(f"{args.repeat} rounds, page cache dropped before every cold copy; medians, all runs in brackets")
    print(
        f"rsync -a (baseline)  {rsync_s:6.2f} s  {size / rsync_s / 1e6:6.1f} MB/s  {[round(r, 2) for r in rsync_runs]}"
    )
    for label, rounds in runs.items():
        copy = median([r["copy"] for r in rounds])
        role = median([r["role"] for r in rounds])
        wall = median([r["wall"] for r in rounds])
        print(f"model_sync cold, {label}:")
        print(
            f"  copy step (rsync into staging) {copy:6.2f} s  {size / copy / 1e6:6.1f} MB/s"
            f"  = {rsync_s / copy:.2f}x rsync's throughput (target >= 0.9x)  {[round(r['copy'], 2) for r in rounds]}"
        )
        print(
            f"  source manifest {median([r['manifest'] for r in rounds]):.2f} s,"
            f" verify {median([r['verify'] for r in rounds]):.2f} s,"
            f" the other steps {median([r['role'] - r['copy'] - r['verify'] - r['manifest'] for r in rounds]):.2f} s"
        )
        print(
            f"  the role's tasks, verification included {role:6.2f} s = {role / rsync_s:.2f}x rsync's time"
            f" (target <= 1.3x)  {[round(r['role'], 2) for r in rounds]}"
        )
        print(
            f"  whole ansible-playbook run {wall:6.2f} s = {wall / rsync_s:.2f}x rsync's time"
            f"  {[round(r['wall'], 2) for r in rounds]}, changed={[r['changed'] for r in rounds]}"
        )
    walls = sorted(w for _rc, w, _c in resyncs)
    print(f"unchanged re-sync (whole ansible-playbook run): {', '.join(f'{w:.2f}' for _r, w, _c in resyncs)} s;"
          f" median {walls[len(walls) // 2]:.2f} s; changed {[c for _r, _w, c in resyncs]};"
          f" rc {[r for r, _w, _c in resyncs]} (target: changed=0 in under 3 s)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
