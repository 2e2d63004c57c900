"""The internal layout end to end, each stage's wall time: the README's internal quick start run on the
Kubernetes API emulator with the test node (tests/k8s/node.py) running the pods' real processes.

    scripts/run python benchmarks/internal_e2e.py [--runs N] [--keep DIR]

Stages (unmodified playbooks, an inventory copied from inventories/internal with a vault and the CPU settings
of tests/k8s/internal_layout.py, vLLM renamed there): internal.yml --check --diff, internal.yml (first run: no
merged model, vLLM at 0 replicas), train.yml (LLaMA-Factory LoRA on the tiny model, reporting to the cluster's
MLflow), merge.yml (merge Job writes a new version, vLLM scaled onto it, its gate sends a real completion
through a kubectl port-forward), merge.yml with a model vLLM cannot load (fails: crash loop caught by the
rollout wait, the previous version restored and gated), internal.yml again (no change), ui.yml (kubectl
port-forwards to the WebUI, MLflow and vLLM through the emulator, each waited for until its local port answers) and
ui.yml -e llmops_ui_state=stopped, teardown.yml. Prints a table per run and, with --runs > 1, the median of
each stage. The test with the assertions is tests/k8s/test_internal_layout.py; this only times the same
stages. Machine-dependent: compare figures from one machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "k8s"))

from internal_layout import BREAK_MERGE_MARKER, from_environment, stage_table  # noqa: E402

EXPECTED_TO_FAIL = {"failed merge + restore"}

STAGES = [
    ("check", "internal.yml", ["--check", "--diff"]),
    ("first run", "internal.yml", []),
    ("train", "train.yml", []),
    ("merge + switch + gate", "merge.yml", []),
    # A merge whose model vLLM cannot load (fault injected: BREAK_MERGE_MARKER): it must fail, after the rollout
    # wait caught the crash loop and the previous version was restored and gated again.
    ("failed merge + restore", "merge.yml", []),
    ("re-run (no change)", "internal.yml", []),
    ("ui (port-forwards)", "ui.yml", []),
    ("ui stopped", "ui.yml", ["-e", "llmops_ui_state=stopped"]),
    ("teardown", "teardown.yml", []),
]


def one_run(workdir: Path) -> dict:
    cluster = from_environment(workdir).start()
    try:
        for name, playbook, args in STAGES:
            print(f"[internal_e2e] {name}: ansible-playbook {playbook} {' '.join(args)}", flush=True)
            if name in EXPECTED_TO_FAIL:
                (cluster.pvc / BREAK_MERGE_MARKER).touch()
            stage = cluster.playbook(name, playbook, *args)
            print(
                f"[internal_e2e]   rc={stage.rc} changed={stage.stats.get('changed')} {stage.seconds:.1f} s", flush=True
            )
            if (stage.rc != 0) != (name in EXPECTED_TO_FAIL):
                print("\n".join(stage.failures()) or stage.output[-3000:], file=sys.stderr)
                raise SystemExit(f"stage {name!r} {'failed' if stage.rc else 'passed but should have failed'}")
        print(stage_table(cluster.stages), flush=True)
        return {s.name: s.seconds for s in cluster.stages}
    finally:
        cluster.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--runs", type=int, default=1, help="repeat the whole sequence (default 1)")
    parser.add_argument("--keep", type=Path, help="work in this directory and keep it (default: a temporary one)")
    args = parser.parse_args()
    results = []
    for run in range(args.runs):
        if args.keep:
            workdir = args.keep / f"run-{run + 1}"
            workdir.mkdir(parents=True, exist_ok=False)
            results.append(one_run(workdir))
        else:
            with tempfile.TemporaryDirectory(prefix="internal-e2e-") as tmp:
                results.append(one_run(Path(tmp)))
    if len(results) > 1:
        print(f"median of {len(results)} runs:")
        for name in results[0]:
            print(f"  {name:<24} {statistics.median(r[name] for r in results):7.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
