"""Job templates of awx/vars/main.yml run through ansible-runner as AWX launches them (tests/integration/awx_runner.py):
survey defaults, the template's own extra variables and the credential types' injectors (extra variables, environment,
a 0600 file), on the template's inventory. These need no hosts or cluster; the templates that do run in the
whole-loop scenario. Every credential value is distinct, and none may reach the job's output."""

from __future__ import annotations

import csv
import stat

import pytest
from awx_runner import launch

KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: staging, cluster: {server: "https://127.0.0.1:1"}}]
contexts: [{name: staging, context: {cluster: staging, user: ops}}]
current-context: staging
users: [{name: ops, user: {token: awx-runner-kube-token-5d1e}}]
"""
CLUSTER_KEY = "awx-runner-cluster-key-93be1c7a"


def test_the_ui_template_runs_with_its_survey_defaults_and_injected_credentials(tmp_path):
    job = launch(
        "llmops ui",
        tmp_path,
        credentials={
            "llmops kubeconfig": {"kubeconfig": KUBECONFIG},
            "llmops vLLM API key (cluster)": {"api_key": CLUSTER_KEY},
        },
    )
    assert job.status == "successful" and job.rc == 0, job.stdout[-4000:]
    # The survey's default (do not start the forwards inside the job) reached the play: the commands are printed.
    assert job.extravars["training_cluster_port_forward_start"] == "false"
    assert "port-forward" in job.stdout and "svc/" in job.stdout
    # The kubeconfig went into a private file that the injected variables and KUBECONFIG name.
    kubeconfig = job.files["template.kubeconfig"]
    assert stat.S_IMODE(kubeconfig.stat().st_mode) == 0o600 and kubeconfig.read_text() == KUBECONFIG
    assert job.envvars["KUBECONFIG"] == job.extravars["vllm_k8s_kubeconfig"] == str(kubeconfig)
    assert f"--kubeconfig {kubeconfig}" in job.stdout
    for secret in ("awx-runner-kube-token-5d1e", CLUSTER_KEY):
        assert secret not in job.stdout, "a credential reached the job output"
    for name in ("extravars", "envvars"):
        assert stat.S_IMODE((job.private_data_dir / "env" / name).stat().st_mode) == 0o600


@pytest.mark.parametrize("job_type", ["check", "run"])
def test_the_cost_report_template_reproduces_the_adr_with_its_survey_defaults(tmp_path, job_type):
    from awx_runner import ROOT

    out = tmp_path / "report"
    job = launch(
        "llmops cost report",
        tmp_path,
        answers={"llmops_cost_output_dir": str(out)},
        inventory=ROOT / "inventories" / "cost-example" / "hosts.yml",
        job_type=job_type,
    )
    assert job.status == "successful", job.stdout[-4000:]
    assert job.extravars["llmops_cost_price_per_gpu_hour"] == 2.9 and job.extravars["llmops_cost_hours"] == 168
    assert "1,948.80" in job.stdout and "1,461.60" in job.stdout, job.stdout[-3000:]
    if job_type == "check":
        assert not out.exists(), "a check-mode job wrote the report"
        return
    rows = list(csv.DictReader((out / "gpu-cost.csv").open()))
    assert rows, (out / "gpu-cost.csv").read_text()
