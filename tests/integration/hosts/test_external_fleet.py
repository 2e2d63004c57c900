"""The external layout as production runs it, on three real systemd hosts serving a real vLLM (CPU build).

Three nspawn test hosts get `playbooks/external.yml` with the production inventory's rollout settings
(inventories/prod: one host per batch), read from an inventory group_vars file exactly as there, then the
cases run in order on the deployed fleet:

  a first host that fails its health gate stops the rollout, and the two others are untouched ->
  the fixed run deploys one host per batch, in order -> every route of the running server, taken from
  its own OpenAPI schema, answers 401 without the key through the TLS front (certificate verified with
  the fleet's CA), /metrics only to the allowed scraper, and the engine port is unreachable from another
  host -> a hung engine (SIGSTOP) is restarted by the watchdog, which never touches a deliberately
  stopped instance -> Debian's prometheus server, started with the configuration playbooks/monitoring.yml
  generates for the fleet, scrapes every host's vLLM through the front (all targets up, every series with the
  external layout's labels), answers every query of the generated dashboard with Grafana's variables substituted
  (except the two GPU panels' DCGM_* queries: no GPU and no dcgm-exporter here), and evaluates the alert rules
  without error, none firing -> a distinct secret in every place one can be given (API key, instance
  environment, index URL credentials, Hugging Face token) appears nowhere: not in -vvv output, the JSON
  callback, unit files, `systemctl show`, the journal, any process's command line, nor in any file that
  is not root-only.
"""

from __future__ import annotations

import collections
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from fleet_support import ROOT, Fleet, booted_fleet, changed, failures
from itest_support import free_port

FIXTURES = Path(os.environ["LLMOPS_FIXTURES"])
HOSTS = ["fleet-1", "fleet-2", "fleet-3"]
KEY = "fleet-test-key-0123456789abcdef"
ENGINE_PORT = 18000  # 8000 + vllm_host_engine_port_offset
# The production inventory's rollout settings that make sense on CPU test hosts.
PROD_KEYS = ("llmops_rollout_batch", "model_sync_keep", "vllm_host_stop_timeout", "vllm_host_api_key_required")

pytestmark = pytest.mark.hosts


def prod_settings() -> dict:
    group_vars = ROOT / "inventories" / "prod" / "group_vars"
    path = group_vars / "vllm_hosts" / "main.yml"
    if not path.exists():
        path = group_vars / "vllm_hosts.yml"
    settings = yaml.safe_load(path.read_text())
    return {key: settings[key] for key in PROD_KEYS if key in settings}


@pytest.fixture(scope="module")
def fleet():
    hosts = {"vllm_hosts": HOSTS}
    for fleet in booted_fleet("fleet", hosts, wheelhouse=True, env={"LLMOPS_DEMO_API_KEY": KEY}, vllm_layer=True):
        # An inventory directory of the test's own, like inventories/prod: group_vars read by Ansible itself.
        inventory = fleet.state / "prod-settings"
        (inventory / "group_vars").mkdir(parents=True, exist_ok=True)
        (inventory / "host_vars").mkdir(parents=True, exist_ok=True)
        (inventory / "hosts.yml").write_text(yaml.safe_dump({"vllm_hosts": {"hosts": {h: None for h in HOSTS}}}))
        settings = prod_settings()
        assert settings.get("llmops_rollout_batch") == 1, (
            f"inventories/prod no longer rolls one host at a time: {settings}"
        )
        # About rollouts, the front and the watchdog: the load check before a switch is tested elsewhere
        # (tests/integration/test_model_load_check.py, the hybrid promotion of tests/k8s/test_internal_layout.py).
        settings["model_sync_load_check"] = False
        (inventory / "group_vars" / "vllm_hosts.yml").write_text(yaml.safe_dump(settings))
        fleet.inventories.append(inventory)
        yield fleet


def play_tasks(report: dict, play_name: str) -> list:
    plays = [p for p in report.get("plays", []) if p["play"]["name"] == play_name]
    return [task for play in plays for task in play["tasks"]]


DEPLOY_PLAY = "Deploy vLLM servers on the external fleet, batch by batch"


def untouched(fleet: Fleet, host: str) -> str:
    """What the deploy leaves on a host, listed; empty when the host was never touched."""
    return fleet.ssh(
        # /opt/vllm/venv is the role's link to the virtualenv it installed (or found already installed: the
        # hosts may start with it, see tests/hosts/vllm_layer.py).
        "ls -d /opt/vllm/venv /etc/vllm /srv/vllm /etc/systemd/system/vllm@.service "
        "/etc/systemd/system/vllm-proxy.service 2>/dev/null; true",
        host,
    ).strip()


def test_a_failing_first_host_stops_the_rollout_before_the_others(fleet: Fleet) -> None:
    # fleet-1 gets a context length its model cannot have: vLLM refuses to start, the health gate fails.
    host_vars = fleet.inventories[0] / "host_vars" / "fleet-1.yml"
    host_vars.write_text(
        yaml.safe_dump(
            {
                "vllm_host_server_defaults": {
                    "dtype": "float32", "max_model_len": 100000, "max_num_seqs": 4, "enforce_eager": True,
                    "kv_cache_memory_bytes": "64M",
                },
                "vllm_host_health_timeout": 30,
            }
        )
    )  # fmt: skip
    try:
        rc, out, report = fleet.playbook("external.yml")
    finally:
        host_vars.unlink()
    assert rc != 0, out[-3000:]
    assert "health gate failed on fleet-1" in failures(report), failures(report) or out[-4000:]
    deployed = {host for task in play_tasks(report, DEPLOY_PLAY) for host in task["hosts"]}
    assert deployed == {"fleet-1"}, f"the deploy play reached {sorted(deployed)} after fleet-1 failed"
    for host in HOSTS[1:]:
        assert untouched(fleet, host) == "", f"{host} was changed: {untouched(fleet, host)}"


def test_the_rollout_goes_one_host_per_batch_in_order(fleet: Fleet) -> None:
    rc, out, report = fleet.playbook("external.yml")
    assert rc == 0, failures(report) or out[-4000:]
    tasks = play_tasks(report, DEPLOY_PLAY)
    batches = [sorted(task["hosts"]) for task in tasks]
    assert all(len(hosts) == 1 for hosts in batches), f"a task ran on several hosts at once: {batches}"
    order = list(dict.fromkeys(hosts[0] for hosts in batches))
    assert order == HOSTS, order
    # Each host's batch ends before the next host's begins.
    spans = {}
    for task in tasks:
        for host in task["hosts"]:
            start, end = task["task"]["duration"]["start"], task["task"]["duration"]["end"]
            first, last = spans.get(host, (start, end))
            spans[host] = (min(first, start), max(last, end))
    for earlier, later in zip(HOSTS, HOSTS[1:]):
        assert spans[earlier][1] <= spans[later][0], f"{later} started before {earlier} finished: {spans}"
    for host in HOSTS:
        assert fleet.answer(KEY, host).strip()
    rc, out, report = fleet.playbook("external.yml")
    assert rc == 0 and changed(report) == 0, failures(report) or json.dumps(report.get("stats"))


def openapi_routes(fleet: Fleet) -> list[tuple[str, str]]:
    """(method, path) of every route the running server declares, from its own OpenAPI schema."""
    schema = json.loads(fleet.ssh(f"curl -sf http://127.0.0.1:{ENGINE_PORT}/openapi.json", HOSTS[0]))
    routes = []
    for path, methods in schema["paths"].items():
        concrete = re.sub(r"\{[^}]+\}", "some-id", path)
        routes += [
            (method.upper(), concrete) for method in methods if method in ("get", "post", "put", "delete", "patch")
        ]
    return sorted(routes)


def test_every_route_is_locked_behind_the_key(fleet: Fleet) -> None:
    routes = openapi_routes(fleet)
    assert len(routes) >= 15 and ("POST", "/v1/completions") in routes and ("POST", "/invocations") in routes, routes
    open_routes = {("GET", "/health")}
    scrape_routes = {("GET", "/metrics")}
    for method, path in routes:
        body = {} if method in ("POST", "PUT", "PATCH") else None
        status, payload = fleet.request(path, HOSTS[0], body=body, method=method)
        if (method, path) in open_routes:
            assert status == 200, f"{method} {path} without a key: HTTP {status}"
        elif (method, path) in scrape_routes:
            assert status == 200, f"{method} {path} from the allowed scraper (the controller): HTTP {status}"
        else:
            assert status == 401, f"{method} {path} without a key: HTTP {status} {str(payload)[:200]}"
            wrong, _payload = fleet.request(path, HOSTS[0], key=KEY[::-1], body=body, method=method)
            assert wrong == 401, f"{method} {path} with a wrong key: HTTP {wrong}"
    # With the key: the OpenAI routes work, vLLM's admin routes and everything outside /v1 stay closed.
    assert fleet.request("/v1/models", HOSTS[0], KEY)[0] == 200
    for method, path in [("POST", "/v1/load_lora_adapter"), ("POST", "/invocations"), ("POST", "/tokenize")]:
        status, _payload = fleet.request(path, HOSTS[0], KEY, body={}, method=method)
        assert status == 404, f"{method} {path} with the key: HTTP {status}"
    # Path tricks that could mean another route after decoding are refused before the key is even checked.
    for path in ["/v1/../invocations", "/v1/%2e%2e/tokenize", "//health/../invocations"]:
        status = fleet.ssh(
            f"curl -s -o /dev/null -w '%{{http_code}}' --path-as-is --cacert /etc/vllm/proxy/ca.pem "
            f"-H 'Authorization: Bearer {KEY}' https://127.0.0.1:8000{path}",
            HOSTS[0],
        )
        assert status == "400", f"{path}: HTTP {status}"
    # /metrics only for the allowed scrapers: fleet-2 is not one.
    status = fleet.ssh(
        f"curl -sk -o /dev/null -w '%{{http_code}}' https://{fleet.addresses[HOSTS[0]]}:8000/metrics", HOSTS[1]
    )
    assert status == "403", status
    # The engine listens on loopback only: neither another host nor the controller reaches it.
    out = fleet.ssh(f"curl -s -m 5 http://{fleet.addresses[HOSTS[0]]}:{ENGINE_PORT}/health; echo rc=$?", HOSTS[1])
    assert "rc=7" in out or "rc=28" in out, f"the engine port answered another host: {out}"
    with pytest.raises(OSError):
        socket.create_connection((fleet.addresses[HOSTS[0]], ENGINE_PORT), timeout=5).close()
    # TLS: verified with the fleet's CA; a client without it refuses the certificate.
    with pytest.raises(ssl.SSLCertVerificationError):
        context = ssl.create_default_context()
        with socket.create_connection((fleet.addresses[HOSTS[0]], 8000), timeout=5) as raw:
            context.wrap_socket(raw, server_hostname=fleet.addresses[HOSTS[0]])
    # The unit restricts the engine's peers to localhost (enforced where the kernel supports cgroup BPF).
    shown = fleet.ssh("systemctl show vllm@main -p IPAddressDeny -p IPAddressAllow -p SocketBindDeny", HOSTS[0])
    props: dict[str, set[str]] = {}
    for line in shown.splitlines():
        key, _sep, value = line.partition("=")
        props.setdefault(key, set()).update(value.split())
    assert props.get("IPAddressDeny") == {"0.0.0.0/0", "::/0"}, shown  # systemd prints them in either order
    assert props.get("IPAddressAllow") == {"127.0.0.0/8", "::1/128"}, shown
    assert props.get("SocketBindDeny"), shown


def engine_pid(fleet: Fleet, host: str) -> int:
    return int(fleet.ssh("pgrep -f '^VLLM::EngineCore'", host).split()[0])


def test_the_watchdog_restarts_a_hung_engine_and_leaves_a_stopped_one_alone(fleet: Fleet) -> None:
    host = HOSTS[2]
    restarts = int(fleet.ssh("systemctl show vllm@main -p NRestarts --value", host))
    fleet.ssh(f"kill -STOP {engine_pid(fleet, host)}", host)
    stopped_at = time.monotonic()
    # /health still answers while completions hang: what the watchdog is for.
    assert fleet.request("/health", host)[0] == 200
    recovered = None
    while time.monotonic() - stopped_at < 300:
        try:
            status, _payload = fleet.request(
                "/v1/completions", host, KEY, {"model": "tiny", "prompt": "hi", "max_tokens": 2}, timeout=5
            )
        except OSError:
            status = None
        if status == 200:
            recovered = time.monotonic() - stopped_at
            break
        time.sleep(2)
    journal = fleet.ssh("journalctl --no-pager -o cat -u vllm-watchdog@main", host)
    assert recovered is not None, f"no recovery within 300 s\n{journal[-3000:]}"
    print(f"hung engine serving again {recovered:.1f} s after SIGSTOP (watchdog defaults)")
    assert "consecutive probes failed" in journal and "killing PID" in journal, journal[-3000:]
    assert int(fleet.ssh("systemctl show vllm@main -p NRestarts --value", host)) == restarts + 1

    # A deliberate stop is not undone: after more than two probe intervals the instance is still stopped.
    fleet.ssh("systemctl stop vllm@main", host)
    time.sleep(25)
    assert fleet.ssh("systemctl is-active vllm@main || true", host).strip() == "inactive"
    fleet.ssh("systemctl start vllm@main", host)


# The real Prometheus of the monitoring test: the generated configuration's scrape (and rule evaluation) interval, and
# Grafana's $__rate_interval for the dashboard as Grafana computes it with the data source's scrape interval set to
# that: max($__interval + scrape interval, 4 x scrape interval), $__interval being 20s for the dashboard's default
# range (6 h) at about 1000 points.
SCRAPE_INTERVAL = "2s"
RATE_INTERVAL = "22s"
# The labels every series of the vLLM job carries in the external layout (docs/observability.md); vLLM's own series
# (vllm:*) carry model_name as well.
TARGET_LABELS = ("job", "layout", "instance", "host", "vllm_instance")


def prometheus_api(port: int, path: str, **params: str) -> Any:
    """The `data` of a Prometheus HTTP API answer (GET /api/v1/PATH), which must be a success."""
    url = f"http://127.0.0.1:{port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        answer = {"status": f"HTTP {exc.code}", "error": exc.read().decode(errors="replace")}
    assert answer.get("status") == "success", f"{path} {params}: {answer}"
    return answer["data"]


def grafana_regex_escape(value: str) -> str:
    """A value of a multi-value variable as Grafana's Prometheus data source writes it into a regex matcher
    (prometheusSpecialRegexEscape)."""
    value = value.replace("\\", "\\" * 4)
    return re.sub(r"[$^*{}\[\]'+?.()|]", lambda m: "\\" * 2 + m.group(0), value)


def interpolate(expr: str, variables: dict, selection: dict) -> str:
    """A dashboard query with Grafana's variables replaced: a variable selected as All gets its allValue, a selection
    its escaped value, or `(a|b)` for several."""

    def value(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        chosen = selection[name]
        if chosen is None:
            return variables[name]["allValue"]
        escaped = [grafana_regex_escape(v) for v in chosen]
        return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"

    text = expr.replace("$__rate_interval", RATE_INTERVAL)
    text = re.sub(r"\$\{(\w+)\}|\$(\w+)", value, text)
    assert "$" not in text, f"a variable left in {text!r}"
    return text


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r"([A-Za-z_:][A-Za-z0-9_:]*)\s*\{", expr))


def all_serving(fleet: Fleet) -> None:
    """Every host deployed and answering a completion through its front. The test run on its own (-k) deploys the
    fleet first; an instance an earlier test left stopped is started, one still loading is waited for."""
    deployed = [fleet.ssh("test -e /etc/systemd/system/vllm@.service && echo yes; true", h).strip() for h in HOSTS]
    if deployed != ["yes"] * len(HOSTS):
        rc, out, report = fleet.playbook("external.yml")
        assert rc == 0, failures(report) or out[-4000:]
    deadline = time.monotonic() + 300
    for host in HOSTS:
        fleet.ssh("systemctl start vllm@main", host)
        while True:
            try:
                status, payload = fleet.request(
                    "/v1/completions", host, KEY, {"model": "tiny", "prompt": "hi", "max_tokens": 2}, timeout=10
                )
            except OSError as exc:
                status, payload = None, exc
            if status == 200:
                break
            assert time.monotonic() < deadline, f"{host} does not serve: {status} {str(payload)[:300]}"
            time.sleep(2)


def test_a_real_prometheus_scrapes_the_fleet_and_answers_every_dashboard_query(fleet: Fleet, tmp_path: Path) -> None:
    """Debian's prometheus server, started here with the configuration playbooks/monitoring.yml generates for this
    fleet (file_sd targets, the fleet's CA, the rule file; scrape interval 2s), scrapes every host's vLLM through its
    TLS front (the controller is in the demo inventory's vllm_host_metrics_allow) while completions go through the
    fronts. Every target is up; every series of the job carries job, layout, instance, host and vllm_instance, vLLM's
    own series model_name too; the dashboard's variables resolve to this fleet's layout, instances and model; every
    dashboard query, with the variables as Grafana substitutes them (All, then a selection of two instances), returns
    a series for each selected instance, except the two GPU panels', which read dcgm-exporter's DCGM_* metrics and
    cannot have data here (no GPU, no exporter; the hosts are vllm_host_profile cpu, so there is no dcgm target
    either); the six alert rules evaluate without error on the real series and none fires for the healthy fleet.
    """
    prometheus = shutil.which("prometheus")
    assert prometheus, "prometheus is missing: run make setup (it unpacks it from Debian's prometheus package)"
    all_serving(fleet)
    out = fleet.state / "monitoring"
    shutil.rmtree(out, ignore_errors=True)
    rc, output, report = fleet.playbook(
        "monitoring.yml",
        vllm_monitoring_output_dir=str(out),
        vllm_monitoring_file_sd_dir=str(out / "external" / "file_sd"),
        vllm_monitoring_rules_dir=str(out / "external" / "rules"),
        vllm_monitoring_ca_file=str(fleet.ca),
        vllm_monitoring_scrape_interval=SCRAPE_INTERVAL,
    )
    assert rc == 0, failures(report) or output[-4000:]
    assert json.loads((out / "external" / "file_sd" / "dcgm.json").read_text()) == []  # CPU hosts: no exporter
    dashboard = json.loads((out / "grafana" / "vllm-dashboard.json").read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"] if v["type"] == "query"}
    queries = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    gpu_queries = [q for q in queries if any(n.startswith("DCGM_") for n in metric_names(q))]
    assert len(gpu_queries) == 2 and not any("vllm:" in q for q in gpu_queries), gpu_queries
    vllm_queries = [q for q in queries if q not in gpu_queries]
    assert len(vllm_queries) >= 15, vllm_queries
    instances = sorted(f"{h}:8000" for h in HOSTS)

    port = free_port()
    log_path = tmp_path / "prometheus.log"
    stop = threading.Event()
    served: collections.Counter = collections.Counter()
    errors: list[str] = []

    def traffic() -> None:
        """Completions through every host's front until told to stop, so that rates and histograms have samples."""
        while not stop.is_set():
            for host in HOSTS:
                try:
                    status, payload = fleet.request(
                        "/v1/completions", host, KEY,
                        {"model": "tiny", "prompt": "hello world", "max_tokens": 8, "temperature": 0},
                    )  # fmt: skip
                except OSError as exc:
                    status, payload = None, exc
                if status == 200:
                    served[host] += 1
                else:
                    errors.append(f"{host}: {status} {str(payload)[:200]}")

    with log_path.open("w") as log:
        server = subprocess.Popen(
            [prometheus, f"--config.file={out / 'external' / 'prometheus.yml'}",
             f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    sender = threading.Thread(target=traffic, daemon=True)
    sender.start()
    try:

        def alive() -> None:
            assert server.poll() is None, f"prometheus exited {server.returncode}:\n{log_path.read_text()[-3000:]}"

        # Every target up: scraped through the front, TLS verified with the fleet's CA, /metrics allowed.
        deadline = time.monotonic() + 120
        while True:
            alive()
            try:
                targets = prometheus_api(port, "targets", state="active")["activeTargets"]
            except (OSError, AssertionError):
                targets = []
            if len(targets) == len(HOSTS) and all(t["health"] == "up" for t in targets):
                break
            if time.monotonic() > deadline:
                break
            time.sleep(1)
        health = {t["labels"].get("instance"): (t["health"], t["lastError"], t["scrapeUrl"]) for t in targets}
        assert sorted(health) == instances, health
        assert all(state == "up" for state, _error, _url in health.values()), f"targets not up: {health}"
        for host in HOSTS:
            assert health[f"{host}:8000"][2] == f"https://{fleet.addresses[host]}:8000/metrics", health

        # The dashboard's variables, resolved as Grafana does (label_values -> the label values API), with All.
        everything = {name: None for name in variables}
        expected_values = {"layout": ["external"], "instance": instances, "model_name": ["tiny"]}
        for name, variable in variables.items():
            match = re.fullmatch(r"label_values\((.*), (\w+)\)", variable["query"]["query"])
            assert match, variable["query"]
            selector = interpolate(match.group(1), variables, everything)
            deadline = time.monotonic() + 60
            while True:
                values = prometheus_api(port, f"label/{match.group(2)}/values", **{"match[]": selector})
                if values == expected_values[name] or time.monotonic() > deadline:
                    break
                time.sleep(1)
            assert values == expected_values[name], f"variable {name} ({selector}): {values}"

        # Every dashboard query returns a series for each selected instance: all of them, then two of them.
        selections = [
            (everything, instances),
            ({"layout": ["external"], "instance": instances[:2], "model_name": ["tiny"]}, instances[:2]),
        ]
        deadline = time.monotonic() + 90
        while True:
            alive()
            missing = {}
            for selection, expected in selections:
                for query in vllm_queries:
                    concrete = interpolate(query, variables, selection)
                    result = prometheus_api(port, "query", query=concrete)["result"]
                    got = sorted({series["metric"].get("instance", "") for series in result})
                    if got != expected:
                        missing[concrete] = got
            if not missing or time.monotonic() > deadline:
                break
            time.sleep(2)
        assert not missing, "dashboard queries without a series for each selected instance:\n" + "\n".join(
            f"{query}\n    -> instances {got}" for query, got in missing.items()
        )

        assert not errors, f"completions failed while Prometheus scraped: {errors[:5]}"

        # Every scraped series of the job (not the ALERTS series the rules write) carries the layout's labels.
        series = prometheus_api(port, "query", query='{job="vllm", __name__!~"ALERTS|ALERTS_FOR_STATE"}')["result"]
        assert any(s["metric"]["__name__"].startswith("vllm:") for s in series), series[:5]
        wrong = []
        for labels in (s["metric"] for s in series):
            host = labels.get("host")
            expected_labels = {
                "job": "vllm", "layout": "external", "instance": f"{host}:8000", "host": host, "vllm_instance": "main",
            }  # fmt: skip
            # vLLM's info series (vllm:cache_config_info: the engine's cache configuration) name no model.
            if labels["__name__"].startswith("vllm:") and not labels["__name__"].endswith("_info"):
                expected_labels["model_name"] = "tiny"
            if host not in HOSTS or {k: labels.get(k) for k in expected_labels} != expected_labels:
                wrong.append(labels)
        assert not wrong, f"{len(wrong)} of {len(series)} series lack the layout's labels, e.g. {wrong[:3]}"
        assert {s["metric"]["host"] for s in series} == set(HOSTS)

        # The alert rules, evaluated by this Prometheus on the real series: loaded, evaluated without error, and
        # none firing (a fresh Prometheus has seen one start time per instance and no target down for 2m). VllmHung
        # may be pending, never firing: a request is running and this Prometheus has not yet seen one complete on
        # that instance (seen on a loaded machine, requests taking seconds); its `for: 2m` is what waits that out.
        deadline = time.monotonic() + 30
        while True:
            rules = [r for g in prometheus_api(port, "rules")["groups"] for r in g["rules"]]
            if all(r["health"] == "ok" for r in rules) or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert sorted(r["name"] for r in rules) == sorted(
            ["VllmInstanceDown", "VllmHung", "VllmQueueGrowing", "VllmKvCacheNearFull", "VllmSlowFirstToken",
             "VllmRestarting"]
        ), rules  # fmt: skip
        assert all(r["health"] == "ok" for r in rules), [(r["name"], r["health"], r.get("lastError")) for r in rules]
        alerts = prometheus_api(port, "alerts")["alerts"]
        firing = [(a["labels"]["alertname"], a["labels"].get("instance")) for a in alerts if a["state"] == "firing"]
        assert not firing, f"alerts firing for a healthy fleet: {firing}"
        pending = [(a["labels"]["alertname"], a["labels"].get("instance"), a.get("activeAt")) for a in alerts]
        state = {
            what: {s["metric"]["instance"]: s["value"][1] for s in prometheus_api(port, "query", query=query)["result"]}
            for what, query in [
                ("succeeded in 10m", 'sum by (instance) (increase(vllm:request_success_total{job="vllm"}[10m]))'),
                ("running", 'sum by (instance) (vllm:num_requests_running{job="vllm"})'),
            ]
        }
        print(f"pending alerts: {pending}; {state}; completions served: {dict(served)}")
    finally:
        stop.set()
        sender.join(timeout=120)
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=30)
    assert not errors, f"completions failed while Prometheus scraped: {errors[:5]}"
    assert all(served[host] for host in HOSTS), served


SECRET_PLACES = ("vllm_host_api_key", "instance environment", "index URL credentials", "vllm_host_hf_token")


def secrets(tag: str) -> dict[str, str]:
    return {place: f"{tag}{i}x{os.urandom(6).hex()}secret" for i, place in enumerate(SECRET_PLACES)}


def secret_vars(fleet: Fleet, values: dict[str, str], remove: list[str]) -> dict:
    return {
        "vllm_host_api_key": values["vllm_host_api_key"],
        "vllm_host_hf_token": values["vllm_host_hf_token"],
        "vllm_host_instances": [
            {"name": "main", "port": 8000, "environment": {"LLMOPS_TEST_SECRET": values["instance environment"]}}
        ],
        "vllm_host_pip_index_url": f"http://llmops:{values['index URL credentials']}@10.200.0.1:8765/simple/",
        # A different list of packages to remove makes the role run pip again, with the index configured.
        "vllm_host_pip_remove": remove,
    }  # fmt: skip


def surfaces(fleet: Fleet, host: str) -> str:
    return fleet.ssh(
        "systemctl cat vllm@main vllm-proxy vllm-watchdog@main.service vllm-watchdog@main.timer vllm-failed@main; "
        "systemctl show vllm@main vllm-proxy vllm-watchdog@main.service; journalctl --no-pager -o verbose; "
        "for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < $f 2>/dev/null; echo; done | "
        "grep -v '^$'; true",
        host,
    )


def files_holding(fleet: Fleet, host: str, secrets: list[str]) -> dict[str, list[str]]:
    """secret -> "mode owner path" of every file on the host that holds it. One scan of the file systems for all
    of them (the vLLM virtualenv alone is over a GiB), then each file found is searched for each secret."""
    patterns = " ".join(f"-e '{secret}'" for secret in secrets)
    out = fleet.ssh(
        f"grep -rlsF --exclude-dir=proc --exclude-dir=sys {patterns} /etc /opt /var /srv /run /root /home /tmp | "
        "while read -r f; do for s in " + " ".join(f"'{secret}'" for secret in secrets) + "; do "
        'grep -qsF -e "$s" "$f" && echo "$s $(stat -c \'%a %U %n\' "$f")"; done; done; true',
        host,
    )
    found: dict[str, list[str]] = {secret: [] for secret in secrets}
    for line in out.splitlines():
        secret, entry = line.split(" ", 1)
        found[secret].append(entry)
    return found


def test_no_secret_reaches_any_output(fleet: Fleet) -> None:
    host = HOSTS[1]
    verbose, report_run = secrets("vvv"), secrets("json")
    rc, out_verbose, _report = fleet.playbook(
        "external.yml", "-vvv", "--limit", host, callback="ansible.builtin.default",
        **secret_vars(fleet, verbose, ["llmops-no-such-package-a"]),
    )  # fmt: skip
    assert rc == 0, out_verbose[-4000:]
    rc, out_json, report = fleet.playbook(
        "external.yml", "--limit", host, **secret_vars(fleet, report_run, ["llmops-no-such-package-b"])
    )
    assert rc == 0, failures(report) or out_json[-4000:]
    assert fleet.answer(report_run["vllm_host_api_key"], host).strip()
    assert "pip" in out_verbose and "PIP_CONFIG_FILE" in out_verbose, "pip did not run in the -vvv run"
    seen = surfaces(fleet, host)
    holding = files_holding(fleet, host, [*verbose.values(), *report_run.values()])
    leaks = []
    for values in (verbose, report_run):
        for place, secret in values.items():
            for where, text in (
                ("-vvv output", out_verbose),
                ("JSON callback output", out_json),
                ("host surfaces", seen),
            ):
                if secret in text:
                    leaks.append(f"{place} in the {where}")
            for entry in holding[secret]:
                mode, owner, path = entry.split(" ", 2)
                if mode != "600" or owner != "root":
                    leaks.append(f"{place} in {path} (mode {mode}, owner {owner})")
    assert not leaks, leaks
    # The secrets do live where they belong: root-only files.
    assert holding[report_run["vllm_host_api_key"]], "the API key is in no file at all"
