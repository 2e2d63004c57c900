"""Helpers for the real LLaMA-Factory + MLflow integration test (tests/integration/test_llamafactory_real.py).

* `lf_venv()`: the virtualenv scripts/setup_llamafactory.sh builds ($LLMOPS_LF_VENV, else the same path
  computed from requirements/llamafactory.lock); fails the test when it is not built.
* `MlflowServer`: a real `mlflow server` on 127.0.0.1 (free port, SQLite backend store and an artifact
  directory in a temporary directory), with REST helpers for the runs and metrics it recorded.
* `offline_env()`: the environment LLaMA-Factory runs with: Hugging Face offline, no telemetry, the
  tracking URI and experiment of the server.
* `run_cli()`: runs `llamafactory-cli SUBCOMMAND CONFIG`, keeps its output in a log file, returns the
  exit code, the duration and the log tail for failure messages.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest
from itest_support import ROOT, free_port

LOCK = ROOT / "requirements" / "llamafactory.lock"
MLFLOW_START_TIMEOUT = float(os.environ.get("LLMOPS_MLFLOW_START_TIMEOUT", "120"))
CLI_TIMEOUT = float(os.environ.get("LLMOPS_LLAMAFACTORY_TIMEOUT", "600"))

# Nothing may leave 127.0.0.1: Hugging Face offline, MLflow / Gradio / HF telemetry and version checks off.
QUIET_ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "1",
    "GRADIO_ANALYTICS_ENABLED": "False",
    "DISABLE_VERSION_CHECK": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


def lf_venv() -> Path:
    """The LLaMA-Factory virtualenv, built and complete (its marker written), or fail the test."""
    value = os.environ.get("LLMOPS_LF_VENV")
    if value:
        venv = Path(value)
    else:  # the path scripts/lib.sh and scripts/setup_llamafactory.sh derive from the lock
        cache = Path(
            os.environ.get("LLMOPS_CACHE")
            or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "llmops-platform"
        )
        venv = cache / f"venv-llamafactory-{hashlib.sha256(LOCK.read_bytes()).hexdigest()[:12]}"
    if not (venv / ".llmops-complete").is_file():
        pytest.fail(f"the LLaMA-Factory virtualenv {venv} is not built: run scripts/setup_llamafactory.sh")
    return venv


def log_tail(path: Path, lines: int = 60) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError as exc:
        return f"(no log at {path}: {exc})"
    return f"--- last {lines} lines of {path} ---\n" + "\n".join(text[-lines:])


class MlflowServer:
    """A real MLflow tracking server (the `mlflow server` of the LLaMA-Factory venv) on 127.0.0.1."""

    def __init__(self, venv: Path, workdir: Path, port: Optional[int] = None) -> None:
        self.venv = venv
        self.workdir = workdir
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "mlflow-server.log"
        self.artifacts = workdir / "artifacts"
        self.process: Optional[subprocess.Popen] = None

    def command(self) -> List[str]:
        return [
            str(self.venv / "bin" / "mlflow"), "server",
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--backend-store-uri", f"sqlite:///{self.workdir / 'mlflow.db'}",
            "--artifacts-destination", str(self.artifacts),
            "--workers", "1",
        ]  # fmt: skip

    def start(self, timeout: float = MLFLOW_START_TIMEOUT) -> MlflowServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, **QUIET_ENV)
        # MLflow 3 starts a job runner with a pool of worker processes for GenAI jobs: not needed here.
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=str(self.workdir),
                start_new_session=True,  # its own process group: uvicorn/gunicorn workers go with it
            )
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                pass
            if self.process.poll() is not None:
                pytest.fail(f"mlflow server exited with code {self.process.returncode}\n{log_tail(self.log_path)}")
            time.sleep(0.3)
        self.stop()
        pytest.fail(f"mlflow server not healthy on {self.url} after {timeout:.0f} s\n{log_tail(self.log_path)}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    # -- REST API (https://mlflow.org/docs/latest/api_reference/rest-api.html) -------------------------

    def api(self, method: str, path: str, body: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"{self.url}/api/2.0/mlflow/{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"MLflow {method} {path} -> HTTP {exc.code}: {exc.read()[:2000]!r}") from exc

    def experiment_id(self, name: str) -> str:
        query = urllib.parse.urlencode({"experiment_name": name})
        return self.api("GET", f"experiments/get-by-name?{query}")["experiment"]["experiment_id"]

    def runs(self, experiment_name: str) -> List[Dict[str, Any]]:
        body = {"experiment_ids": [self.experiment_id(experiment_name)], "max_results": 100}
        return self.api("POST", "runs/search", body).get("runs", [])

    def metric_history(self, run_id: str, key: str) -> List[Dict[str, Any]]:
        query = urllib.parse.urlencode({"run_id": run_id, "metric_key": key})
        return self.api("GET", f"metrics/get-history?{query}").get("metrics", [])


def offline_env(tracking_uri: str, experiment: str, workdir: Path) -> Dict[str, str]:
    """Environment for llamafactory-cli: offline, quiet, reporting to the MLflow server."""
    env = dict(os.environ, **QUIET_ENV)
    env.update(
        MLFLOW_TRACKING_URI=tracking_uri,
        MLFLOW_EXPERIMENT_NAME=experiment,
        HF_HOME=str(workdir / "hf-home"),
        HF_DATASETS_CACHE=str(workdir / "hf-datasets"),
        MPLCONFIGDIR=str(workdir / "matplotlib"),
        CUDA_VISIBLE_DEVICES="",
    )
    return env


@dataclass
class CliRun:
    rc: int
    duration: float
    log_path: Path

    def tail(self, lines: int = 60) -> str:
        return log_tail(self.log_path, lines)


def run_cli(venv: Path, subcommand: str, config: Path, env: Dict[str, str], workdir: Path) -> CliRun:
    """`llamafactory-cli SUBCOMMAND CONFIG`, output to WORKDIR/SUBCOMMAND.log."""
    log_path = workdir / f"llamafactory-{subcommand}.log"
    started = time.monotonic()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(venv / "bin" / "llamafactory-cli"), subcommand, str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=str(workdir),
            start_new_session=True,
        )
        try:
            rc = process.wait(timeout=CLI_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            pytest.fail(f"llamafactory-cli {subcommand} ran longer than {CLI_TIMEOUT:.0f} s\n{log_tail(log_path)}")
    return CliRun(rc, time.monotonic() - started, log_path)


def run_python(venv: Path, code: str, *args: str, env: Optional[Dict[str, str]] = None) -> Any:
    """Run CODE with the venv's Python (it has torch/transformers; the test process does not) and
    return the JSON document it prints last."""
    result = subprocess.run(
        [str(venv / "bin" / "python"), "-c", code, *args],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, f"rc={result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return json.loads(result.stdout.strip().splitlines()[-1])
