"""The MLflow container's database URI (with its password) never reaches a command line.

training_cluster renders the MLflow container as `sh -c "... exec mlflow server ..."`. With
training_cluster_mlflow_backend: database the URI comes from the Secret as MLFLOW_BACKEND_STORE_URI and the
script passes no --backend-store-uri: `mlflow server` reads the variable itself (click's envvar). A
`--backend-store-uri "$MLFLOW_BACKEND_STORE_URI"` would be expanded by the shell into mlflow's argv, readable
by anyone who can list the node's processes (/proc/PID/cmdline, `ps`).

Here the rendered script runs for real with the `mlflow server` of the LLaMA-Factory venv (the test node's
stand-in for the MLflow image), paths and address moved to a temporary directory and 127.0.0.1: the server
uses the database the variable names, and no process of it carries the URI in its argv. The same check on
the old script finds the URI, so it can fail.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import List

import pytest
import yaml
from llamafactory_env import MlflowServer, lf_venv

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT / "tests" / "k8s") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests" / "k8s"))

import validate  # noqa: E402

pytestmark = pytest.mark.llamafactory

# Stands for the password in a database URI: the file name of the SQLite store the variable names.
MARKER = "s3cret-db-password"
RENDER = {
    "training_cluster_image": "registry.example.test/llm/llama-factory-train:0.9.5",
    "training_cluster_mlflow_backend": "database",
    "training_cluster_mlflow_database_uri": f"postgresql://mlflow:{MARKER}@db.internal/mlflow",
}


@pytest.fixture(scope="module")
def mlflow_script(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The `sh -c` script of the MLflow container training_cluster renders for a database backend."""
    tmp = tmp_path_factory.mktemp("render")
    varsfile = tmp / "vars.json"
    varsfile.write_text(json.dumps(RENDER))
    out = validate.render_role("training_cluster", [f"@{varsfile}"], tmp)
    deployment = yaml.safe_load(next(out.glob("*-deployment-mlflow.yaml")).read_text())
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][:2] == ["sh", "-c"]
    env = {e["name"]: e for e in container["env"]}
    assert env["MLFLOW_BACKEND_STORE_URI"]["valueFrom"]["secretKeyRef"]["key"] == "database-uri"
    return container["command"][2]


class ScriptedMlflow(MlflowServer):
    """`mlflow server` started by the container's own script (moved to 127.0.0.1 and a temporary directory),
    with MLFLOW_BACKEND_STORE_URI in its environment as the kubelet sets it from the Secret."""

    def __init__(self, venv: Path, workdir: Path, script: str) -> None:
        super().__init__(venv, workdir)
        self.store = workdir / f"{MARKER}.db"
        self.script = (
            script.replace("/storage/mlflow", str(workdir))
            .replace("--host 0.0.0.0", "--host 127.0.0.1")
            .replace("--port 5000", f"--port {self.port}")
        )
        assert str(self.port) in self.script and str(workdir) in self.script, self.script

    def command(self) -> List[str]:
        return ["sh", "-c", self.script]

    def command_lines(self) -> List[str]:
        """The argv of every process of the server (its session: the shell exec'd mlflow, and its workers)."""
        assert self.process is not None
        lines = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                if os.getsid(int(proc.name)) != self.process.pid:
                    continue
                lines.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
            except (OSError, ProcessLookupError):
                continue
        return lines


def run_and_read_argv(tmp_path: Path, script: str, monkeypatch: pytest.MonkeyPatch) -> List[str]:
    venv = lf_venv()
    server = ScriptedMlflow(venv, tmp_path / "mlflow", script)
    # What the pod has: the image's mlflow on PATH, the URI from the Secret in the environment.
    monkeypatch.setenv("PATH", f"{venv / 'bin'}:{os.environ['PATH']}")
    monkeypatch.setenv("MLFLOW_BACKEND_STORE_URI", f"sqlite:///{server.store}")
    server.start()
    try:
        lines = server.command_lines()
        assert any("mlflow" in line for line in lines), lines
        assert server.store.is_file(), "the server did not use the database MLFLOW_BACKEND_STORE_URI names"
        return lines
    finally:
        server.stop()


def test_the_database_uri_reaches_mlflow_only_through_the_environment(
    tmp_path: Path, mlflow_script: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert "--backend-store-uri" not in mlflow_script
    lines = run_and_read_argv(tmp_path, mlflow_script, monkeypatch)
    assert [line for line in lines if MARKER in line] == []


def test_the_check_finds_a_uri_the_shell_expands_into_argv(
    tmp_path: Path, mlflow_script: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The script before this change (`--backend-store-uri "$MLFLOW_BACKEND_STORE_URI"`) leaks it."""
    old = mlflow_script.replace(
        "--artifacts-destination", '--backend-store-uri "$MLFLOW_BACKEND_STORE_URI" --artifacts-destination'
    )
    lines = run_and_read_argv(tmp_path, old, monkeypatch)
    assert [line for line in lines if MARKER in line] != []
