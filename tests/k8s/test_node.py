"""The test node (tests/k8s/node.py) makes workloads run against the API emulator: real processes in
their own network namespaces, with the volumes, env, probes, Services and the Job/Deployment status
logic the roles read. Each test starts an emulator and a node of its own (root, ip netns, veth)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List

import emulator as emu
import node
import pytest
from k8s_harness import Emulator, run_playbook, wait_for

PYTHON_BIN = str(Path(sys.executable).parent)
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class Cluster:
    """An emulator with a running node."""

    api: Emulator
    state_dir: Path
    pidfile: Path
    images: Path
    info: Dict[str, Any]

    def namespace(self, name: str) -> str:
        self.api.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        return name

    def pods(self, ns: str, selector: str = "") -> List[Dict[str, Any]]:
        query = f"?labelSelector={urllib.request.quote(selector)}" if selector else ""
        return self.api.items(f"/api/v1/namespaces/{ns}/pods{query}")

    def log(self, ns: str, pod: str, tail: int = 0) -> str:
        query = f"?tailLines={tail}" if tail else ""
        with NO_PROXY.open(f"{self.api.url}/api/v1/namespaces/{ns}/pods/{pod}/log{query}", timeout=10) as response:
            assert response.headers["Content-Type"].startswith("text/plain")
            return response.read().decode()

    def node_log(self) -> str:
        return (self.state_dir / "node.log").read_text()

    def restart(self) -> None:
        """Stop the node and start a new one on the same emulator and state dir."""
        node.stop_background(self.pidfile)
        self.info = node.start_background(self.api.kubeconfig, self.state_dir, self.images, self.pidfile)


def processes_with(marker: str) -> List[int]:
    """Live processes whose command line contains ``marker``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in cmdline and state != "Z":
            found.append(int(entry))
    return found


def host_leftovers(prefix: str) -> List[str]:
    """Whatever of a node named ``prefix`` is still on the host: netns, links, /etc/netns dirs."""
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    found = [f"netns {line.split()[0]}" for line in netns.splitlines() if line.startswith(prefix)]
    found += [f"link {line.split(':')[1].strip()}" for line in links.splitlines() if f" {prefix}" in line]
    if Path("/etc/netns").is_dir():
        found += [f"/etc/netns/{d}" for d in os.listdir("/etc/netns") if d.startswith(prefix)]
    return found


def conditions(obj: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("status") == "True"}


def finished_job(cluster: Cluster, ns: str, name: str, timeout: float = 30.0) -> Dict[str, Any]:
    def done():
        job = cluster.api.get(f"/apis/batch/v1/namespaces/{ns}/jobs/{name}")
        return job if {"Complete", "Failed"} & set(conditions(job)) else None

    return wait_for(f"job {ns}/{name} to finish", done, timeout)


def job(name: str, container: Dict[str, Any], **spec: Any) -> Dict[str, Any]:
    pod_spec = {"restartPolicy": "Never", "containers": [{"name": "main", **container}]}
    pod_spec.update(spec.pop("pod", {}))
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {**spec, "template": {"metadata": {"labels": {"app": name}}, "spec": pod_spec}},
    }


def deployment(name: str, container: Dict[str, Any], replicas: int = 1, **pod: Any) -> Dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": name, **container}], **pod},
            },
        },
    }


def deployment_ready(deploy: Dict[str, Any]) -> bool:
    """kubernetes.core 6.2's waiter (module_utils/k8s/waiter.py deployment_ready), on a plain dict."""
    status = deploy.get("status") or {}
    return bool(
        status
        and deploy["spec"].get("replicas") == (status.get("replicas") or 0)
        and status.get("availableReplicas") == status.get("replicas")
        and status.get("observedGeneration") == deploy["metadata"]["generation"]
        and not status.get("unavailableReplicas")
    )


def http_server(directory: Path) -> Dict[str, Any]:
    """A container serving ``directory`` on port 8080 (the directory doubles as a /proc marker)."""
    return {
        "image": "local/python:3.11",
        "command": ["python", "-m", "http.server", "8080", "--directory", str(directory)],
        "ports": [{"name": "http", "containerPort": 8080}],
    }


@pytest.fixture
def cluster(k8s_emulator: Emulator, tmp_path: Path):
    images = tmp_path / "images.json"
    images.write_text(
        json.dumps(
            [
                {"match": "^local/python", "path": [PYTHON_BIN], "env": {"PYTHONUNBUFFERED": "1"}},
                {"match": "^local/busybox", "path": []},
            ]
        )
    )
    state_dir, pidfile = tmp_path / "node", tmp_path / "node.pid"
    info = node.start_background(k8s_emulator.kubeconfig, state_dir, images, pidfile)
    try:
        running = Cluster(k8s_emulator, state_dir, pidfile, images, info)
        yield running
    finally:
        node.stop_background(pidfile)
        assert host_leftovers(info["prefix"]) == []
        assert host_leftovers(running.info["prefix"]) == []


def test_a_job_runs_with_its_volumes_env_and_logs(cluster: Cluster, tmp_path: Path) -> None:
    ns = cluster.namespace("train")
    api = cluster.api
    api.create(f"/api/v1/namespaces/{ns}/persistentvolumeclaims", {
        "metadata": {"name": "storage"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    })  # fmt: skip
    # The operator pre-fills the claim, as with a real PV.
    claim = cluster.state_dir / "pvc" / ns / "storage"
    claim.mkdir(parents=True)
    (claim / "dataset.txt").write_text("rows\n")
    api.create(f"/api/v1/namespaces/{ns}/configmaps", {"metadata": {"name": "cfg"}, "data": {"greeting": "hello\n"}})
    api.create(f"/api/v1/namespaces/{ns}/secrets", {"metadata": {"name": "creds"}, "stringData": {"token": "s3cr3t"}})
    script = textwrap.dedent(
        """\
        set -e
        cat /config/greeting > /data/out.txt
        echo "token=$TOKEN pod=$POD_NAME file=$(GREETING_FILE)" 'literal=$$(GREETING_FILE)' >> /data/out.txt
        cat /data/dataset.txt >> /data/out.txt
        env | sort > /data/env.txt
        stat -c %a /secret/token > /data/secret-mode.txt
        (echo written > /config/should-fail) 2>/dev/null || echo "config is read-only"
        echo scratch > /tmp/scratch.txt && ls /tmp > /data/tmp-listing.txt
        pwd > /data/pwd.txt
        echo "job log line"
        """
    )
    container = {
        "image": "local/busybox:1.36",
        "command": ["sh", "-c", script],
        "env": [
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "GREETING_FILE", "value": "/config/greeting"},
        ],
        "volumeMounts": [
            {"name": "storage", "mountPath": "/data"},
            {"name": "config", "mountPath": "/config", "readOnly": True},
            {"name": "secret", "mountPath": "/secret"},
            # As both roles do: /tmp is an emptyDir (mounted before /data, whose source is under /tmp here).
            {"name": "tmp", "mountPath": "/tmp"},
        ],
        "workingDir": "/data/work",  # created in the volume, as a runtime does
    }
    volumes = [
        {"name": "storage", "persistentVolumeClaim": {"claimName": "storage"}},
        {"name": "config", "configMap": {"name": "cfg"}},
        {"name": "secret", "secret": {"secretName": "creds"}},
        {"name": "tmp", "emptyDir": {}},
    ]
    api.create(f"/apis/batch/v1/namespaces/{ns}/jobs", job("write", container, pod={"volumes": volumes}))

    done = finished_job(cluster, ns, "write")
    assert "Complete" in conditions(done), done["status"]
    assert done["status"]["succeeded"] == 1 and "failed" not in done["status"] and done["status"]["completionTime"]
    (pod,) = cluster.pods(ns, "job-name=write")
    assert pod["status"]["phase"] == "Succeeded"
    assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
    labels = pod["metadata"]["labels"]
    uid = done["metadata"]["uid"]
    assert labels["app"] == "write" and labels["batch.kubernetes.io/job-name"] == "write"
    assert labels["controller-uid"] == labels["batch.kubernetes.io/controller-uid"] == uid
    assert pod["metadata"]["ownerReferences"][0]["uid"] == uid and pod["metadata"]["ownerReferences"][0]["controller"]
    assert pod["metadata"]["name"].startswith("write-") and len(pod["metadata"]["name"]) == len("write-") + 5
    name = pod["metadata"]["name"]

    out = (claim / "out.txt").read_text()
    assert out == f"hello\ntoken=s3cr3t pod={name} file=/config/greeting literal=$(GREETING_FILE)\nrows\n"
    env = dict(line.split("=", 1) for line in (claim / "env.txt").read_text().splitlines())
    # Only what the spec and the image mapping give: nothing of the node's own environment.
    assert env["PATH"] == "/usr/local/bin:/usr/bin:/bin" and env["HOSTNAME"] == name
    assert not [k for k in env if k.startswith(("LLMOPS_", "VIRTUAL_ENV", "PYTEST"))], env
    assert (claim / "secret-mode.txt").read_text().strip() == "400"
    assert (claim / "tmp-listing.txt").read_text() == "scratch.txt\n", "the pod's /tmp is its own emptyDir"
    assert (claim / "pwd.txt").read_text() == "/data/work\n" and (claim / "work").is_dir()
    assert not Path("/data/work").exists()
    assert api.get(f"/api/v1/namespaces/{ns}/persistentvolumeclaims/storage")["status"]["phase"] == "Bound"

    assert cluster.log(ns, name) == "config is read-only\njob log line\n"
    assert cluster.log(ns, name, tail=1) == "job log line\n"
    from kubernetes import client, config

    core = client.CoreV1Api(config.new_client_from_config(str(api.kubeconfig)))
    assert core.read_namespaced_pod_log(name, ns, tail_lines=1) == "job log line\n"
    with pytest.raises(client.ApiException) as missing:
        core.read_namespaced_pod_log("nope", ns)
    assert missing.value.status == 404 and json.loads(missing.value.body)["kind"] == "Status"
    assert f"job {ns}/write complete" in cluster.node_log()


def test_a_failing_job_is_retried_up_to_its_backoff_limit(cluster: Cluster) -> None:
    ns = cluster.namespace("fail")
    marker = f"boom-{uuid.uuid4().hex[:8]}"
    container = {"image": "local/busybox", "command": ["sh", "-c", f"echo {marker} >&2; exit 3"]}
    cluster.api.create(f"/apis/batch/v1/namespaces/{ns}/jobs", job("crash", container, backoffLimit=1))

    done = finished_job(cluster, ns, "crash")
    failed = conditions(done)["Failed"]
    assert failed["reason"] == "BackoffLimitExceeded" and "backoff limit" in failed["message"]
    assert "Complete" not in conditions(done) and conditions(done)["FailureTarget"]["reason"] == "BackoffLimitExceeded"
    assert done["status"]["failed"] == 2 and "active" not in done["status"]
    pods = cluster.pods(ns, "job-name=crash")
    assert len(pods) == 2
    for pod in pods:
        assert pod["status"]["phase"] == "Failed"
        terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
        assert terminated["exitCode"] == 3 and terminated["reason"] == "Error"
    newest = max(pods, key=lambda p: p["status"]["containerStatuses"][0]["state"]["terminated"]["finishedAt"])
    assert cluster.log(ns, newest["metadata"]["name"]) == f"{marker}\n"

    # A node restart (same state dir) does not run a finished Job again.
    cluster.restart()
    time.sleep(2)
    assert len(cluster.pods(ns, "job-name=crash")) == 2
    assert cluster.api.get(f"/apis/batch/v1/namespaces/{ns}/jobs/crash")["status"] == done["status"]
    assert cluster.node_log().count("created pod crash-") == 2


def test_active_deadline_kills_the_job(cluster: Cluster) -> None:
    ns = cluster.namespace("slow")
    marker = f"300.{uuid.uuid4().int % 10**6}"
    cluster.api.create(
        f"/apis/batch/v1/namespaces/{ns}/jobs",
        job("sleeper", {"image": "local/busybox", "command": ["sleep", marker]}, activeDeadlineSeconds=2),
    )
    wait_for("the sleep to run", lambda: processes_with(f"sleep {marker}"))
    done = finished_job(cluster, ns, "sleeper")
    failed = conditions(done)["Failed"]
    assert failed["reason"] == "DeadlineExceeded" and "deadline" in failed["message"]
    assert done["status"]["failed"] == 1 and "active" not in done["status"]
    # The Failed condition comes once the pod's processes are gone (Kubernetes >= 1.31 semantics).
    assert processes_with(f"sleep {marker}") == []
    assert cluster.pods(ns, "job-name=sleeper") == []


def test_pods_wait_for_images_and_config_like_the_kubelet(cluster: Cluster) -> None:
    ns = cluster.namespace("pending")
    api = cluster.api
    api.create(
        f"/apis/batch/v1/namespaces/{ns}/jobs",
        job("pull", {"image": "registry.invalid/team/trainer:9.9", "command": ["true"]}, backoffLimit=0),
    )
    standalone = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "needs-config", "labels": {"app": "standalone"}},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "main",
                    "image": "local/busybox",
                    "command": ["sh", "-c", 'cat /cfg/mode; echo " $KEY"'],
                    "env": [{"name": "KEY", "valueFrom": {"secretKeyRef": {"name": "later", "key": "key"}}}],
                    "volumeMounts": [{"name": "cfg", "mountPath": "/cfg"}],
                }
            ],
            "volumes": [{"name": "cfg", "configMap": {"name": "later"}}],
        },
    }
    api.create(f"/api/v1/namespaces/{ns}/pods", standalone)
    host_path = {**standalone, "metadata": {"name": "host-path"}}
    host_path["spec"] = {**standalone["spec"], "volumes": [{"name": "cfg", "hostPath": {"path": "/etc"}}]}
    api.create(f"/api/v1/namespaces/{ns}/pods", host_path)
    pod_path = f"/api/v1/namespaces/{ns}/pods"

    def waiting(name: str, reasons: tuple) -> Any:
        pod = api.get(f"{pod_path}/{name}")
        state = ((pod.get("status") or {}).get("containerStatuses") or [{}])[0].get("state", {})
        return state["waiting"] if state.get("waiting", {}).get("reason") in reasons else None

    pull_pod = wait_for("the Job's pod", lambda: cluster.pods(ns, "job-name=pull"))[0]["metadata"]["name"]
    pulling = wait_for("an image pull error", lambda: waiting(pull_pod, ("ErrImagePull", "ImagePullBackOff")))
    assert "registry.invalid/team/trainer:9.9" in pulling["message"]
    assert cluster.log(ns, pull_pod) == ""  # the pod exists, it has no log yet
    mount = wait_for("a FailedMount", lambda: waiting("needs-config", ("FailedMount",)))
    assert 'configmap "later" not found' in mount["message"]
    assert api.get(f"{pod_path}/needs-config")["status"]["phase"] == "Pending"
    failed = wait_for("the hostPath pod to fail", lambda: api.get(f"{pod_path}/host-path")["status"].get("reason"))
    assert failed == "UnsupportedVolume" and api.get(f"{pod_path}/host-path")["status"]["phase"] == "Failed"

    api.create(f"/api/v1/namespaces/{ns}/configmaps", {"metadata": {"name": "later"}, "data": {"mode": "fast"}})
    config_error = wait_for(
        "a CreateContainerConfigError", lambda: waiting("needs-config", ("CreateContainerConfigError",))
    )
    assert config_error["message"] == 'secret "later" not found'
    api.create(f"/api/v1/namespaces/{ns}/secrets", {"metadata": {"name": "later"}, "stringData": {"key": "v1"}})
    wait_for(
        "the standalone pod to succeed", lambda: api.get(f"{pod_path}/needs-config")["status"]["phase"] == "Succeeded"
    )
    assert cluster.log(ns, "needs-config") == "fast v1\n"

    # Still pulling, several seconds on: the Job is active, not failed (an image error is no pod failure).
    pull_job = api.get(f"/apis/batch/v1/namespaces/{ns}/jobs/pull")
    assert pull_job["status"]["active"] == 1 and "failed" not in pull_job["status"], pull_job["status"]
    assert not conditions(pull_job)
    assert api.get(f"{pod_path}/{pull_pod}")["status"]["phase"] == "Pending"


WAIT_PLAY = """\
- hosts: localhost
  connection: local
  gather_facts: false
  vars:
    ansible_python_interpreter: "{{ ansible_playbook_python }}"
  tasks:
    - name: Apply the Deployment and wait for it
      kubernetes.core.k8s:
        kubeconfig: KUBECONFIG
        state: present
        definition: "{{ lookup('ansible.builtin.file', 'deployment.json') | from_json }}"
        wait: true
        wait_timeout: 60
        wait_sleep: 1

    - name: Read the log of the Deployment's pod
      kubernetes.core.k8s_log:
        kubeconfig: KUBECONFIG
        api_version: apps/v1
        kind: Deployment
        namespace: serve
        name: web
        tail_lines: 5
      register: web_log
      until: web_log.log_lines | select('search', 'GET /hello.txt') | list | length > 0
      retries: 10
      delay: 1
"""


def test_a_deployment_serves_through_its_service_rolls_and_scales(cluster: Cluster, tmp_path: Path) -> None:
    ns = cluster.namespace("serve")
    api = cluster.api
    www = tmp_path / f"www-{uuid.uuid4().hex[:8]}"
    www.mkdir()
    (www / "hello.txt").write_text("hello from the pod\n")
    container = {
        **http_server(www),
        "readinessProbe": {"httpGet": {"path": "/hello.txt", "port": "http"}, "periodSeconds": 1},
        "startupProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1, "failureThreshold": 30},
    }
    web = {**deployment("web", container), "metadata": {"name": "web", "namespace": ns}}
    api.create(f"/api/v1/namespaces/{ns}/services", {
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
    })  # fmt: skip

    # kubernetes.core's own `wait: true` returns once the pod is ready, and not before.
    (tmp_path / "deployment.json").write_text(json.dumps(web))
    (tmp_path / "wait.yml").write_text(WAIT_PLAY.replace("KUBECONFIG", str(api.kubeconfig)))
    played = run_playbook(tmp_path / "wait.yml", cwd=tmp_path)
    assert played.rc == 0, played.output[-3000:]
    (read,) = played.results("Read the log of the Deployment's pod")
    assert '"GET /hello.txt HTTP/1.1" 200' in read["log"]  # the readiness probe's requests, as http.server logs them
    (pod,) = cluster.pods(ns, "app=web")
    assert conditions(pod)["Ready"] and pod["status"]["phase"] == "Running"
    first_hash = pod["metadata"]["labels"]["pod-template-hash"]
    assert pod["metadata"]["name"].startswith(f"web-{first_hash}-")
    assert pod["metadata"]["ownerReferences"][0]["kind"] == "Deployment"

    # The Service: by VIP from the host, by name from a pod of the namespace.
    service = api.get(f"/api/v1/namespaces/{ns}/services/web")
    assert "clusterIP" not in service["spec"], "the node must not write Service objects"
    vip, ports = node.service_address(cluster.state_dir, ns, "web")
    assert ports == {"http": 80} and vip.startswith(cluster.info["service_cidr"].rsplit(".", 1)[0])
    with NO_PROXY.open(f"http://{vip}/hello.txt", timeout=5) as response:
        assert response.read() == b"hello from the pod\n"
    fetch = (
        "import urllib.request as u\n"
        "for url in ('http://web.serve.svc/hello.txt', 'http://web/hello.txt', 'http://web.serve.svc.cluster.local/hello.txt'):\n"
        "    print(url, u.urlopen(url, timeout=5).read().decode().strip())\n"
    )
    client = {"image": "local/python:3.11", "command": ["python", "-c", fetch]}
    api.create(f"/apis/batch/v1/namespaces/{ns}/jobs", job("client", client, backoffLimit=0))
    done = finished_job(cluster, ns, "client")
    client_pod = cluster.pods(ns, "job-name=client")[0]["metadata"]["name"]
    assert "Complete" in conditions(done), cluster.log(ns, client_pod)
    assert cluster.log(ns, client_pod).count("hello from the pod") == 3
    assert api.get(f"/api/v1/namespaces/{ns}/services/web") == service

    # A Service created later shows up in the running pod's own /etc/hosts (rewritten in place).
    (server_pid,) = processes_with(str(www))
    pod_hosts = Path(f"/proc/{server_pid}/root/etc/hosts")
    assert f"{vip}\tweb web.serve web.serve.svc web.serve.svc.cluster.local" in pod_hosts.read_text()
    api.create(f"/api/v1/namespaces/{ns}/services", {
        "metadata": {"name": "late"}, "spec": {"selector": {"app": "none"}, "ports": [{"port": 81}]},
    })  # fmt: skip
    wait_for("the new name in the pod", lambda: " late.serve.svc " in pod_hosts.read_text())

    # A template change rolls to a new pod; the waiter passes only once the new pod is the ready one.
    path = f"/apis/apps/v1/namespaces/{ns}/deployments/web"
    patch = {"spec": {"template": {"metadata": {"annotations": {"restarted-at": "now"}}}}}
    emu.request(api.url, "PATCH", path, patch, "application/merge-patch+json")
    assert not deployment_ready(api.get(path))
    wait_for("the rollout", lambda: deployment_ready(api.get(path)))
    (rolled,) = cluster.pods(ns, "app=web")
    assert rolled["metadata"]["labels"]["pod-template-hash"] != first_hash
    assert rolled["metadata"]["name"] != pod["metadata"]["name"] and conditions(rolled)["Ready"]
    assert api.get(path)["status"]["updatedReplicas"] == 1
    assert {c["reason"] for c in api.get(path)["status"]["conditions"]} == {
        "MinimumReplicasAvailable",
        "NewReplicaSetAvailable",
    }
    wait_for("one server process", lambda: len(processes_with(str(www))) == 1)

    emu.request(api.url, "PATCH", path, {"spec": {"replicas": 0}}, "application/merge-patch+json")
    wait_for("no pod", lambda: cluster.pods(ns, "app=web") == [] and deployment_ready(api.get(path)))
    wait_for("no server process", lambda: processes_with(str(www)) == [])
    assert "replicas" not in api.get(path)["status"]
    with pytest.raises(OSError):  # no ready endpoint: the proxy closes the connection
        NO_PROXY.open(f"http://{vip}/hello.txt", timeout=5).read()

    # A Service without selector follows its EndpointSlices (the stable endpoint pointed at hosts outside the
    # cluster, role vllm_endpoint): here a real server on the host, outside every pod.
    outside = tmp_path / f"outside-{uuid.uuid4().hex[:8]}"
    outside.mkdir()
    (outside / "hello.txt").write_text("hello from outside\n")
    port = emu.free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(outside)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        api.create(f"/api/v1/namespaces/{ns}/services", {
            "metadata": {"name": "outside"}, "spec": {"ports": [{"name": "api", "port": 80, "targetPort": 80}]},
        })  # fmt: skip
        endpoint_slice = {
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "outside-1", "labels": {"kubernetes.io/service-name": "outside"}},
            "addressType": "IPv4", "ports": [{"name": "api", "port": port, "protocol": "TCP"}],
            "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": True}}],
        }  # fmt: skip
        slices = f"/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices"
        api.create(slices, endpoint_slice)
        table = cluster.state_dir / "services.json"
        wait_for("the outside Service", lambda: f"{ns}/outside" in json.loads(table.read_text()))
        out_vip, _ports = node.service_address(cluster.state_dir, ns, "outside")

        def fetch_outside() -> bytes:
            with NO_PROXY.open(f"http://{out_vip}/hello.txt", timeout=5) as response:
                return response.read()

        def answered() -> bool:
            try:
                return fetch_outside() == b"hello from outside\n"
            except OSError:
                return False

        wait_for("traffic through the slice", answered)
        # Not ready, then gone: no endpoint, the connection is closed.
        endpoint_slice["endpoints"][0]["conditions"]["ready"] = False
        emu.request(
            api.url,
            "PUT",
            f"{slices}/outside-1",
            {**endpoint_slice, "metadata": api.get(f"{slices}/outside-1")["metadata"]},
        )
        time.sleep(3)
        with pytest.raises(OSError):
            fetch_outside()
        emu.request(api.url, "DELETE", f"{slices}/outside-1")
        time.sleep(2)
        with pytest.raises(OSError):
            fetch_outside()
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_recreate_stops_the_old_pod_before_starting_the_new_one(cluster: Cluster, tmp_path: Path) -> None:
    """One writer of shared state (training_cluster's Deployments): never two servers at once."""
    ns = cluster.namespace("one-writer")
    www = tmp_path / f"once-{uuid.uuid4().hex[:8]}"
    www.mkdir()
    container = {**http_server(www), "readinessProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": 1}}
    web = deployment("ui", container)
    web["spec"]["strategy"] = {"type": "Recreate"}
    cluster.api.create(f"/apis/apps/v1/namespaces/{ns}/deployments", web)
    path = f"/apis/apps/v1/namespaces/{ns}/deployments/ui"
    wait_for("the first pod", lambda: deployment_ready(cluster.api.get(path)))
    (first,) = cluster.pods(ns, "app=ui")
    patch = {"spec": {"template": {"metadata": {"annotations": {"rev": "2"}}}}}
    emu.request(cluster.api.url, "PATCH", path, patch, "application/merge-patch+json")
    most = 0
    deadline = time.monotonic() + 30
    while not deployment_ready(cluster.api.get(path)):
        most = max(most, len(processes_with(str(www))))
        assert time.monotonic() < deadline, "the rollout did not finish"
        time.sleep(0.05)
    assert most <= 1, "old and new servers ran at the same time"
    (second,) = cluster.pods(ns, "app=ui")
    assert second["metadata"]["labels"]["pod-template-hash"] != first["metadata"]["labels"]["pod-template-hash"]
    assert len(processes_with(str(www))) == 1


def test_a_failing_liveness_probe_restarts_a_stopped_server(cluster: Cluster, tmp_path: Path) -> None:
    ns = cluster.namespace("live")
    www = tmp_path / f"live-{uuid.uuid4().hex[:8]}"
    www.mkdir()
    probe_in_pod = ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8080/', timeout=2)"]
    container = {
        **http_server(www),
        "startupProbe": {
            "exec": {"command": probe_in_pod},
            "periodSeconds": 1,
            "timeoutSeconds": 5,
            "failureThreshold": 20,
        },
        "livenessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1, "failureThreshold": 2},
    }
    cluster.api.create(
        f"/apis/apps/v1/namespaces/{ns}/deployments", deployment("srv", container, terminationGracePeriodSeconds=1)
    )
    path = f"/apis/apps/v1/namespaces/{ns}/deployments/srv"
    wait_for("the server to be ready", lambda: deployment_ready(cluster.api.get(path)))
    (pid,) = processes_with(str(www))
    os.kill(pid, signal.SIGSTOP)  # alive, listening, never answering: only SIGKILL ends it

    def restarted() -> Any:
        pods = cluster.pods(ns, "app=srv")
        status = pods[0]["status"]["containerStatuses"][0] if pods else {}
        return pods[0] if status.get("restartCount") == 1 and status.get("ready") else None

    pod = wait_for("the restart", restarted, timeout=40)
    last = pod["status"]["containerStatuses"][0]["lastState"]["terminated"]
    assert last["exitCode"] == 137 and last["reason"] == "Error"
    assert not Path(f"/proc/{pid}").exists() or pid not in processes_with(str(www))
    with NO_PROXY.open(f"http://{pod['status']['podIP']}:8080/", timeout=5) as response:
        assert response.status == 200
    log = cluster.node_log()
    assert f"liveness probe failed 2 times: restarting container srv of pod {ns}/{pod['metadata']['name']}" in log
    assert f"container srv of pod {ns}/{pod['metadata']['name']} passed its startup probe" in log


def test_deletion_and_node_stop_leave_nothing_behind(cluster: Cluster, tmp_path: Path) -> None:
    api = cluster.api
    marker = f"{uuid.uuid4().hex[:8]}"
    ns = cluster.namespace("delete-me")
    hook_file = tmp_path / "pre-stop-ran"
    # The preStop hook runs in the container before SIGTERM (the vLLM role drains this way).
    pre_stop = {"exec": {"command": ["sh", "-c", f"echo drained > {hook_file}; sleep 1"]}}
    sleeper = {
        "image": "local/busybox",
        "command": ["sleep", f"300.{int(marker, 16) % 997}1"],
        "lifecycle": {"preStop": pre_stop},
    }
    api.create(f"/apis/batch/v1/namespaces/{ns}/jobs", job("sleeper", sleeper))
    standalone = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "lonely"},
        "spec": {
            "containers": [
                {"name": "main", "image": "local/busybox", "command": ["sleep", f"300.{int(marker, 16) % 997}2"]}
            ]
        },
    }
    other = cluster.namespace("other")
    api.create(f"/api/v1/namespaces/{other}/pods", standalone)
    mount_root = Path(f"/llmops-node-test-{marker}")
    kept_dir = tmp_path / f"kept-{marker}"
    kept_dir.mkdir()
    kept = deployment(
        "kept",
        {**http_server(kept_dir), "volumeMounts": [{"name": "shm", "mountPath": str(mount_root / "shm")}]},
        volumes=[{"name": "shm", "emptyDir": {"medium": "Memory"}}],
    )
    api.create(f"/apis/apps/v1/namespaces/{ns}/deployments", kept)
    job_sleep, pod_sleep = f"sleep 300.{int(marker, 16) % 997}1", f"sleep 300.{int(marker, 16) % 997}2"
    sleeper_pod = wait_for("the Job's pod", lambda: cluster.pods(ns, "job-name=sleeper"))[0]["metadata"]["name"]
    wait_for(
        "everything to run",
        lambda: processes_with(job_sleep) and processes_with(pod_sleep) and processes_with(str(kept_dir)),
    )
    assert (mount_root / "shm").is_dir()

    emu.request(api.url, "DELETE", f"/apis/batch/v1/namespaces/{ns}/jobs/sleeper", {"propagationPolicy": "Background"})
    wait_for("the Job's pod to go", lambda: cluster.pods(ns, "job-name=sleeper") == [])
    wait_for("the Job's process to go", lambda: processes_with(job_sleep) == [])
    assert hook_file.read_text() == "drained\n"
    exited = f"container main of pod {ns}/{sleeper_pod} exited with code 143"
    log = wait_for("the container's exit in the node log", lambda: exited in cluster.node_log() and cluster.node_log())
    assert log.index(f"running the preStop hook of container main of pod {ns}/{sleeper_pod}") < log.index(exited)

    emu.request(api.url, "DELETE", f"/api/v1/namespaces/{other}")
    wait_for("the namespace's pod process to go", lambda: processes_with(pod_sleep) == [])
    assert processes_with(str(kept_dir)), "the Deployment in the other namespace was stopped too"
    assert [c for c in node.running_pod_processes(cluster.state_dir) if str(kept_dir) in c]

    assert node.stop_background(cluster.pidfile)
    assert processes_with(str(kept_dir)) == [] and node.running_pod_processes(cluster.state_dir) == []
    assert host_leftovers(cluster.info["prefix"]) == []
    assert not mount_root.exists(), "a created mount point was left"
    assert str(cluster.state_dir) not in Path("/proc/mounts").read_text()
    assert not (cluster.state_dir / "node.json").exists()
    assert "node stopped" in cluster.node_log()
    node_object = api.get("/api/v1/nodes/llmops-test-node")
    assert node_object["metadata"]["labels"]["nvidia.com/gpu"] == "true"
    assert node_object["status"]["conditions"][0]["status"] == "Unknown"


def test_kubelet_rules_in_isolation() -> None:
    env = {"A": "1", "B": "two"}
    assert node.expand_vars("$(A)-$(B)-$(C)-$$(A)-$$-$(A", env) == "1-two-$(C)-$(A)-$-$(A"
    template = {"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}
    assert node.template_hash(template) == node.template_hash(json.loads(json.dumps(template)))
    assert node.template_hash(template) != node.template_hash({**template, "metadata": {"annotations": {"a": "b"}}})
    assert node.scaled_value("25%", 1, round_up=True) == 1 and node.scaled_value("25%", 1, round_up=False) == 0
    assert [node.backoff_delay(n) for n in (1, 2, 3, 7)] == [1, 2, 4, 30]


ROLLOUT_PLAY = """\
- hosts: localhost
  connection: local
  gather_facts: false
  vars:
    ansible_python_interpreter: "{{ ansible_playbook_python }}"
  tasks:
    - name: Apply the Deployment
      kubernetes.core.k8s:
        kubeconfig: KUBECONFIG
        state: present
        apply: true
        definition: "{{ lookup('ansible.builtin.file', deployment_file) | from_json }}"

    - name: Follow the rollout
      llmops.platform.k8s_rollout_wait:
        kubeconfig: KUBECONFIG
        namespace: roll
        name: web
        timeout: 120
        poll_interval: 1
        crash_restarts: 2
      register: rollout
      ignore_errors: true
"""


def test_the_rollout_wait_follows_a_good_rollout_and_fails_fast_on_a_crash_loop(cluster: Cluster, tmp_path) -> None:
    """llmops.platform.k8s_rollout_wait against real processes: a Deployment that becomes ready is Done; its next
    template, whose container dies at start (a model the server cannot load), fails as Unavailable with the
    dying container's output, long before the timeout, while the old pod's state does not count."""
    ns = cluster.namespace("roll")
    www = tmp_path / f"www-{uuid.uuid4().hex[:8]}"
    www.mkdir()
    (www / "ok").write_text("ok\n")
    good = {
        **http_server(www),
        "readinessProbe": {"httpGet": {"path": "/ok", "port": "http"}, "periodSeconds": 1},
    }
    web = {**deployment("web", good), "metadata": {"name": "web", "namespace": ns}}
    web["spec"]["strategy"] = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    (tmp_path / "good.json").write_text(json.dumps(web))
    (tmp_path / "rollout.yml").write_text(ROLLOUT_PLAY.replace("KUBECONFIG", str(cluster.api.kubeconfig)))
    played = run_playbook(tmp_path / "rollout.yml", cwd=tmp_path, extra_vars={"deployment_file": "good.json"})
    (result,) = played.results("Follow the rollout")
    assert played.rc == 0 and result["state"] == "Done", played.output[-3000:]
    assert len(result["pods"]) == 1 and "[rollout web]" in played.output

    # With the same readiness probe as the good template, as a vLLM pod has: a container without one counts as
    # ready the moment it runs, so a node that saw it running before it died rolled the old pod away (in
    # Kubernetes too), and this check failed whenever the crash came a moment late.
    crashing = {
        "image": "local/python:3.11",
        "command": ["python", "-c", "import sys; print('cannot load the model: shape mismatch'); sys.exit(3)"],
        "readinessProbe": good["readinessProbe"],
    }
    broken = json.loads(json.dumps(web))
    broken["spec"]["template"]["spec"]["containers"][0] = {"name": "web", **crashing}
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    played = run_playbook(tmp_path / "rollout.yml", cwd=tmp_path, extra_vars={"deployment_file": "broken.json"})
    (result,) = played.results("Follow the rollout")
    assert result.get("failed") and result["state"] == "Unavailable", result
    assert result["seconds"] < 100, result["seconds"]
    assert "CANNOT BECOME AVAILABLE" in result["msg"] and "keeps failing" in result["msg"], result["msg"]
    assert "cannot load the model: shape mismatch" in result["msg"], result["msg"]
    # maxUnavailable 0: the old pod kept serving meanwhile.
    ready = [p for p in cluster.pods(ns, "app=web") if conditions(p).get("Ready")]
    assert len(ready) == 1 and ready[0]["spec"]["containers"][0].get("command") == good["command"]
