"""Every molecule scenario (molecule/*/molecule.yml) as one test: `molecule test -s NAME`, the whole sequence
(destroy, create, converge, idempotence, check where listed, verify, destroy).

They are pytest items so that tests/run_all.sh schedules them in the same worker pool as the integration tests
(pytest-xdist, one scenario per worker at a time): each scenario brings its own hosts or its own Kubernetes API
emulator, so they run next to the other tests. The scenario's output is written to
tests/output/molecule/NAME.log as it runs (`tail -f` it to follow a scenario) and its last lines are shown when
it fails.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = sorted(p.parent.name for p in (ROOT / "molecule").glob("*/molecule.yml"))
TAIL_LINES = 150
TIMEOUT_S = 2400


def test_there_are_scenarios() -> None:
    assert {"training_cluster", "vllm_host", "vllm_k8s"} <= set(SCENARIOS), SCENARIOS


@pytest.mark.molecule
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_molecule_scenario(scenario: str) -> None:
    log = ROOT / "tests" / "output" / "molecule" / f"{scenario}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    molecule = Path(sys.executable).parent / "molecule"
    env = dict(os.environ, ANSIBLE_FORCE_COLOR="0", PY_COLORS="0", NO_COLOR="1")
    with log.open("w") as out:
        proc = subprocess.run(
            [str(molecule), "test", "-s", scenario],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=TIMEOUT_S,
            check=False,
        )
    if proc.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-TAIL_LINES:]
        pytest.fail(f"molecule test -s {scenario} exited {proc.returncode}; last lines of {log}:\n" + "\n".join(tail))
