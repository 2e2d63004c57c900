"""The Pod Security Standards, checked on rendered pod templates the way Pod Security Admission does.

Written from the Kubernetes documentation (concepts/security/pod-security-standards, the controls of the
baseline and restricted profiles at policy version "latest") so a test can prove that every pod a role
renders is admitted into a namespace labelled ``pod-security.kubernetes.io/enforce: restricted``, without
a cluster. Each control is one function returning the violations it finds (empty: the pod passes), so a
test can also prove that each control does fail on a pod that breaks it.

    violations = restricted_violations(pod_template)   # PodTemplateSpec: {"metadata": ..., "spec": ...}
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterator, List, Tuple

Pod = Dict[str, Any]

# Baseline: capabilities a container may add (the container runtime's default set).
BASELINE_CAPABILITIES = frozenset(
    (
        "AUDIT_WRITE",
        "CHOWN",
        "DAC_OVERRIDE",
        "FOWNER",
        "FSETID",
        "KILL",
        "MKNOD",
        "NET_BIND_SERVICE",
        "SETFCAP",
        "SETGID",
        "SETPCAP",
        "SETUID",
        "SYS_CHROOT",
    )
)
# Baseline: the "safe" sysctls (namespaced, isolated from other pods).
SAFE_SYSCTLS = frozenset(
    (
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time",
        "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
    )
)
SELINUX_TYPES = frozenset(("", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"))
# Restricted: the only volume types allowed.
RESTRICTED_VOLUME_TYPES = frozenset(
    ("configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret")
)


def _containers(spec: Dict[str, Any]) -> Iterator[Tuple[str, Dict[str, Any]]]:
    for field in ("initContainers", "containers", "ephemeralContainers"):
        for container in spec.get(field) or []:
            yield f"{field}[{container.get('name', '?')}]", container


def _context(container: Dict[str, Any]) -> Dict[str, Any]:
    return container.get("securityContext") or {}


# ---- baseline ---------------------------------------------------------------------------------------
def host_process(pod: Pod) -> List[str]:
    spec = pod["spec"]
    out = []
    if ((spec.get("securityContext") or {}).get("windowsOptions") or {}).get("hostProcess"):
        out.append("spec.securityContext.windowsOptions.hostProcess is true")
    for where, container in _containers(spec):
        if (_context(container).get("windowsOptions") or {}).get("hostProcess"):
            out.append(f"{where}.securityContext.windowsOptions.hostProcess is true")
    return out


def host_namespaces(pod: Pod) -> List[str]:
    return [f"spec.{field} is true" for field in ("hostNetwork", "hostPID", "hostIPC") if pod["spec"].get(field)]


def privileged_containers(pod: Pod) -> List[str]:
    return [f"{where} is privileged" for where, c in _containers(pod["spec"]) if _context(c).get("privileged")]


def baseline_capabilities(pod: Pod) -> List[str]:
    out = []
    for where, container in _containers(pod["spec"]):
        for capability in (_context(container).get("capabilities") or {}).get("add") or []:
            if capability not in BASELINE_CAPABILITIES:
                out.append(f"{where} adds capability {capability}")
    return out


def host_path_volumes(pod: Pod) -> List[str]:
    return [f"volume {v.get('name')} is a hostPath" for v in pod["spec"].get("volumes") or [] if "hostPath" in v]


def host_ports(pod: Pod) -> List[str]:
    out = []
    for where, container in _containers(pod["spec"]):
        for port in container.get("ports") or []:
            if port.get("hostPort", 0) not in (0, None):
                out.append(f"{where} uses hostPort {port['hostPort']}")
    return out


def app_armor(pod: Pod) -> List[str]:
    out = []
    for key, value in ((pod.get("metadata") or {}).get("annotations") or {}).items():
        annotated = key.startswith("container.apparmor.security.beta.kubernetes.io/")
        if annotated and value != "runtime/default" and not value.startswith("localhost/"):
            out.append(f"annotation {key}: {value}")
    contexts = [("spec.securityContext", pod["spec"].get("securityContext") or {})]
    contexts += [(f"{where}.securityContext", _context(c)) for where, c in _containers(pod["spec"])]
    for where, context in contexts:
        profile = (context.get("appArmorProfile") or {}).get("type")
        if profile not in (None, "RuntimeDefault", "Localhost"):
            out.append(f"{where}.appArmorProfile.type is {profile}")
    return out


def se_linux(pod: Pod) -> List[str]:
    out = []
    contexts = [("spec.securityContext", pod["spec"].get("securityContext") or {})]
    contexts += [(f"{where}.securityContext", _context(c)) for where, c in _containers(pod["spec"])]
    for where, context in contexts:
        options = context.get("seLinuxOptions") or {}
        if options.get("type", "") not in SELINUX_TYPES:
            out.append(f"{where}.seLinuxOptions.type is {options['type']}")
        for field in ("user", "role"):
            if options.get(field):
                out.append(f"{where}.seLinuxOptions.{field} is set")
    return out


def proc_mount(pod: Pod) -> List[str]:
    return [
        f"{where}.securityContext.procMount is {_context(c)['procMount']}"
        for where, c in _containers(pod["spec"])
        if _context(c).get("procMount") not in (None, "Default")
    ]


def _seccomp_types(pod: Pod) -> Iterator[Tuple[str, Any]]:
    yield "spec.securityContext", ((pod["spec"].get("securityContext") or {}).get("seccompProfile") or {}).get("type")
    for where, container in _containers(pod["spec"]):
        yield f"{where}.securityContext", (_context(container).get("seccompProfile") or {}).get("type")


def baseline_seccomp(pod: Pod) -> List[str]:
    return [f"{where}.seccompProfile.type is Unconfined" for where, kind in _seccomp_types(pod) if kind == "Unconfined"]


def sysctls(pod: Pod) -> List[str]:
    return [
        f"sysctl {s.get('name')} is not in the safe set"
        for s in (pod["spec"].get("securityContext") or {}).get("sysctls") or []
        if s.get("name") not in SAFE_SYSCTLS
    ]


BASELINE: List[Callable[[Pod], List[str]]] = [
    host_process,
    host_namespaces,
    privileged_containers,
    baseline_capabilities,
    host_path_volumes,
    host_ports,
    app_armor,
    se_linux,
    proc_mount,
    baseline_seccomp,
    sysctls,
]


# ---- restricted -------------------------------------------------------------------------------------
def volume_types(pod: Pod) -> List[str]:
    out = []
    for volume in pod["spec"].get("volumes") or []:
        kinds = [key for key in volume if key != "name"]
        for kind in kinds:
            if kind not in RESTRICTED_VOLUME_TYPES:
                out.append(f"volume {volume.get('name')} is a {kind}")
    return out


def privilege_escalation(pod: Pod) -> List[str]:
    # Must be set to false explicitly: unset means allowed (the runtime default).
    return [
        f"{where}.securityContext.allowPrivilegeEscalation is not false"
        for where, c in _containers(pod["spec"])
        if _context(c).get("allowPrivilegeEscalation") is not False
    ]


def running_as_non_root(pod: Pod) -> List[str]:
    pod_level = (pod["spec"].get("securityContext") or {}).get("runAsNonRoot")
    out = []
    if pod_level is False:
        out.append("spec.securityContext.runAsNonRoot is false")
    for where, container in _containers(pod["spec"]):
        value = _context(container).get("runAsNonRoot")
        if value is False:
            out.append(f"{where}.securityContext.runAsNonRoot is false")
        elif value is None and pod_level is not True:
            out.append(f"{where}: runAsNonRoot is set neither on the container nor on the pod")
    return out


def running_as_non_root_user(pod: Pod) -> List[str]:
    out = []
    if (pod["spec"].get("securityContext") or {}).get("runAsUser") == 0:
        out.append("spec.securityContext.runAsUser is 0")
    for where, container in _containers(pod["spec"]):
        if _context(container).get("runAsUser") == 0:
            out.append(f"{where}.securityContext.runAsUser is 0")
    return out


def restricted_seccomp(pod: Pod) -> List[str]:
    allowed = ("RuntimeDefault", "Localhost")
    types = dict(_seccomp_types(pod))
    pod_type = types.pop("spec.securityContext")
    out = []
    if pod_type is not None and pod_type not in allowed:
        out.append(f"spec.securityContext.seccompProfile.type is {pod_type}")
    for where, kind in types.items():
        if kind is not None and kind not in allowed:
            out.append(f"{where}.seccompProfile.type is {kind}")
        elif kind is None and pod_type not in allowed:
            out.append(f"{where}: seccompProfile is set neither on the container nor on the pod")
    return out


def restricted_capabilities(pod: Pod) -> List[str]:
    out = []
    for where, container in _containers(pod["spec"]):
        capabilities = _context(container).get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            out.append(f"{where} does not drop ALL capabilities")
        for capability in capabilities.get("add") or []:
            if capability != "NET_BIND_SERVICE":
                out.append(f"{where} adds capability {capability}")
    return out


RESTRICTED: List[Callable[[Pod], List[str]]] = [
    *BASELINE,
    volume_types,
    privilege_escalation,
    running_as_non_root,
    running_as_non_root_user,
    restricted_seccomp,
    restricted_capabilities,
]


def violations(pod_template: Pod, level: str = "restricted") -> List[str]:
    """What keeps the pod (a PodTemplateSpec or a Pod: metadata and spec) out of a namespace enforcing ``level``."""
    controls = {"privileged": [], "baseline": BASELINE, "restricted": RESTRICTED}[level]
    pod = {"metadata": pod_template.get("metadata") or {}, "spec": pod_template["spec"]}
    return [f"{control.__name__}: {problem}" for control in controls for problem in control(pod)]


def restricted_violations(pod_template: Pod) -> List[str]:
    return violations(pod_template, "restricted")


def pod_templates(manifest: Dict[str, Any]) -> List[Pod]:
    """The pod templates of a workload manifest (Deployment, Job, ...; a Pod itself), else none."""
    kind = manifest.get("kind")
    if kind == "Pod":
        return [manifest]
    if kind == "CronJob":
        return [manifest["spec"]["jobTemplate"]["spec"]["template"]]
    template = (manifest.get("spec") or {}).get("template")
    return [template] if kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job") and template else []
