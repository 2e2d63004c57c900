# Copyright: (c) 2026, llmops.platform maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Helm values for the vLLM production-stack chart (``vllm-stack``, vllm-project/production-stack) that
give the chart's engine pod what the role's own Deployment has (vllm_k8s manifests mode).

Learnt from the chart's source (``helm/values.yaml``, ``helm/values.schema.json``,
``helm/templates/deployment-vllm-multi.yaml``, ``service-vllm.yaml``, ``deployment-router.yaml``,
``role.yaml``, ``rolebinding.yaml``, ``serviceaccount.yaml``, ``secrets.yaml``, ``pvc.yaml`` and
``_helpers.tpl``); nothing of the chart is copied here. What the values rely on:

* ``servingEngineSpec.containerSecurityContext`` is written verbatim as the vLLM container's
  ``securityContext`` (the chart's default is ``runAsNonRoot: false``), ``servingEngineSpec.securityContext``
  as the pod's; ``servingEngineSpec.strategy`` as the Deployment strategy (default ``maxSurge: 100%``);
  ``startupProbe``/``livenessProbe``/``readinessProbe`` verbatim (the defaults probe port 8000 whatever
  ``containerPort`` is; charts older than the readiness key render no readiness probe);
  ``servingEngineSpec.labels`` on the Deployment, its selector, the pod and the engine Service (defaults
  ``environment: test`` and ``release: test``, removed here with nulls, which Helm deletes when it merges
  values); ``tolerations``, ``runtimeClassName`` (default ``nvidia``), ``imagePullPolicy``.
* per model: ``env`` (name/value strings only: the schema requires both), ``requestCPU`` (an integer),
  ``requestMemory``, ``limitCPU``, ``limitMemory``, ``requestGPU``/``requestGPUType`` (the GPU limit
  follows the request), ``resources`` (newer charts: replaces the simplified fields), ``nodeSelectorTerms``
  (required node affinity; the chart has no ``nodeSelector``), ``serviceAccountName``, ``podAnnotations``,
  ``extraVolumes``/``extraVolumeMounts``, ``shmSize``; ``pvcStorage`` is required by the schema and makes
  the chart create its own PVC ``<release>-<model>-storage-claim``, mounted at /data as ``HF_HOME``.
* ``routerSpec.enableRouter: false`` removes the router Deployment and Service and the router's
  ServiceAccount, Role (pods: get/watch/list/patch) and RoleBinding.
* The API key: ``servingEngineSpec.vllmApiKey: {secretName, secretKey}`` becomes ``VLLM_API_KEY`` from that
  Secret; a string would be copied into the chart's own Secret, and no value at all means no key.

Pure Python, no Ansible imports, Python 3.8 compatible (the filters in plugins/filter/vllm_helm.py use it).
"""

from __future__ import absolute_import, division, print_function  # noqa: UP010

__metaclass__ = type  # noqa: UP001

import copy
import re
from typing import Any, Dict, List, Optional

from ansible_collections.llmops.platform.plugins.module_utils.vllm_server import (
    VllmConfigError,
    render_helm_model_spec,
)

CHART_NAME = "vllm-stack"
# The chart version the role is written for (vllm_k8s_helm_chart_version pins what is installed).
CHART_VERSION = "0.1.12"

# Environment variables the chart's engine container sets itself (deployment-vllm-multi.yaml): a second
# entry with the same name would be ambiguous, so the role's environment must not repeat them in helm mode.
# VLLM_API_KEY comes from servingEngineSpec.vllmApiKey, HF_HOME is the chart's /data volume.
CHART_ENGINE_ENV = (
    "HF_HOME",
    "HF_TOKEN",
    "LMCACHE_LOG_LEVEL",
    "POD_IP",
    "PROMETHEUS_MULTIPROC_DIR",
    "PYTHONHASHSEED",
    "VLLM_API_KEY",
    "VLLM_USE_V1",
)
# Labels the chart's values.yaml puts on the engine's objects by default; set to null (Helm deletes them).
CHART_DEFAULT_ENGINE_LABELS = ("environment", "release")
# Where the chart mounts its own volumes in the engine container, and the role's writable /tmp.
_TMP = "/tmp"  # noqa: S108
CHART_MOUNTS = ("/data", "/dev/shm")  # noqa: S108

_WHOLE_NUMBER_RE = re.compile(r"^[0-9]+\Z")


class HelmValuesError(ValueError):
    """A setting cannot be expressed in the chart's values. ``str()`` starts with the variable's name."""


def helm_object_names(release: str, name: str) -> Dict[str, str]:
    """The names the chart gives a model's objects (``name`` is the modelSpec name, vllm_k8s_name)."""
    return {
        "deployment": f"{release}-{name}-deployment-vllm",
        "service": f"{release}-{name}-engine-service",
        "pvc": f"{release}-{name}-storage-claim",
        "secret": f"{release}-secrets",
        "hostname": f"{release}-{name}-{CHART_NAME}",
    }


def merge_values(base: Dict[str, Any], extra: Dict[str, Any]) -> Dict[str, Any]:
    """``extra`` over ``base`` the way Helm merges a values file: maps recursively, anything else replaced."""
    out = copy.deepcopy(base)
    for key, value in (extra or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_values(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _whole_cpus(value: Any, where: str) -> int:
    """The chart's requestCPU/limitCPU are integers (values.schema.json): whole CPUs only."""
    if isinstance(value, bool):
        raise HelmValuesError(f"{where}: must be a whole number of CPUs in helm mode, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _WHOLE_NUMBER_RE.match(value.strip()):
        return int(value.strip())
    raise HelmValuesError(
        f"{where}: the production-stack chart takes whole CPUs (requestCPU/limitCPU are integers in its "
        f"values schema), got {value!r}; use a whole number in helm mode"
    )


def _quantity(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


def _resources(s: Dict[str, Any]) -> Dict[str, Any]:
    """The simplified resource keys (every chart version) and the full ``resources`` block (newer charts,
    where it takes priority): the same requests and limits as manifests mode, GPUs included."""
    resources = s.get("resources") or {}
    requests = dict(resources.get("requests") or {})
    limits = dict(resources.get("limits") or {})
    gpus = int(s.get("gpus") or 0)
    gpu_resource = s.get("gpu_resource") or "nvidia.com/gpu"
    out = {}  # type: Dict[str, Any]

    request_cpu = s.get("request_cpu")
    if request_cpu is None:
        if "cpu" not in requests:
            raise HelmValuesError(
                "vllm_k8s_resources.requests.cpu: the production-stack chart requires requestCPU; set it (whole CPUs)"
            )
        request_cpu = _whole_cpus(requests["cpu"], "vllm_k8s_resources.requests.cpu")
    else:
        request_cpu = _whole_cpus(request_cpu, "vllm_k8s_helm_request_cpu")
        requests["cpu"] = request_cpu
    request_memory = s.get("request_memory")
    if request_memory is None:
        if "memory" not in requests:
            raise HelmValuesError(
                "vllm_k8s_resources.requests.memory: the production-stack chart requires requestMemory; set it"
            )
        request_memory = requests["memory"]
    else:
        requests["memory"] = request_memory
    out["requestCPU"] = request_cpu
    out["requestMemory"] = _quantity(request_memory)
    if "cpu" in limits:
        out["limitCPU"] = _whole_cpus(limits["cpu"], "vllm_k8s_resources.limits.cpu")
    if "memory" in limits:
        out["limitMemory"] = _quantity(limits["memory"])
    out["requestGPUType"] = gpu_resource

    block = {}  # type: Dict[str, Any]
    for section, values in (("requests", requests), ("limits", limits)):
        quantities = {key: _quantity(val) for key, val in values.items()}
        if gpus > 0:
            quantities[gpu_resource] = str(gpus)
        if quantities:
            block[section] = quantities
    out["resources"] = block
    return out


def _env(s: Dict[str, Any]) -> List[Dict[str, str]]:
    """The container environment as the chart takes it: name/value strings. The API key is carried by
    servingEngineSpec.vllmApiKey and HF_HOME is the chart's; any other reference or repeat is refused."""
    out = []  # type: List[Dict[str, str]]
    for entry in s.get("env") or []:
        name = entry.get("name")
        if name in ("VLLM_API_KEY", "HF_HOME"):
            continue
        if name in CHART_ENGINE_ENV:
            raise HelmValuesError(
                f"vllm_k8s_environment.{name}: the production-stack chart sets {name} in the engine container itself"
            )
        if "value" not in entry or not isinstance(entry["value"], str):
            raise HelmValuesError(
                f"vllm_k8s_environment.{name}: the production-stack chart takes environment values as strings only"
            )
        out.append({"name": name, "value": entry["value"]})
    return out


def _probe(s: Dict[str, Any], period: int, timeout: int, failures: int, exec_command: Optional[List[str]] = None):
    probe = {
        "initialDelaySeconds": 0,
        "periodSeconds": int(period),
        "timeoutSeconds": int(timeout),
        "failureThreshold": int(failures),
    }  # type: Dict[str, Any]
    if exec_command:
        # The chart's default probes carry httpGet; null removes it when Helm merges (one handler per probe).
        probe["exec"] = {"command": list(exec_command)}
        probe["httpGet"] = None
    else:
        probe["httpGet"] = {"path": "/health", "port": int(s["config"]["port"])}
    return probe


def render_helm_values(settings: Dict[str, Any]) -> Dict[str, Any]:
    """The production-stack chart's values for one vLLM model, from the vllm_k8s settings.

    ``settings`` (render.yml builds it): config (the normalized server configuration), name, release,
    image_repository, image_tag (with ``@digest`` when pinned), image_pull_policy, replicas, gpus,
    gpu_resource, resources, request_cpu/request_memory (null: from resources), pvc_storage, labels (every
    label of the role's objects), env (the container environment as manifests mode renders it), uses_key,
    api_key_secret_name, api_key_secret_key, run_as_user, run_as_group, fs_group, read_only_root_filesystem,
    strategy, node_selector, tolerations, runtime_class_name, shm_size, service_port, pvc_name,
    pvc_mount_path, pvc_read_only, startup_probe_period, startup_failures, readiness_probe_period,
    readiness_probe_failure_threshold, liveness_completion, liveness_python, liveness_probe_period,
    liveness_probe_timeout, liveness_probe_failure_threshold, probe_configmap, probe_dir, probe_sha256, home,
    revision_annotation, revision, service_account, extra_values (vllm_k8s_helm_values, merged last).
    """
    s = settings
    cfg = s["config"]
    port = int(cfg["port"])
    mount = s["pvc_mount_path"]
    for taken in (*CHART_MOUNTS, _TMP):
        if mount == taken or mount.startswith(taken + "/") or taken.startswith(mount.rstrip("/") + "/"):
            raise HelmValuesError(
                f"vllm_k8s_pvc_mount_path: {mount} overlaps {taken}, where the engine pod mounts a volume"
            )

    volumes = [
        {
            "name": "model-storage",
            "persistentVolumeClaim": {"claimName": s["pvc_name"], "readOnly": bool(s["pvc_read_only"])},
        },
        {"name": "tmp", "emptyDir": {"sizeLimit": "8Gi"}},
        {"name": "home", "emptyDir": {"sizeLimit": "32Gi"}},
    ]
    mounts = [
        {"name": "model-storage", "mountPath": mount, "readOnly": bool(s["pvc_read_only"])},
        {"name": "tmp", "mountPath": _TMP},
        {"name": "home", "mountPath": s["home"]},
    ]
    annotations = {s["revision_annotation"]: str(s.get("revision") or "")}
    liveness_command = None
    if s.get("liveness_completion"):
        volumes.append({"name": "probe", "configMap": {"name": s["probe_configmap"], "defaultMode": 0o444}})
        mounts.append({"name": "probe", "mountPath": s["probe_dir"], "readOnly": True})
        # A new probe script rolls the pods, as in manifests mode.
        annotations["llmops.io/probe-sha256"] = s["probe_sha256"]
        liveness_command = [s["liveness_python"], s["probe_dir"] + "/vllm-watchdog.py", "--liveness"]

    node_selector = s.get("node_selector") or {}
    extra = {
        "env": _env(s),
        "serviceAccountName": s["service_account"],
        "podAnnotations": annotations,
        "shmSize": s["shm_size"],
        "extraVolumes": volumes,
        "extraVolumeMounts": mounts,
    }  # type: Dict[str, Any]
    if node_selector:
        extra["nodeSelectorTerms"] = [
            {
                "matchExpressions": [
                    {"key": key, "operator": "In", "values": [str(node_selector[key])]} for key in sorted(node_selector)
                ]
            }
        ]
    resources = _resources(s)
    for key in ("limitCPU", "limitMemory", "requestGPUType", "resources"):
        if key in resources:
            extra[key] = resources[key]
    try:
        spec = render_helm_model_spec(
            cfg,
            s["name"],
            s["image_repository"],
            s["image_tag"],
            replica_count=int(s["replicas"]),
            request_gpu=int(s.get("gpus") or 0),
            request_cpu=resources["requestCPU"],
            request_memory=resources["requestMemory"],
            pvc_storage=s["pvc_storage"],
            container_port=port,
            extra=extra,
            path="vllm_k8s_server",
        )
    except VllmConfigError as exc:
        raise HelmValuesError(str(exc)) from exc

    labels = {key: None for key in CHART_DEFAULT_ENGINE_LABELS}  # type: Dict[str, Any]
    labels.update({key: str(value) for key, value in (s.get("labels") or {}).items()})
    engine = {
        "enableEngine": True,
        "labels": labels,
        "containerPort": port,
        "servicePort": int(s["service_port"]),
        "imagePullPolicy": s["image_pull_policy"],
        "runtimeClassName": s.get("runtime_class_name") or "",
        "tolerations": list(s.get("tolerations") or []),
        "strategy": copy.deepcopy(s["strategy"]),
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": int(s["run_as_user"]),
            "runAsGroup": int(s["run_as_group"]),
            "fsGroup": int(s["fs_group"]),
            "fsGroupChangePolicy": "OnRootMismatch",
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containerSecurityContext": {
            "runAsNonRoot": True,
            "runAsUser": int(s["run_as_user"]),
            "runAsGroup": int(s["run_as_group"]),
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "readOnlyRootFilesystem": bool(s["read_only_root_filesystem"]),
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "startupProbe": _probe(s, s["startup_probe_period"], 5, s["startup_failures"]),
        "readinessProbe": _probe(s, s["readiness_probe_period"], 5, s["readiness_probe_failure_threshold"]),
        "livenessProbe": _probe(
            s,
            s["liveness_probe_period"],
            s["liveness_probe_timeout"],
            s["liveness_probe_failure_threshold"],
            liveness_command,
        ),
        "modelSpec": [spec],
    }  # type: Dict[str, Any]
    if s.get("uses_key"):
        engine["vllmApiKey"] = {"secretName": s["api_key_secret_name"], "secretKey": s["api_key_secret_key"]}
    values = {"servingEngineSpec": engine, "routerSpec": {"enableRouter": False}}
    return merge_values(values, s.get("extra_values") or {})


def _containers(doc: Dict[str, Any]) -> List[Dict[str, Any]]:
    return ((doc.get("spec") or {}).get("template") or {}).get("spec", {}).get("containers") or []


def helm_template_problems(docs: List[Any], values: Dict[str, Any], names: Dict[str, str]) -> Dict[str, Any]:
    """Check what ``helm template`` rendered from the chart with ``values`` (a list of objects).

    Returns ``{"objects": ["Kind/name", ...], "problems": [...], "notes": [...]}``: problems are what the
    lifecycle tasks or the hardening depend on (the engine Deployment and Service under ``names``, the
    container's security context, the strategy, the probes on the container port, the API key); notes are
    what the chart adds or leaves out that the role cannot change.
    """
    objects = [doc for doc in docs if isinstance(doc, dict) and doc.get("kind")]
    listing = [f"{doc['kind']}/{(doc.get('metadata') or {}).get('name', '?')}" for doc in objects]
    problems = []  # type: List[str]
    notes = []  # type: List[str]
    engine = values.get("servingEngineSpec") or {}
    by_name = {(doc["kind"], (doc.get("metadata") or {}).get("name")): doc for doc in objects}
    deployment = by_name.get(("Deployment", names["deployment"]))
    if deployment is None:
        problems.append(
            f"no Deployment {names['deployment']}: the reload, rollout wait and teardown tasks look for that name "
            f"(the chart rendered {', '.join(listing) or 'nothing'})"
        )
    if ("Service", names["service"]) not in by_name:
        problems.append(f"no Service {names['service']}: the health gate and port-forward look for that name")
    if deployment is not None:
        spec = deployment.get("spec") or {}
        if spec.get("strategy") != engine.get("strategy"):
            problems.append(f"the Deployment's strategy is {spec.get('strategy')!r}, not {engine.get('strategy')!r}")
        pod = (spec.get("template") or {}).get("spec") or {}
        if pod.get("securityContext") != engine.get("securityContext"):
            problems.append(f"the pod's securityContext is {pod.get('securityContext')!r}")
        vllm = [c for c in _containers(deployment) if c.get("name") == "vllm"]
        if not vllm:
            problems.append("the Deployment has no container named vllm")
        for container in vllm:
            if container.get("securityContext") != engine.get("containerSecurityContext"):
                problems.append(f"the vllm container's securityContext is {container.get('securityContext')!r}")
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                if probe not in container:
                    notes.append(f"the chart renders no {probe} (servingEngineSpec.{probe} is not read by this chart)")
                    continue
                port = ((container[probe] or {}).get("httpGet") or {}).get("port")
                if port is not None and port != engine.get("containerPort"):
                    problems.append(f"the {probe} probes port {port}, not {engine.get('containerPort')}")
            env = {e.get("name"): e for e in container.get("env") or []}
            key = env.get("VLLM_API_KEY")
            if "vllmApiKey" in engine and key is None:
                problems.append("the vllm container has no VLLM_API_KEY")
            if "vllmApiKey" not in engine and key is not None:
                problems.append("the vllm container has VLLM_API_KEY although no key is required")
        for container in _containers(deployment):
            if container.get("name") != "vllm":
                notes.append(f"the chart adds the container {container.get('name')} ({container.get('image')})")
    for doc in objects:
        kind, name = doc["kind"], (doc.get("metadata") or {}).get("name")
        if (kind, name) in (("Deployment", names["deployment"]), ("Service", names["service"])):
            continue
        notes.append(f"the chart also creates {kind}/{name}")
    return {"objects": listing, "problems": problems, "notes": notes}
