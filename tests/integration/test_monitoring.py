"""playbooks/monitoring.yml (role vllm_monitoring) on the external example inventory, checked with the real promtool
(Debian's prometheus 2.42, installed by make setup): the alert rules load (`promtool check rules`), each alert fires
on synthetic series and a healthy instance stays quiet (`promtool test rules`), the generated prometheus.yml with its
file_sd targets and rules loads (`promtool check config`), every dashboard query parses, and every metric the rules
and the dashboard read exists in the installed vLLM's own source. Both layouts give the series the same labels: the
hosts' file_sd targets and the cluster's ServiceMonitor relabelings are checked against each other.

A real Prometheus scraping a real vLLM through the hosts' front with the generated prometheus.yml, and every
dashboard query answered by it, is tests/integration/hosts/test_external_fleet.py's (on the fleet it deploys anyway).
Not proven here nor there (see docs/observability.md): the dashboard rendered by Grafana, dcgm-exporter's metrics
and the two GPU panels (no GPU here), the labels after relabeling by a real prometheus-operator.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, List, Set

import jinja2
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
for path in (ROOT / "tests" / "k8s",):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import validate  # noqa: E402

INVENTORY = ROOT / "inventories" / "external"
ROLE = ROOT / "roles" / "vllm_monitoring"
TEST_SPEC = Path(__file__).parent / "monitoring" / "vllm-alerts.test.yml"
ALERTS = {
    "VllmInstanceDown",
    "VllmHung",
    "VllmQueueGrowing",
    "VllmKvCacheNearFull",
    "VllmSlowFirstToken",
    "VllmRestarting",
}
SECRET = "monitoring-test-key-0123456789"
# Metrics that are not vLLM's own, and where each comes from (checked below where the source is installed here).
OTHER_METRICS = {
    "up": "Prometheus itself, for every target",
    "process_start_time_seconds": "prometheus_client's process collector in the vLLM API server",
    "DCGM_FI_DEV_GPU_UTIL": "dcgm-exporter (default counters)",
    "DCGM_FI_DEV_FB_USED": "dcgm-exporter (default counters)",
}
SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool is missing: run make setup (it installs it from Debian's prometheus package)")
    proc = subprocess.run([binary, *args], capture_output=True, text=True, cwd=cwd, check=False, timeout=120)
    assert proc.returncode == 0, f"promtool {' '.join(args)}:\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"
    return proc


def run_playbook(out: Path, *args: str, inventory: Path = INVENTORY, rc: int = 0) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_COLLECTIONS_PATH": str(ROOT / ".collections"),
    }
    extra = {
        "vllm_monitoring_output_dir": str(out),
        # Paths as a Prometheus on this machine would find them, so that promtool check config follows them.
        "vllm_monitoring_file_sd_dir": str(out / "external" / "file_sd"),
        "vllm_monitoring_rules_dir": str(out / "external" / "rules"),
        "vllm_monitoring_ca_file": str(out / "ca.pem"),
        "vllm_host_api_key": SECRET,
        "ansible_python_interpreter": sys.executable,
    }
    command = ["ansible-playbook", "-i", str(inventory), str(ROOT / "playbooks" / "monitoring.yml")]
    command += ["-e", json.dumps(extra), *args]
    proc = subprocess.run(command, capture_output=True, text=True, env=env, check=False, timeout=300)
    assert proc.returncode == rc, proc.stdout[-4000:] + proc.stderr[-2000:]
    return proc


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    out = tmp_path_factory.mktemp("monitoring")
    run_playbook(out, "--check")
    assert not (out / "external").exists(), "check mode wrote files"
    run_playbook(out)
    again = run_playbook(out, "--diff")
    assert re.search(r"localhost\s*:.*changed=0", again.stdout), again.stdout[-2000:]
    (out / "ca.pem").write_text("")  # promtool check config only needs the file to exist
    yield out


def vllm_metric_types() -> Dict[str, str]:
    """Every vllm:* metric the installed vLLM defines, with its type, read from vllm/v1/metrics (not a copied list)."""
    venv = os.environ.get("LLMOPS_VLLM_VENV")
    if not venv or not Path(venv).exists():
        pytest.fail("$LLMOPS_VLLM_VENV is not set or missing: run the tests through scripts/run after make setup")
    (metrics_dir,) = Path(venv).glob("lib/python3*/site-packages/vllm/v1/metrics")
    found: Dict[str, str] = {}
    pattern = re.compile(r"_(counter|gauge|histogram)_cls\(\s*name=\"(vllm:[a-z0-9_]+)\"")
    for source in metrics_dir.glob("*.py"):
        for kind, name in pattern.findall(source.read_text()):
            found[name] = kind
    assert {"vllm:num_requests_running", "vllm:kv_cache_usage_perc"} <= set(found), sorted(found)
    return found


def series_names(expr: str) -> Set[str]:
    """The metric names an expression selects: every `name{` (each query here selects with a label matcher)."""
    names = set(re.findall(r"([A-Za-z_:][A-Za-z0-9_:]*)\s*\{", expr))
    assert names, f"no selector in {expr!r}"
    return names


def check_names(exprs: List[str]) -> None:
    types = vllm_metric_types()
    exposed = {name + suffix: name for name, kind in types.items() for suffix in SUFFIXES[kind]}
    for expr in exprs:
        for name in series_names(expr):
            if name.startswith("vllm:"):
                assert name in exposed, f"{name} (in {expr!r}) is not a series the installed vLLM exposes"
            else:
                assert name in OTHER_METRICS, f"{name} (in {expr!r}) is neither vLLM's nor a known exporter's"


def rule_groups(out: Path) -> List[Dict[str, Any]]:
    return yaml.safe_load((out / "external" / "rules" / "vllm-alerts.yml").read_text())["groups"]


def dashboard_exprs(dashboard: Dict[str, Any]) -> List[str]:
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 15
    return exprs


def test_rules_load_and_are_one_source(out: Path) -> None:
    promtool("check", "rules", str(out / "external" / "rules" / "vllm-alerts.yml"))
    groups = rule_groups(out)
    assert {r["alert"] for g in groups for r in g["rules"]} == ALERTS
    rule = yaml.safe_load((out / "internal" / "prometheusrule.yml").read_text())
    assert rule["kind"] == "PrometheusRule" and rule["metadata"]["namespace"] == "monitoring"
    assert rule["spec"]["groups"] == groups  # the cluster gets exactly the hosts' rules
    by_name = {r["alert"]: r for g in groups for r in g["rules"]}
    # Thresholds are the role's defaults.
    assert "> 0.9" in by_name["VllmKvCacheNearFull"]["expr"]
    assert by_name["VllmSlowFirstToken"]["expr"].startswith("histogram_quantile(0.95,")
    assert by_name["VllmSlowFirstToken"]["expr"].endswith("> 2")


def test_each_alert_fires_on_synthetic_series(out: Path) -> None:
    spec = yaml.safe_load(TEST_SPEC.read_text())
    rules = {r["alert"]: r for g in rule_groups(out) for r in g["rules"]}
    fired = set()
    for case in spec["tests"]:
        for check in case["alert_rule_test"]:
            for alert in check["exp_alerts"]:
                fired.add(check["alertname"])
                labels = alert["exp_labels"]
                alert["exp_annotations"] = {
                    key: re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m, labels=labels: labels[m.group(1)], text)
                    for key, text in rules[check["alertname"]]["annotations"].items()
                }
    assert fired == ALERTS, "every alert must fire in the test file"
    test_file = out / "external" / "rules" / "vllm-alerts.test.yml"
    test_file.write_text(yaml.safe_dump(spec, sort_keys=False))
    result = promtool("test", "rules", str(test_file))
    assert "SUCCESS" in result.stdout + result.stderr


def test_a_quiet_instance_stays_quiet(out: Path) -> None:
    """The test file's healthy instance never appears in an expected alert, and promtool compares alerts exactly."""
    spec = yaml.safe_load(TEST_SPEC.read_text())
    instances = [
        a["exp_labels"]["instance"] for c in spec["tests"] for t in c["alert_rule_test"] for a in t["exp_alerts"]
    ]
    assert "ok:8000" not in instances
    assert any('instance="ok:8000"' in s["series"] for c in spec["tests"] for s in c["input_series"])


def test_prometheus_config_with_targets_loads(out: Path) -> None:
    promtool("check", "config", str(out / "external" / "prometheus.yml"))
    config = yaml.safe_load((out / "external" / "prometheus.yml").read_text())
    snippet = yaml.safe_load((out / "external" / "scrape_configs.yml").read_text())
    assert config["scrape_configs"] == snippet
    vllm_job = snippet[0]
    assert vllm_job["job_name"] == "vllm" and vllm_job["scheme"] == "https" and vllm_job["metrics_path"] == "/metrics"
    assert vllm_job["tls_config"] == {"ca_file": str(out / "ca.pem")}


def test_targets_are_every_instance_of_every_host(out: Path) -> None:
    hosts = yaml.safe_load((INVENTORY / "hosts.yml").read_text())["all"]["children"]["vllm_hosts"]["hosts"]
    expected = []
    for name, hv in sorted(hosts.items()):
        for inst in hv.get("vllm_host_instances", [{"name": "main", "port": 8000}]):
            expected.append((f"{hv['ansible_host']}:{inst['port']}", f"{name}:{inst['port']}", inst["name"]))
    targets = json.loads((out / "external" / "file_sd" / "vllm.json").read_text())
    got = [(t["targets"][0], t["labels"]["instance"], t["labels"]["vllm_instance"]) for t in targets]
    assert got == expected
    assert all(t["labels"]["layout"] == "external" and t["labels"]["__scheme__"] == "https" for t in targets)
    dcgm = json.loads((out / "external" / "file_sd" / "dcgm.json").read_text())
    assert [t["targets"][0] for t in dcgm] == sorted({f"{hv['ansible_host']}:9400" for hv in hosts.values()})
    for path in out.rglob("*"):
        if path.is_file():
            assert SECRET not in path.read_text(), f"the API key is in {path}"


def test_dashboard_queries_parse_and_use_real_metrics(out: Path) -> None:
    dashboard = json.loads((out / "grafana" / "vllm-dashboard.json").read_text())
    assert dashboard["schemaVersion"] >= 36
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert {"layout", "instance", "model_name"} <= set(variables)
    exprs = dashboard_exprs(dashboard)
    # Grafana's variables replaced as Grafana would, then each query loaded by promtool as a recording rule.
    concrete = []
    for expr in exprs:
        text = expr.replace("$__rate_interval", "2m")
        text = re.sub(r"\$(layout|instance|model_name)\b", ".*", text)
        assert "$" not in text, f"unknown variable in {expr!r}"
        concrete.append(text)
    rules = {
        "groups": [
            {"name": "dashboard", "rules": [{"record": f"dashboard:q{i}", "expr": e} for i, e in enumerate(concrete)]}
        ]
    }
    rule_file = out / "dashboard-queries.yml"
    rule_file.write_text(yaml.safe_dump(rules))
    promtool("check", "rules", str(rule_file))
    # Every vLLM query filters on the labels both layouts share.
    for expr in exprs:
        if "vllm:" in expr:
            assert 'layout=~"$layout"' in expr and 'instance=~"$instance"' in expr, expr
        else:
            # Only vLLM's own series carry model_name (up and the process metrics do not): filtering another series
            # on it empties the panel as soon as a model is selected (seen in a real Prometheus, test_external_fleet).
            assert "model_name" not in expr, expr
    variable_queries = [variables[n]["query"]["query"] for n in ("layout", "instance", "model_name")]
    check_names(exprs + [re.sub(r"^label_values\((.*), \w+\)$", r"\1", q) + "{}" for q in variable_queries])
    configmap = yaml.safe_load((out / "internal" / "grafana-dashboard-configmap.yml").read_text())
    assert json.loads(configmap["data"]["llmops-vllm.json"]) == dashboard


def test_rules_use_real_metrics(out: Path) -> None:
    check_names([r["expr"] for g in rule_groups(out) for r in g["rules"]])
    # process_start_time_seconds: the process collector the vLLM API server's default registry carries.
    (collector,) = Path(os.environ["LLMOPS_VLLM_VENV"]).glob(
        "lib/python3*/site-packages/prometheus_client/process_collector.py"
    )
    assert "'start_time_seconds'" in collector.read_text()


def render_vllm_k8s_service_monitor() -> Dict[str, Any]:
    # The same settings as Ansible's templating: YAML, not HTML, so no autoescaping.
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)  # noqa: S701
    env.filters["to_json"] = json.dumps
    env.filters["combine"] = lambda a, b: {**a, **b}
    template = env.from_string((ROOT / "roles" / "vllm_k8s" / "templates" / "servicemonitor.yaml.j2").read_text())
    text = template.render(
        vllm_k8s_name="vllm",
        vllm_k8s_namespace="llm",
        _vllm_k8s_all_labels={"app.kubernetes.io/name": "vllm"},
        vllm_k8s_service_monitor_labels={"release": "prom"},
        _vllm_k8s_selector={"app.kubernetes.io/name": "vllm"},
        vllm_k8s_service_monitor_interval="30s",
    )
    return yaml.safe_load(text)


def relabel(rules: List[Dict[str, Any]], meta: Dict[str, str]) -> Dict[str, str]:
    """prometheus-operator's relabelings (replace actions only, as used here) applied to discovered labels."""
    labels = copy.deepcopy(meta)
    for rule in rules:
        assert rule.get("action", "replace") == "replace"
        if "sourceLabels" in rule:
            labels[rule["targetLabel"]] = ";".join(labels.get(s, "") for s in rule["sourceLabels"])
        else:
            labels[rule["targetLabel"]] = rule["replacement"]
    return {k: v for k, v in labels.items() if not k.startswith("__")}


def test_both_layouts_label_series_alike(out: Path) -> None:
    monitor = render_vllm_k8s_service_monitor()
    assert not validate.validate_manifest(monitor)
    cluster = relabel(monitor["spec"]["endpoints"][0]["relabelings"], {"__meta_kubernetes_pod_name": "vllm-abc"})
    assert cluster == {"job": "vllm", "layout": "internal", "instance": "vllm-abc"}
    target = json.loads((out / "external" / "file_sd" / "vllm.json").read_text())[0]
    hosts = {"job": yaml.safe_load((out / "external" / "scrape_configs.yml").read_text())[0]["job_name"]}
    hosts.update({k: v for k, v in target["labels"].items() if not k.startswith("__")})
    assert {k: hosts[k] for k in cluster} == {"job": "vllm", "layout": "external", "instance": hosts["instance"]}
    # The rules and the dashboard group by exactly these labels (plus vLLM's model_name on its own series).
    for group in rule_groups(out):
        for rule in group["rules"]:
            for by in re.findall(r"by \(([^)]*)\)", rule["expr"]):
                assert {s.strip() for s in by.split(",")} - {"le"} == {"job", "layout", "instance", "model_name"}
    dcgm = yaml.safe_load((out / "internal" / "dcgm-servicemonitor.yml").read_text())
    assert not validate.validate_manifest(dcgm)
    gpu = relabel(dcgm["spec"]["endpoints"][0]["relabelings"], {"__meta_kubernetes_pod_node_name": "gpu-1"})
    assert gpu == {"job": "dcgm", "layout": "internal", "instance": "gpu-1", "host": "gpu-1"}


def test_plain_http_hosts_cpu_hosts_and_a_bad_threshold(tmp_path: Path) -> None:
    """A host without the TLS front is scraped over http, a CPU host gets no dcgm target, and a threshold that cannot
    be one fails before anything is written, naming the variable."""
    inventory = tmp_path / "hosts.yml"
    hosts = {
        "cpu-1": {"ansible_host": "10.0.0.5", "vllm_host_profile": "cpu", "vllm_host_tls": False},
        "gpu-1": {"ansible_host": "10.0.0.6", "vllm_host_instances": [{"name": "x", "port": 9000}]},
    }
    inventory.write_text(yaml.safe_dump({"all": {"children": {"vllm_hosts": {"hosts": hosts}}}}))
    out = tmp_path / "out"
    failed = run_playbook(out, "-e", "vllm_monitoring_kv_cache_threshold=90", inventory=inventory, rc=2)
    assert "vllm_monitoring_kv_cache_threshold" in failed.stdout and not out.exists()
    run_playbook(out, inventory=inventory)
    targets = json.loads((out / "external" / "file_sd" / "vllm.json").read_text())
    assert [(t["targets"], t["labels"]["__scheme__"], t["labels"]["instance"]) for t in targets] == [
        (["10.0.0.5:8000"], "http", "cpu-1:8000"),
        (["10.0.0.6:9000"], "https", "gpu-1:9000"),
    ]
    dcgm = json.loads((out / "external" / "file_sd" / "dcgm.json").read_text())
    assert [t["targets"] for t in dcgm] == [["10.0.0.6:9400"]]
