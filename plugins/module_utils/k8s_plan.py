# Copyright: (c) 2026, llmops.platform maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Every variable check of the Kubernetes roles (vllm_k8s, training_cluster) in one pass per role.

The roles' preflights call ``plan_vllm_k8s(settings)``, ``plan_llamafactory(settings)`` and
``plan_training_cluster(settings, llamafactory)`` (through the ``llmops.platform.vllm_k8s_plan``,
``llamafactory_plan`` and ``training_cluster_plan`` filters) with their variables, before anything
is rendered or applied. Each problem raises ``K8sPlanError`` whose message starts with the variable's
name (``vllm_k8s_resources.requests.memory: 500m is 0.5 bytes ...``).

The checks aim at values that have the right type and still break the platform, in particular those
the test API emulator accepts and a real API server refuses: names that are not DNS-1123 labels,
subdomains or (for Services) DNS-1035 labels, label keys and values, resource quantities (a
fractional GPU, requests above limits, millibytes), toleration and rollout-strategy rules, numbers
the server receives as environment strings. And values that are accepted and then do harm: a
selector or NetworkPolicy source that admits every namespace or every address, a secret in a plain
environment variable, a port-forward on every interface, a value a shell script or a config file carries
unquoted, a training output that is (or contains) the directory vLLM serves, paths outside the shared
volume, unpinned images, two workloads sharing one ServiceAccount, a grace period that kills vLLM
mid-drain. The namespace's Pod Security labels come from ``pod_security_labels`` (one source for both
roles).

The result carries no secret: keys, tokens and passwords are checked but never returned or echoed,
because a plan is a fact that Ansible prints with ``-v``.

Standard library only, Python 3.8 compatible: the filters run on the controller.
"""

from __future__ import absolute_import, division, print_function  # noqa: UP010

__metaclass__ = type  # noqa: UP001

import ipaddress
import posixpath
import re
from decimal import Decimal, InvalidOperation
from typing import Any, Dict, Iterable, List, Optional, Tuple

from ansible_collections.llmops.platform.plugins.module_utils.checks import (
    HOSTNAME_RE,
    URL_CREDENTIALS_RE,
    ValueChecks,
    within,
)
from ansible_collections.llmops.platform.plugins.module_utils.checks import item as _item
from ansible_collections.llmops.platform.plugins.module_utils.checks import type_name as _type_name
from ansible_collections.llmops.platform.plugins.module_utils.vllm_server import (
    LORA_RUNTIME_ENV,
    VllmConfigError,
    normalize_server_config,
)


class K8sPlanError(ValueError):
    """A variable cannot work on a real cluster; the message starts with the variable's name."""


# ---- Kubernetes syntax (k8s.io/apimachinery/pkg/util/validation) -------------------------------------
DNS_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z")
DNS_1035_RE = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?\Z")
DNS_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z")
LABEL_NAME_RE = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]\Z")
LABEL_VALUE_RE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?\Z")
# IsEnvVarName: what every supported API server accepts.
ENV_NAME_RE = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*\Z")
# Keys of Secret and ConfigMap data.
DATA_KEY_RE = re.compile(r"^[-._a-zA-Z0-9]+\Z")
QUANTITY_RE = re.compile(r"^([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))((?:[KMGTPE]i)|[numkMGTPE]|[eE][+-]?[0-9]+)?\Z")
PERCENT_RE = re.compile(r"^([0-9]+)%\Z")
# Prometheus durations (ServiceMonitor interval): each unit at most once, largest first (the CRD's pattern).
DURATION_RE = re.compile(r"^(0|(?=[0-9])([0-9]+y)?([0-9]+w)?([0-9]+d)?([0-9]+h)?([0-9]+m)?([0-9]+s)?([0-9]+ms)?)\Z")
_SUFFIXES = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15,
    "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
}
# Container resources that count bytes: a decimal-SI `m` there is millibytes (a slip for Mi).
BYTE_RESOURCES = ("memory", "ephemeral-storage", "storage")
STANDARD_RESOURCES = ("cpu", "memory", "ephemeral-storage")
TOLERATION_KEYS = ("key", "operator", "value", "effect", "tolerationSeconds")
TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")

# ---- image references (github.com/distribution/reference) --------------------------------------------
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?"
_NAME = rf"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_DOMAIN_RE = re.compile(r"^" + _DOMAIN + r"\Z")
_PATH_RE = re.compile(r"^" + _PATH_COMPONENT + r"(?:/" + _PATH_COMPONENT + r")*\Z")
IMAGE_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}\Z")
IMAGE_DIGEST_RE = re.compile(r"^sha256:[a-f0-9]{64}\Z")
# Tags that registries move to each new build, like latest: not a version.
MOVING_TAGS = frozenset(
    ("latest", "nightly", "main", "master", "stable", "edge", "dev", "develop", "head", "canary", "unstable")
)
IMAGE_RE = re.compile(
    r"^(?P<name>" + _NAME + r")(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?(?:@(?P<digest>[^@]+))?\Z"
)

# ---- secrets ---------------------------------------------------------------------------------------
# Words of an environment variable name that say its value is a credential (HF_TOKEN, DB_PASSWORD,
# WANDB_API_KEY, AWS_SECRET_ACCESS_KEY), not TOKENIZERS_PARALLELISM or MAX_NUM_BATCHED_TOKENS.
SECRET_WORDS = frozenset(
    ("TOKEN", "PASSWORD", "PASSWD", "PASS", "PASSPHRASE", "SECRET", "APIKEY", "CREDENTIAL", "CREDENTIALS", "CREDS")
)
SECRET_PAIRS = frozenset((("API", "KEY"), ("ACCESS", "KEY"), ("PRIVATE", "KEY"), ("SECRET", "KEY"), ("AUTH", "KEY")))
# ... unless it names where the secret is (MLFLOW_TRACKING_PASSWORD_FILE).
SECRET_LOCATION_WORDS = frozenset(("FILE", "PATH", "DIR"))
TOKEN_VALUE_RE = re.compile(
    r"(^|[^A-Za-z0-9])(hf_[A-Za-z0-9]{20,}|sk-[A-Za-z0-9_-]{20,}|gh[pousr]_[A-Za-z0-9]{20,}|AKIA[0-9A-Z]{16}"
    r"|github_pat_[A-Za-z0-9_]{20,}|glpat-[A-Za-z0-9_-]{20,}|xox[abposr]-[A-Za-z0-9-]{10,})"
)
# Credentials inside a value: a URL's user info anywhere (jdbc:postgresql://user:pw@host), a password or key
# parameter of a URL query or a connection string (?password=..., ;AccountKey=...), an Authorization header
# value, a private key.
VALUE_URL_CREDENTIALS_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/@\s]*@")
VALUE_SECRET_PARAM_RE = re.compile(
    r"(^|[?&;\s])(password|passwd|pwd|secret|client_secret|token|access_token|auth_token|api_key|apikey|api-key|key"
    r"|accountkey|sharedaccesskey|sig)=[^&;\s]",
    re.IGNORECASE,
)
VALUE_AUTH_HEADER_RE = re.compile(r"(^|[^A-Za-z0-9])(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}", re.IGNORECASE)
VALUE_PRIVATE_KEY_RE = re.compile(r"-----BEGIN ([A-Z0-9]+ )*PRIVATE KEY-----")
# API keys and tokens travel in HTTP headers.
HEADER_SAFE_RE = re.compile(r"^[\x21-\x7e]+\Z")

# ---- paths -----------------------------------------------------------------------------------------
# Mounting a volume here hides what the image needs (its programs, libraries, kernel file systems).
SYSTEM_MOUNT_POINTS = frozenset(
    (
        "/",
        "/bin",
        "/boot",
        "/dev",
        "/etc",
        "/home",
        "/lib",
        "/lib32",
        "/lib64",
        "/opt",
        "/proc",
        "/root",
        "/run",
        "/sbin",
        "/sys",
        "/tmp",  # noqa: S108 - a name to refuse, not a temporary file
        "/usr",
        "/var",
    )
)
SYSTEM_TREES = ("/bin", "/dev", "/lib", "/lib32", "/lib64", "/proc", "/sbin", "/sys", "/usr")
# What /etc holds that every program needs: CA certificates (HTTPS to the Hub, a registry, MLflow), users,
# and the files the kubelet writes into every container (hosts, resolv.conf, hostname).
ETC_TREES = (
    "/etc/ssl",
    "/etc/pki",
    "/etc/ca-certificates",
    "/etc/hosts",
    "/etc/resolv.conf",
    "/etc/hostname",
    "/etc/passwd",
    "/etc/group",
    "/etc/nsswitch.conf",
)
# Environment variables that name where a program writes its caches and state (vLLM, Hugging Face, PyTorch,
# Triton): under a read-only root file system or on a read-only volume the program fails at its first write.
CACHE_ENV = (
    "HOME",
    "XDG_CACHE_HOME",
    "XDG_CONFIG_HOME",
    "VLLM_CACHE_ROOT",
    "VLLM_CONFIG_ROOT",
    "HF_HOME",
    "HF_HUB_CACHE",
    "HF_DATASETS_CACHE",
    "TRANSFORMERS_CACHE",
    "TORCH_HOME",
    "TORCHINDUCTOR_CACHE_DIR",
    "TRITON_CACHE_DIR",
    "OUTLINES_CACHE_DIR",
    "NUMBA_CACHE_DIR",
    "MPLCONFIGDIR",
)
# Characters a value may carry into `sh -c` unquoted (the MLflow server's command line).
SHELL_SAFE_PATH_RE = re.compile(r"^/[A-Za-z0-9._/+-]*\Z")
# A Host header MLflow 3.x may answer (MLFLOW_SERVER_ALLOWED_HOSTS is comma-separated; '*' turns the check off).
MLFLOW_HOST_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]{1,5})?\Z")
# A LLaMA-Factory config key: written as a bare YAML key in the ConfigMap.
CONFIG_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
# The vLLM container's own mounts (templates/deployment.yaml.j2) and the LLaMA-Factory pods'.
VLLM_POD_MOUNTS = ("/dev/shm", "/tmp", "/home/vllm", "/etc/llmops")  # noqa: S108 - mount points, not temporary files
TRAINING_POD_MOUNTS = ("/dev/shm", "/tmp", "/home/llama")  # noqa: S108 - mount points, not temporary files
# What a vLLM process needs after SIGTERM (and after its own --shutdown-timeout drain) to stop its engine,
# free the GPUs and exit: terminationGracePeriodSeconds = drain (preStop) + shutdown_timeout + this.
VLLM_EXIT_ALLOWANCE = 30

# ---- pod security and network policy -----------------------------------------------------------------
# Pod Security Admission levels (pod-security.kubernetes.io/<mode>), strictest first.
POD_SECURITY_LEVELS = ("restricted", "baseline", "privileged")
# The policy version a level is evaluated at: latest, or a Kubernetes minor release v1.N.
POD_SECURITY_VERSION_RE = re.compile(r"^(latest|v1\.(0|[1-9][0-9]*))\Z")
POD_SECURITY_LABEL = "pod-security.kubernetes.io/"
NETWORK_PEER_KEYS = ("namespaceSelector", "podSelector", "ipBlock")
# The ServiceAccount Kubernetes creates in every namespace; pods that name none run as it.
DEFAULT_SERVICE_ACCOUNT = "default"
# The label every namespace carries with its own name (Kubernetes 1.21+).
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
# IPv6 unique local addresses: a private network, however wide.
ULA_NETWORK = ipaddress.ip_network("fc00::/7")


# ---- value helpers (checks.py) ---------------------------------------------------------------------
_CHECKS = ValueChecks(K8sPlanError, blank_is_empty=True)
_fail = _CHECKS.fail
_as_int = _CHECKS.as_int
_as_float = _CHECKS.as_float
_as_bool = _CHECKS.as_bool
_as_list = _CHECKS.as_list
_as_mapping = _CHECKS.as_mapping
_text = _CHECKS.text
_choice = _CHECKS.choice


def _known_keys(mapping: Dict[Any, Any], where: str, known: Iterable[str], message: str) -> None:
    """Fail on a key of ``mapping`` that is not ``known``, naming it ``where.key``."""
    known = tuple(known)
    for key in sorted(mapping, key=str):
        if key not in known:
            _fail(f"{where}.{key}", message)


class _Settings:
    """The role's settings (names without the role prefix) and how a failure names each one."""

    def __init__(self, settings: Dict[str, Any], prefix: str) -> None:
        self.settings = settings
        self.prefix = prefix

    def __call__(self, key: str) -> Any:
        if key not in self.settings:
            raise K8sPlanError(f"{self.prefix}{key}: missing from the settings the role passes to the plan")
        return self.settings[key]

    def name(self, key: str) -> str:
        return self.prefix + key


# ---- names ---------------------------------------------------------------------------------------
def check_dns_label(value: Any, where: str, max_length: int = 63, dns1035: bool = False, what: str = "") -> str:
    """A DNS-1123 label (namespaces, most object names), or with ``dns1035`` a DNS-1035 label (Services:
    it must start with a letter); at most ``max_length`` characters."""
    text = _text(value, where, allow_empty=False)
    pattern, kind = (DNS_1035_RE, "a DNS-1035 label") if dns1035 else (DNS_LABEL_RE, "a DNS-1123 label")
    if not pattern.match(text):
        first = " starting with a letter" if dns1035 else ""
        _fail(
            where,
            f"must be {kind} (lowercase letters, digits and '-'{first}, a letter or digit at each end){what}, "
            f"got {text!r}",
        )
    if len(text) > max_length:
        _fail(where, f"must be at most {max_length} characters{what}, got {len(text)} ({text!r})")
    return text


def check_namespace(value: Any, where: str) -> str:
    """A namespace: a DNS-1123 label outside Kubernetes' own kube-*."""
    namespace = check_dns_label(value, where)
    if namespace.startswith("kube-"):
        _fail(where, f"{namespace} is reserved for Kubernetes' own components (kube-*)")
    return namespace


def check_own_namespace(namespace: str, where: str, why: Iterable[str]) -> str:
    """A namespace the role changes as a whole (``why``: what it does there) must not be ``default``, which
    everything that names no namespace shares."""
    reasons = [reason for reason in why if reason]
    if namespace == "default" and reasons:
        _fail(
            where,
            "is the cluster's default namespace, shared by everything that names no namespace: the role "
            + " and ".join(reasons)
            + "; give the platform a namespace of its own (e.g. llm-training)",
        )
    return namespace


def check_not_default_account(name: str, where: str, what: str) -> str:
    """A workload runs under a ServiceAccount of its own name, which the role creates and removes."""
    if name == DEFAULT_SERVICE_ACCOUNT:
        _fail(
            where,
            f"default names {what}'s ServiceAccount, and default is the namespace's own account that every pod "
            "without one runs as: the role would take it over (its token and API access shared with those pods) "
            "and remove it on teardown; choose another name",
        )
    return name


def check_dns_subdomain(value: Any, where: str, allow_empty: bool = False) -> str:
    text = _text(value, where, allow_empty=allow_empty)
    if not text and allow_empty:
        return text
    if len(text) > 253 or not DNS_SUBDOMAIN_RE.match(text):
        _fail(
            where,
            "must be a DNS-1123 subdomain (dot-separated DNS labels: lowercase letters, digits and '-', "
            f"at most 253 characters), got {text!r}",
        )
    return text


def check_data_key(value: Any, where: str) -> str:
    text = _text(value, where, allow_empty=False)
    if len(text) > 253 or not DATA_KEY_RE.match(text) or text in (".", ".."):
        _fail(where, f"must be a Secret key (letters, digits, '-', '_' and '.'), got {text!r}")
    return text


def check_label_key(key: Any, where: str) -> str:
    if not isinstance(key, str):
        _fail(where, f"label keys must be strings, got {_type_name(key)} {key!r}")
    prefix, _sep, name = key.rpartition("/")
    if _sep and (not prefix or len(prefix) > 253 or not DNS_SUBDOMAIN_RE.match(prefix)):
        _fail(where, f"{key!r} is not a label key: the prefix before '/' must be a DNS subdomain (e.g. example.com)")
    if len(name) > 63 or not LABEL_NAME_RE.match(name):
        _fail(
            where,
            f"{key!r} is not a label key: the name must be at most 63 letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit",
        )
    return key


def check_label_value(value: Any, where: str) -> str:
    if not isinstance(value, str):
        _fail(
            where,
            f"label values must be strings (quote it: the API server refuses {_type_name(value)} {value!r}), "
            f"got {_type_name(value)}",
        )
    if len(value) > 63 or not LABEL_VALUE_RE.match(value):
        _fail(
            where,
            f"{value!r} is not a label value: at most 63 letters, digits, '-', '_' or '.', starting and ending "
            "with a letter or digit (or empty)",
        )
    return value


def check_labels(value: Any, where: str, reserved: Iterable[str] = (), what: str = "labels") -> Dict[str, str]:
    labels = _as_mapping(value, where)
    reserved = tuple(reserved)
    for key in sorted(labels, key=str):
        key_where = _item(where, key)
        check_label_key(key, key_where)
        check_label_value(labels[key], key_where)
        if key in reserved:
            _fail(key_where, f"is set by the role on every object ({what}); choose another key")
    return labels


def check_selector_list(value: Any, where: str) -> List[Dict[str, str]]:
    """A list of label sets, each selecting namespaces: an empty set selects every namespace."""
    result = []
    for i, entry in enumerate(_as_list(value, where)):
        item_where = f"{where}[{i}]"
        labels = check_labels(entry, item_where)
        if not labels:
            _fail(
                item_where,
                "is empty: an empty matchLabels selects EVERY namespace of the cluster; give the labels of the "
                "namespaces that may reach the API (e.g. kubernetes.io/metadata.name: monitoring)",
            )
        result.append(labels)
    return result


def pod_security_labels(level: str, version: str) -> Dict[str, str]:
    """The Pod Security Admission labels of the namespace: the one source both Kubernetes roles render.

    ``enforce`` refuses pods below ``level`` (evaluated by the rules of ``version``). ``audit`` and ``warn``
    always report against ``restricted`` at the cluster's latest rules: a namespace enforced at a lower level
    still shows which pods keep it from restricted, and a pinned enforce version still warns about rules
    that a newer release adds, before an upgrade of the pin would refuse the pods.
    """
    level = _choice(level, "pod_security_level", POD_SECURITY_LEVELS)
    version = _text(version, "pod_security_version", allow_empty=False)
    if not POD_SECURITY_VERSION_RE.match(version):
        _fail("pod_security_version", f"must be latest or a Kubernetes release such as v1.33, got {version!r}")
    return {
        POD_SECURITY_LABEL + "enforce": level,
        POD_SECURITY_LABEL + "enforce-version": version,
        POD_SECURITY_LABEL + "audit": "restricted",
        POD_SECURITY_LABEL + "warn": "restricted",
    }


def check_pod_security(level: Any, version: Any, where_level: str, where_version: str) -> str:
    """A Pod Security Admission level and policy version; returns the level."""
    level = _choice(level, where_level, POD_SECURITY_LEVELS)
    text = _text(version, where_version, allow_empty=False)
    if not POD_SECURITY_VERSION_RE.match(text):
        _fail(
            where_version,
            f"must be latest or a Kubernetes release such as v1.33 (the policy version Pod Security Admission "
            f"evaluates the pods with), got {text!r}",
        )
    return level


def _check_cidr(value: Any, where: str) -> Any:
    text = _text(value, where, allow_empty=False)
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError:
        _fail(where, f"must be a CIDR with its host bits zero, such as 10.20.0.0/16 or fd00::/64, got {text!r}")


def check_network_peers(value: Any, where: str, namespace: str = "") -> List[Dict[str, Any]]:
    """NetworkPolicy peers (the ``from`` of an ingress rule) in Kubernetes' own shape: namespaceSelector
    and/or podSelector with matchLabels, or an ipBlock. Refuses what a real API server refuses (an ipBlock
    next to a selector, an except outside its cidr) and what it accepts that opens the port to everyone
    (an empty namespaceSelector: every namespace; an empty podSelector alone, or a namespaceSelector naming
    the policy's own ``namespace`` alone: every pod of it; a /0 block or one wider than a /8: every address,
    or most of the internet)."""
    peers = []
    for i, entry in enumerate(_as_list(value, where)):
        peer_where = f"{where}[{i}]"
        peer = _as_mapping(entry, peer_where)
        _known_keys(
            peer,
            peer_where,
            NETWORK_PEER_KEYS,
            "unknown key: a NetworkPolicy peer has namespaceSelector, podSelector or ipBlock",
        )
        if not peer:
            _fail(peer_where, "is empty: give namespaceSelector / podSelector labels or an ipBlock")
        if "ipBlock" in peer:
            if len(peer) > 1:
                _fail(
                    peer_where,
                    "combines ipBlock with a selector: the API server refuses it; make them two entries of the list",
                )
            block = _as_mapping(peer["ipBlock"], f"{peer_where}.ipBlock")
            _known_keys(
                block, f"{peer_where}.ipBlock", ("cidr", "except"), "unknown key: an ipBlock has cidr and except"
            )
            network = _check_cidr(block.get("cidr"), f"{peer_where}.ipBlock.cidr")
            if network.prefixlen == 0:
                _fail(
                    f"{peer_where}.ipBlock.cidr",
                    f"{network} matches every address: the port would be open to the whole network; name the "
                    "networks people connect from",
                )
            if (network.version == 4 and network.prefixlen < 8) or (
                network.version == 6 and network.prefixlen < 16 and not network.subnet_of(ULA_NETWORK)
            ):
                _fail(
                    f"{peer_where}.ipBlock.cidr",
                    f"{network} spans {network.num_addresses:,} addresses (wider than a "
                    f"/{8 if network.version == 4 else 16}): the port would be open to most of the internet; name the "
                    "networks people connect from",
                )
            for j, excepted in enumerate(_as_list(block.get("except", []), f"{peer_where}.ipBlock.except")):
                except_where = f"{peer_where}.ipBlock.except[{j}]"
                hole = _check_cidr(excepted, except_where)
                if hole.version != network.version or not hole.subnet_of(network) or hole == network:
                    _fail(
                        except_where, f"{hole} must lie strictly inside the cidr {network} (the API server refuses it)"
                    )
        for key in ("namespaceSelector", "podSelector"):
            if key not in peer:
                continue
            selector_where = f"{peer_where}.{key}"
            selector = _as_mapping(peer[key], selector_where)
            _known_keys(selector, selector_where, ("matchLabels",), "unknown key: give the labels in matchLabels")
            labels = check_labels(selector.get("matchLabels", {}), f"{selector_where}.matchLabels")
            if key == "namespaceSelector" and not labels:
                _fail(
                    selector_where,
                    "is empty: an empty namespaceSelector selects EVERY namespace of the cluster; give the labels of "
                    "the namespaces that may connect (e.g. kubernetes.io/metadata.name: monitoring)",
                )
            if key == "podSelector" and not labels and "namespaceSelector" not in peer:
                _fail(
                    selector_where,
                    "is empty: alone, an empty podSelector selects EVERY pod of the namespace (vLLM, the Jobs, "
                    "whatever runs there later); give the labels of the pods that may connect",
                )
            if (
                key == "namespaceSelector"
                and namespace
                and labels == {NAMESPACE_NAME_LABEL: namespace}
                and "podSelector" not in peer
            ):
                _fail(
                    selector_where,
                    f"selects the platform's own namespace {namespace} without a podSelector: that admits EVERY pod of "
                    "it (vLLM, the Jobs, whatever runs there later); give a podSelector with the pods' labels",
                )
        peers.append(peer)
    return peers


# ---- quantities and resources ------------------------------------------------------------------------
def parse_quantity(value: Any) -> Optional[Tuple[Decimal, str]]:
    """(value, suffix) of a Kubernetes quantity (a string, or a YAML number), or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        text = str(value)
    elif isinstance(value, str):
        text = value
    else:
        return None
    match = QUANTITY_RE.match(text)
    if not match:
        return None
    number, suffix = match.group(1), match.group(2) or ""
    try:
        if suffix[:1] in ("e", "E"):
            amount = Decimal(number) * (Decimal(10) ** int(suffix[1:]))
        else:
            amount = Decimal(number) * _SUFFIXES[suffix]
    except (InvalidOperation, OverflowError, ValueError):
        return None
    return amount, suffix


def check_quantity(
    value: Any, where: str, *, in_bytes: bool = False, integer: bool = False, positive: bool = True
) -> Decimal:
    parsed = parse_quantity(value)
    if parsed is None:
        _fail(
            where,
            f"{value!r} is not a Kubernetes quantity (a number with an optional suffix: 500m, 8, 64Gi, 1.5G; "
            "binary suffixes Ki Mi Gi Ti Pi Ei, decimal k M G T P E, both case-sensitive)",
        )
    amount, suffix = parsed  # type: ignore[misc]
    if amount < 0:
        _fail(where, f"must not be negative, got {value!r}")
    if positive and amount == 0:
        _fail(where, f"must be greater than 0, got {value!r}")
    if in_bytes and suffix in ("m", "u", "n"):
        _fail(
            where,
            f"{value!r} is {amount.normalize():f} bytes: the lowercase suffix {suffix!r} is milli/micro/nano, "
            "not mega (write Mi or M)",
        )
    if integer and amount != amount.to_integral_value():
        _fail(where, f"must be a whole number (the API server refuses fractions of this resource), got {value!r}")
    return amount


def check_quantity_string(value: Any, where: str, example: str, *, echo: bool = True) -> Decimal:
    """A byte quantity written as a string (``example``: 16Gi); ``echo`` false leaves the value out of the
    message about its type."""
    if not isinstance(value, str):
        _fail(
            where,
            f"must be a quantity string such as {example}, got {_type_name(value)}" + (f" {value!r}" if echo else ""),
        )
    return check_quantity(value, where, in_bytes=True)


def _check_resource_name(name: Any, where: str, gpu_resource: str, gpu_variable: Optional[str]) -> str:
    if not isinstance(name, str):
        _fail(where, f"resource names must be strings, got {_type_name(name)} {name!r}")
    if name == gpu_resource:
        _fail(
            f"{where}.{name}",
            f"is set by the role from {gpu_variable} (requests = limits); set that instead"
            if gpu_variable
            else "this pod asks for no GPU",
        )
    if name in STANDARD_RESOURCES or re.match(r"^hugepages-", name):
        if name.startswith("hugepages-") and parse_quantity(name[len("hugepages-") :]) is None:
            _fail(f"{where}.{name}", "is not a huge page size (hugepages-2Mi, hugepages-1Gi)")
        return name
    prefix, _sep, rest = name.partition("/")
    if not _sep or not DNS_SUBDOMAIN_RE.match(prefix) or not LABEL_NAME_RE.match(rest) or len(rest) > 63:
        _fail(
            f"{where}.{name}",
            "is not a container resource: cpu, memory, ephemeral-storage, hugepages-<size> or a domain-qualified "
            "extended resource such as nvidia.com/gpu",
        )
    return name


def check_resources(
    value: Any, where: str, gpu_resource: str, gpu_variable: Optional[str]
) -> Dict[str, Dict[str, Any]]:
    """requests/limits as a real API server validates them: quantities, whole extended resources that
    are requested as much as limited, no request above its limit."""
    spec = _as_mapping(value, where)
    _known_keys(
        spec, where, ("requests", "limits"), "unknown key: a container's resources have only requests and limits"
    )
    amounts = {}  # type: Dict[str, Dict[str, Decimal]]
    for section in ("requests", "limits"):
        if section not in spec:
            continue
        entries = _as_mapping(spec[section], f"{where}.{section}")
        amounts[section] = {}
        for name in sorted(entries, key=str):
            _check_resource_name(name, f"{where}.{section}", gpu_resource, gpu_variable)
            extended = "/" in name
            amounts[section][name] = check_quantity(
                entries[name],
                f"{where}.{section}.{name}",
                in_bytes=name in ("memory", "ephemeral-storage") or name.startswith("hugepages-"),
                integer=extended,
                positive=False,
            )
    requests, limits = amounts.get("requests", {}), amounts.get("limits", {})
    for name in sorted(requests):
        if name in limits and requests[name] > limits[name]:
            _fail(
                f"{where}.requests.{name}",
                f"{spec['requests'][name]!r} is more than the limit {spec['limits'][name]!r}: the API server "
                "refuses a request above its limit",
            )
        if "/" in name and name not in limits:
            _fail(
                f"{where}.limits.{name}",
                f"is missing: {name} cannot be overcommitted, the API server wants its limit set (= the request)",
            )
        if "/" in name and requests[name] != limits[name]:
            _fail(f"{where}.requests.{name}", f"must equal limits.{name}: {name} cannot be overcommitted")
    return spec


def check_gpu_resource(value: Any, where: str) -> str:
    text = _text(value, where, allow_empty=False)
    prefix, _sep, rest = text.partition("/")
    if not _sep or not DNS_SUBDOMAIN_RE.match(prefix) or not LABEL_NAME_RE.match(rest):
        _fail(where, f"must be a domain-qualified extended resource such as nvidia.com/gpu, got {text!r}")
    return text


def check_tolerations(value: Any, where: str) -> list:
    result = []
    for i, entry in enumerate(_as_list(value, where)):
        item = f"{where}[{i}]"
        toleration = _as_mapping(entry, item)
        _known_keys(toleration, item, TOLERATION_KEYS, "unknown toleration field; known: " + ", ".join(TOLERATION_KEYS))
        key = toleration.get("key", "")
        operator = toleration.get("operator", "Equal")
        value_ = toleration.get("value", "")
        effect = toleration.get("effect", "")
        _choice(operator, f"{item}.operator", ("Exists", "Equal"))
        if key:
            check_label_key(key, f"{item}.key")
        elif operator != "Exists":
            _fail(f"{item}.operator", "must be Exists when the key is empty (the API server refuses it)")
        else:
            tolerated = f"every {effect} taint" if effect else "every taint"
            _fail(
                f"{item}.key",
                f"is empty: with operator Exists it tolerates {tolerated} (control-plane nodes, nodes being drained "
                "or unreachable), so the pod lands and stays where no workload belongs; name the taint's key",
            )
        if operator == "Exists" and value_ not in ("", None):
            _fail(f"{item}.value", "must be empty when the operator is Exists (the API server refuses it)")
        if operator == "Equal":
            check_label_value(value_ if value_ is not None else "", f"{item}.value")
        if effect not in ("", None):
            _choice(effect, f"{item}.effect", TAINT_EFFECTS)
        if "tolerationSeconds" in toleration:
            seconds = _as_int(toleration["tolerationSeconds"], f"{item}.tolerationSeconds", strict=True)
            if seconds < 0:
                _fail(
                    f"{item}.tolerationSeconds",
                    f"is {seconds}: the API server takes a negative value as 0 (evict at once); give 0 or more",
                )
            if effect != "NoExecute":
                _fail(f"{item}.tolerationSeconds", "is allowed only with effect NoExecute (the API server refuses it)")
        result.append(toleration)
    return result


def check_int_or_percent(value: Any, where: str, minimum: int = 0) -> Any:
    if isinstance(value, str):
        match = PERCENT_RE.match(value)
        if not match:
            _fail(where, f"must be an integer or a percentage such as 25%, got {value!r}")
        percent = int(match.group(1))  # type: ignore[union-attr]
        if percent > 100:
            _fail(where, f"must not be more than 100% (the API server refuses it), got {value!r}")
        if percent < minimum:
            _fail(where, f"must be at least {minimum}, got {value!r}")
        return value
    return _as_int(value, where, minimum=minimum, strict=True)


def _is_zero(value: Any) -> bool:
    """0, or a percentage that is 0 however it is written (0%, 00%): what the API server computes."""
    if isinstance(value, str):
        match = PERCENT_RE.match(value)
        return bool(match) and int(match.group(1)) == 0
    return value == 0 and not isinstance(value, bool)


def check_strategy(value: Any, where: str) -> dict:
    """A Deployment strategy the API server accepts."""
    strategy = _as_mapping(value, where)
    _known_keys(
        strategy, where, ("type", "rollingUpdate"), "unknown key: a Deployment strategy has type and rollingUpdate"
    )
    kind = _choice(strategy.get("type", "RollingUpdate"), f"{where}.type", ("RollingUpdate", "Recreate"))
    rolling = strategy.get("rollingUpdate")
    if kind == "Recreate":
        if rolling is not None:
            _fail(f"{where}.rollingUpdate", "may not be set when type is Recreate (the API server refuses it)")
        return strategy
    rolling = _as_mapping(rolling if rolling is not None else {}, f"{where}.rollingUpdate")
    _known_keys(
        rolling,
        f"{where}.rollingUpdate",
        ("maxSurge", "maxUnavailable"),
        "unknown key: rollingUpdate has maxSurge and maxUnavailable",
    )
    surge = check_int_or_percent(rolling.get("maxSurge", "25%"), f"{where}.rollingUpdate.maxSurge")
    unavailable = check_int_or_percent(rolling.get("maxUnavailable", "25%"), f"{where}.rollingUpdate.maxUnavailable")
    if _is_zero(surge) and _is_zero(unavailable):
        _fail(
            f"{where}.rollingUpdate.maxUnavailable",
            "may not be 0 when maxSurge is 0: no rollout could ever progress (the API server refuses it)",
        )
    return strategy


# ---- images ----------------------------------------------------------------------------------------
def image_name_ok(name: str) -> bool:
    """A repository name as container runtimes read it: the first component is a registry only when it has a
    '.' or ':' or is localhost (else it is a Docker Hub path, and paths are lowercase)."""
    first, _sep, rest = name.partition("/")
    if _sep and ("." in first or ":" in first or first == "localhost"):
        return bool(_DOMAIN_RE.match(first) and _PATH_RE.match(rest))
    return len(name) <= 255 and bool(_PATH_RE.match(name))


def check_image(value: Any, where: str) -> Dict[str, Optional[str]]:
    """A full image reference NAME[:TAG][@sha256:DIGEST], pinned: a tag other than latest, or a digest."""
    text = _text(value, where, allow_empty=False)
    match = IMAGE_RE.match(text)
    if not match or len(match.group("name")) > 255 or not image_name_ok(match.group("name")):
        _fail(
            where,
            f"{text!r} is not an image reference [registry[:port]/]repository[:tag][@sha256:<64 hex>] "
            "(repository names are lowercase)",
        )
    name, tag, digest = match.group("name"), match.group("tag"), match.group("digest")  # type: ignore[union-attr]
    if digest is not None and not IMAGE_DIGEST_RE.match(digest):
        _fail(where, f"the digest {digest!r} must be sha256: followed by 64 lowercase hex digits")
    if digest is None and tag in (None, "latest"):
        _fail(
            where,
            f"{text!r} is not pinned ({'no tag means latest' if tag is None else 'latest'}): nodes keep whatever "
            "they pulled first (IfNotPresent); name a version tag or pin it by digest (@sha256:...)",
        )
    if digest is None and tag.lower() in MOVING_TAGS:  # type: ignore[union-attr]
        _fail(
            where,
            f"{text!r} is not pinned: {tag} is a moving tag (rebuilt in place, like latest), so nodes run whatever "
            "they pulled first; name a version tag or pin it by digest (@sha256:...)",
        )
    return {"name": name, "tag": tag, "digest": digest}


# ---- environment -----------------------------------------------------------------------------------
def secret_value_reason(value: Any) -> Optional[str]:
    """Why a value looks like it carries a credential (whatever its name), or None."""
    if not isinstance(value, str) or not value:
        return None
    if URL_CREDENTIALS_RE.match(value) or VALUE_URL_CREDENTIALS_RE.search(value):
        return "its value is a URL with credentials (user:password@)"
    if TOKEN_VALUE_RE.search(value):
        return "its value looks like an access token"
    if VALUE_SECRET_PARAM_RE.search(value):
        return "its value carries a password, key or token parameter (password=..., AccountKey=..., ?token=...)"
    if VALUE_AUTH_HEADER_RE.search(value):
        return "its value is an Authorization header value (Bearer/Basic credentials)"
    if VALUE_PRIVATE_KEY_RE.search(value):
        return "its value is a private key"
    return None


def secret_reason(name: str, value: Any) -> Optional[str]:
    """Why a plain environment variable (or a config key) looks like it carries a credential, or None:
    its value (``secret_value_reason``) or its name (HF_TOKEN, DB_PASS, any *_KEY: OPENAI_KEY)."""
    reason = secret_value_reason(value)
    if reason:
        return reason
    if value in ("", None):
        return None
    words = [w for w in re.split(r"[^A-Za-z0-9]+", str(name).upper()) if w]
    if words and words[-1] in SECRET_LOCATION_WORDS:
        return None
    if SECRET_WORDS.intersection(words) or any(pair in SECRET_PAIRS for pair in zip(words, words[1:])):
        return "its name says it holds a credential"
    if len(words) > 1 and words[-1] == "KEY":
        return "its name says it holds a credential (*_KEY)"
    return None


def check_environment(value: Any, where: str, reserved: Dict[str, str]) -> Dict[str, str]:
    """name -> value of plain (non-Secret) container environment. Values are never echoed."""
    env = _as_mapping(value, where)
    for name in sorted(env, key=str):
        item = _item(where, name)
        if not isinstance(name, str) or not ENV_NAME_RE.match(name):
            _fail(item, "is not an environment variable name the API server accepts (letters, digits, '_', '-', '.')")
        if name in reserved:
            _fail(item, reserved[name])
        entry = env[name]
        if not isinstance(entry, str):
            _fail(
                item,
                f"must be a string (quote it): the API server refuses environment values of type {_type_name(entry)}",
            )
        reason = secret_reason(name, entry)
        if reason:
            _fail(
                item,
                f"{reason}: a plain environment value is readable by anyone who can read the Deployment or Job "
                "(and is stored in its last-applied annotation); put it in a Secret",
            )
    return env


def check_header_secret(value: Any, where: str) -> str:
    """An API key or token: a string that fits an HTTP header. Never echoed."""
    text = _text(value, where, echo=False)
    if text and not HEADER_SAFE_RE.match(text):
        _fail(where, "must be printable ASCII without spaces (it travels in an HTTP header)")
    return text


# ---- paths -----------------------------------------------------------------------------------------
def overlaps(first: str, second: str) -> bool:
    """The same directory, or one inside the other."""
    return within(first, second) or within(second, first)


def check_path(value: Any, where: str) -> str:
    """An absolute path without '..' or control characters, returned normalized."""
    text = _text(value, where, allow_empty=False)
    if not text.startswith("/"):
        _fail(where, f"must be an absolute path, got {text!r}")
    if ".." in text.split("/"):
        _fail(where, f"must not contain '..', got {text!r}")
    return posixpath.normpath(text) if text != "/" else text


def check_mount_point(value: Any, where: str, pod_mounts: Iterable[str]) -> str:
    path = check_path(value, where)
    if path in SYSTEM_MOUNT_POINTS or any(within(path, tree) for tree in SYSTEM_TREES):
        _fail(where, f"{path} is a system directory of the image: a volume mounted there hides it")
    for tree in ETC_TREES:
        if within(path, tree):
            _fail(
                where,
                f"{path if path == tree else f'{path} (inside {tree})'} holds what every program of the image needs "
                "(CA certificates, users, the kubelet's hosts and resolv.conf): a volume mounted there hides it, or "
                "cannot be mounted over the file",
            )
    for mount in pod_mounts:
        if overlaps(path, mount):
            _fail(where, f"{path} overlaps the pod's own mount {mount} (the API server refuses duplicate mount paths)")
    return path


def check_program(value: Any, where: str) -> str:
    """A program the controller or a container runs as argv[0]: one word, no flags."""
    text = _text(value, where, allow_empty=False)
    if re.search(r"\s", text):
        _fail(
            where,
            f"{text!r} holds whitespace: it is run as ONE program name (argv[0], no shell), so no such program "
            "exists; give the program alone (flags go elsewhere)",
        )
    return text


def check_controller_dir(value: Any, where: str, what: str, allow_empty: bool = False) -> str:
    """A directory on the controller that the role creates (and sets the mode of) and writes into: not a
    system directory. Relative paths are relative to where ansible-playbook runs."""
    text = _text(value, where, allow_empty=allow_empty)
    if not text:
        return text
    if ".." in text.split("/"):
        _fail(where, f"must not contain '..', got {text!r}")
    path = posixpath.normpath(text) if text.startswith("/") else text
    if path in SYSTEM_MOUNT_POINTS or any(within(path, tree) for tree in SYSTEM_TREES):
        _fail(
            where,
            f"{path} is a system directory: the role creates it with its own mode and writes {what} into it; give a "
            "directory of its own",
        )
    return path


def check_writable_env(env: Dict[str, str], where: str, writable: Iterable[str], read_only: Dict[str, str]) -> None:
    """The cache and state directories the environment names (CACHE_ENV) must lie in ``writable`` mounts;
    ``read_only`` maps read-only mount paths to the variable that mounts them so."""
    writable = tuple(writable)
    for name in CACHE_ENV:
        if name not in env or not isinstance(env[name], str):
            continue
        item, value = _item(where, name), env[name]
        if not value.startswith("/"):
            _fail(item, f"must be an absolute path: the program writes its cache there, got {value!r}")
        path = check_path(value, item)
        for mount, variable in read_only.items():
            if within(path, mount):
                _fail(
                    item,
                    f"{path} is on the volume mounted read-only at {mount} ({variable}): the program writes there "
                    "and fails at its first write; use a path under " + " or ".join(writable),
                )
        if not any(within(path, mount) for mount in writable):
            _fail(
                item,
                f"{path} is on the container's read-only root file system: the program writes there and fails at "
                "its first write; use a path under " + " or ".join(writable),
            )


# ---- vllm_k8s --------------------------------------------------------------------------------------
_VLLM_ROLE_LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/component",
    "app.kubernetes.io/managed-by",
)
_VLLM_BOUNDS = (
    ("replicas", 0, 1000),
    ("model_load_timeout", 10, 86400),
    ("startup_probe_period", 1, 3600),
    ("readiness_probe_period", 1, 3600),
    ("readiness_probe_failure_threshold", 1, 1000),
    ("liveness_probe_period", 1, 3600),
    ("liveness_probe_timeout", 1, 3600),
    ("liveness_probe_failure_threshold", 1, 1000),
    ("wait_timeout", 1, 86400),
    ("wait_crash_restarts", 1, 100),
    ("service_port", 1, 65535),
    ("run_as_user", 1, 2147483647),
    ("run_as_group", 0, 2147483647),
    ("fs_group", 0, 2147483647),
    ("drain_seconds", 0, 3600),
    ("gate_timeout", 10, 86400),
    ("gate_local_port", 1024, 65535),
    ("port_forward_local_port", 1, 65535),
)
_VLLM_BOOLEANS = (
    "apply",
    "create_namespace",
    "pvc_read_only",
    "read_only_root_filesystem",
    "api_key_required",
    "network_policy",
    "pdb",
    "service_monitor",
    "wait",
    "wait_for_model",
    "teardown_model_record",
    "liveness_completion",
    "port_forward_start",
)
# Server configuration keys the role sets from its own variables.
_VLLM_ROLE_SERVER_KEYS = {
    "lora_adapters": "vllm_k8s_lora_adapters",
    "lora_runtime_updating": "vllm_k8s_lora_runtime_updating",
}
# The completion liveness probe's environment (tasks/render.yml, _vllm_k8s_env).
_VLLM_PROBE_ENV = ("WATCHDOG_MODEL", "WATCHDOG_STATE_DIR", "WATCHDOG_TIMEOUT", "WATCHDOG_URL")
# The chart names the engine's Service {release}-{name}-engine-service (a DNS-1035 label).
_HELM_SERVICE_SUFFIX = "-engine-service"


def _check_vllm_model_location(s: _Settings, cfg: Dict[str, Any], mount: str, env: Dict[str, str]) -> None:
    server = s("server")
    where = "vllm_k8s_server.model" if "model" in server else s.name("model_path")
    model = cfg["model"]
    _text(model, where, allow_empty=False)
    if model.startswith("/"):
        path = check_path(model, where)
        if not within(path, mount) or path == mount:
            _fail(
                where,
                f"{model} is not inside the model volume mounted at {mount} (vllm_k8s_pvc_mount_path): the container "
                "image has no model there",
            )
    elif str(env.get("HF_HUB_OFFLINE", "1")).strip().lower() not in ("0", "false", "no", "off"):
        _fail(
            where,
            f"{model!r} is not a path on the model volume ({mount}) and the pod runs with HF_HUB_OFFLINE=1, so it "
            "cannot download it: give the merged model's directory under vllm_k8s_pvc_mount_path",
        )
    declared = {a["name"]: i for i, a in enumerate(cfg.get("lora_adapters") or [])}
    for adapter in sorted(cfg.get("lora_modules") or {}):
        path = cfg["lora_modules"][adapter]
        adapter_where = (
            f"vllm_k8s_lora_adapters[{declared[adapter]}].path"
            if adapter in declared
            else f"vllm_k8s_server.lora_modules.{adapter}"
        )
        if isinstance(path, str) and path.startswith("/") and not within(check_path(path, adapter_where), mount):
            _fail(adapter_where, f"{path} is not inside the model volume mounted at {mount} (vllm_k8s_pvc_mount_path)")


def _vllm_termination_grace(s: _Settings, drain: int, shutdown: int) -> int:
    """The pod's terminationGracePeriodSeconds. Stopping a pod runs, within it: the preStop sleep (``drain``:
    the endpoints drop the pod while it still serves), then SIGTERM, vLLM's own drain of the requests in flight
    (``shutdown``: the server configuration's shutdown_timeout) and the exit. Null: the sum plus
    VLLM_EXIT_ALLOWANCE; a set value must leave room for the first two, or the kubelet kills the server
    (SIGKILL) with requests in flight."""
    grace = s("termination_grace_seconds")
    needed = drain + shutdown
    if grace is None:
        return needed + VLLM_EXIT_ALLOWANCE
    grace = _as_int(grace, s.name("termination_grace_seconds"), 1, 86400, strict=True)
    if grace <= needed:
        _fail(
            s.name("termination_grace_seconds"),
            f"({grace} s) is not longer than vllm_k8s_drain_seconds ({drain} s, the preStop sleep) plus the server's "
            f"shutdown_timeout ({shutdown} s): the kubelet kills vLLM before it has drained; leave it null to derive "
            f"{needed + VLLM_EXIT_ALLOWANCE} s",
        )
    return grace


def plan_vllm_k8s(settings: Dict[str, Any]) -> Dict[str, Any]:
    """Check every vllm_k8s variable; return the normalized server configuration and the image."""
    s = _Settings(settings, "vllm_k8s_")
    mode = _choice(s("mode"), s.name("mode"), ("manifests", "helm"))
    for key in ("kubeconfig", "context", "render_dir"):
        _text(s(key), s.name(key))
    flags = {key: _as_bool(s(key), s.name(key)) for key in _VLLM_BOOLEANS}

    check_controller_dir(s("render_dir"), s.name("render_dir"), "the rendered manifests", allow_empty=True)

    # Names. The Deployment's pods are <name>-<10>-<5>; the Service needs a DNS-1035 label.
    namespace = check_namespace(s("namespace"), s.name("namespace"))
    check_own_namespace(
        namespace,
        s.name("namespace"),
        ["labels it with Pod Security enforce (refusing other pods there)" if flags["create_namespace"] else ""],
    )
    name = check_dns_label(s("name"), s.name("name"), max_length=52, dns1035=True, what=" (it names the Service)")
    check_not_default_account(name, s.name("name"), "vLLM")
    secret_name = check_dns_subdomain(s("api_key_secret_name"), s.name("api_key_secret_name"), allow_empty=True)
    check_data_key(s("api_key_secret_key"), s.name("api_key_secret_key"))
    check_dns_subdomain(s("pvc_name"), s.name("pvc_name"))
    check_labels(s("labels"), s.name("labels"), reserved=_VLLM_ROLE_LABELS)
    api_key = check_header_secret(s("api_key"), s.name("api_key"))
    if flags["api_key_required"] and not api_key and not secret_name:
        _fail(
            s.name("api_key"),
            "is empty and no vllm_k8s_api_key_secret_name is given, but vllm_k8s_api_key_required is true: set "
            "vllm_k8s_api_key (from Ansible Vault), name an existing Secret in vllm_k8s_api_key_secret_name, or set "
            "vllm_k8s_api_key_required to false for an open endpoint",
        )
    if (flags["api_key_required"] or api_key) and not secret_name:
        _fail(s.name("api_key_secret_name"), "must name the Secret that holds the API key")

    # The image: repository, tag and an optional digest (the tag stays: the Helm chart needs one).
    repository = _text(s("image_repository"), s.name("image_repository"), allow_empty=False)
    if "@" in repository:
        _fail(s.name("image_repository"), "carries a digest: put sha256:<hex> in vllm_k8s_image_digest")
    if ":" in repository.rsplit("/", 1)[-1]:
        _fail(s.name("image_repository"), "carries a tag: put it in vllm_k8s_image_tag")
    if len(repository) > 255 or not image_name_ok(repository):
        _fail(
            s.name("image_repository"),
            f"{repository!r} is not an image repository ([registry[:port]/]path, lowercase path components)",
        )
    tag = s("image_tag")
    if not isinstance(tag, str) or not IMAGE_TAG_RE.match(tag):
        _fail(
            s.name("image_tag"),
            f"must be an image tag (a string: quote versions; letters, digits, '_', '.', '-'), got {tag!r}",
        )
    digest = _text(s("image_digest"), s.name("image_digest"))
    if digest and not IMAGE_DIGEST_RE.match(digest):
        _fail(s.name("image_digest"), f"must be empty or sha256: followed by 64 lowercase hex digits, got {digest!r}")
    if tag.lower() in MOVING_TAGS and not digest:
        _fail(
            s.name("image_tag"),
            f"{tag} is not a version (a moving tag, rebuilt in place): nodes keep whatever they pulled first; name "
            "a release or set vllm_k8s_image_digest",
        )
    _choice(s("image_pull_policy"), s.name("image_pull_policy"), ("Always", "IfNotPresent", "Never"))
    command = _as_list(s("command"), s.name("command"))
    if not command:
        _fail(s.name("command"), "must not be empty")
    for i, word in enumerate(command):
        _text(word, f"{s.name('command')}[{i}]", allow_empty=False)
    check_program(command[0], f"{s.name('command')}[0]")

    # Numbers.
    numbers = {key: _as_int(s(key), s.name(key), low, high, strict=True) for key, low, high in _VLLM_BOUNDS}
    if numbers["startup_probe_period"] > numbers["model_load_timeout"]:
        _fail(s.name("startup_probe_period"), "must not be longer than vllm_k8s_model_load_timeout")
    if numbers["liveness_probe_timeout"] > numbers["liveness_probe_period"]:
        _fail(
            s.name("liveness_probe_timeout"),
            f"({numbers['liveness_probe_timeout']} s) must not exceed vllm_k8s_liveness_probe_period "
            f"({numbers['liveness_probe_period']} s)",
        )
    if flags["liveness_completion"]:
        if numbers["liveness_probe_timeout"] < 2:
            _fail(
                s.name("liveness_probe_timeout"),
                "must be at least 2 s with vllm_k8s_liveness_completion: the probe's completion gets one second less, "
                "and a one-token completion in under a second is not a fair test of a loaded engine",
            )
        python = _text(s("liveness_python"), s.name("liveness_python"), allow_empty=False)
        if not re.fullmatch(r"[A-Za-z0-9_./+-]+", python):
            _fail(s.name("liveness_python"), "must be a program name or path (it is the probe's argv[0], no shell)")
    if flags["wait"] and numbers["wait_timeout"] < numbers["model_load_timeout"]:
        _fail(
            s.name("wait_timeout"),
            f"({numbers['wait_timeout']} s) is shorter than vllm_k8s_model_load_timeout "
            f"({numbers['model_load_timeout']} s): the rollout wait gives up while the startup probe still lets "
            "the model load",
        )

    # Scheduling and resources.
    gpu_resource = check_gpu_resource(s("gpu_resource"), s.name("gpu_resource"))
    check_resources(s("resources"), s.name("resources"), gpu_resource, s.name("gpus"))
    gpus = s("gpus")
    if gpus is not None:
        gpus = _as_int(gpus, s.name("gpus"), 0, 1024, strict=True)
    check_labels(s("node_selector"), s.name("node_selector"), what="node selector")
    check_tolerations(s("tolerations"), s.name("tolerations"))
    check_dns_subdomain(s("runtime_class_name"), s.name("runtime_class_name"), allow_empty=True)
    check_quantity_string(s("shm_size"), s.name("shm_size"), "16Gi", echo=False)
    check_strategy(s("strategy"), s.name("strategy"))
    reserved = {
        "VLLM_API_KEY": "is set by the role from the API key Secret (vllm_k8s_api_key / vllm_k8s_api_key_secret_name)",
        LORA_RUNTIME_ENV: "is set by the role from vllm_k8s_lora_runtime_updating",
    }
    if flags["liveness_completion"]:
        reserved.update(
            (variable, "is set by the role for the completion liveness probe (vllm_k8s_liveness_completion): a second "
             "entry of the same name makes the container's environment ambiguous and breaks server-side apply")
            for variable in _VLLM_PROBE_ENV
        )  # fmt: skip
    env = check_environment(s("environment"), s.name("environment"), reserved)

    # Pod security, Service, NetworkPolicy, PodDisruptionBudget, ServiceMonitor.
    level = check_pod_security(
        s("pod_security_level"), s("pod_security_version"), s.name("pod_security_level"), s.name("pod_security_version")
    )
    check_selector_list(s("network_policy_namespace_labels"), s.name("network_policy_namespace_labels"))
    unavailable = check_int_or_percent(s("pdb_max_unavailable"), s.name("pdb_max_unavailable"))
    if flags["pdb"] and _is_zero(unavailable):
        _fail(
            s.name("pdb_max_unavailable"),
            "is 0: the PodDisruptionBudget would block every node drain and cluster upgrade forever",
        )
    interval = _text(s("service_monitor_interval"), s.name("service_monitor_interval"))
    if not DURATION_RE.match(interval):
        _fail(s.name("service_monitor_interval"), f"must be a Prometheus duration such as 30s or 1m, got {interval!r}")
    check_labels(s("service_monitor_labels"), s.name("service_monitor_labels"), reserved=_VLLM_ROLE_LABELS)

    # The model storage and the vLLM server configuration.
    mount = check_mount_point(s("pvc_mount_path"), s.name("pvc_mount_path"), VLLM_POD_MOUNTS)
    server = _as_mapping(s("server"), "vllm_k8s_server")
    for key in sorted(k for k in server if k in _VLLM_ROLE_SERVER_KEYS):
        _fail(f"vllm_k8s_server.{key}", f"is set by the role; use {_VLLM_ROLE_SERVER_KEYS[key]} instead")
    cfg = {
        "model": s("model_path"),
        "served_model_name": s("served_model_name"),
        "host": "0.0.0.0",  # noqa: S104 - a pod listens on every address of its own network namespace
        "port": 8000,
        "device": "cuda",
    }
    cfg.update(server)
    cfg.update(
        lora_adapters=s("lora_adapters"),
        lora_runtime_updating=_as_bool(s("lora_runtime_updating"), s.name("lora_runtime_updating")),
    )
    try:
        cfg = normalize_server_config(cfg, "vllm_k8s_server")
    except VllmConfigError as exc:
        for key, variable in _VLLM_ROLE_SERVER_KEYS.items():
            prefix = f"vllm_k8s_server.{key}"
            if exc.field == prefix or exc.field.startswith((prefix + "[", prefix + ".")):
                raise K8sPlanError(f"{variable}{exc.field[len(prefix) :]}: {exc.message}") from exc
        raise K8sPlanError(str(exc)) from exc
    if cfg["host"] not in ("0.0.0.0", "::"):  # noqa: S104
        _fail(
            "vllm_k8s_server.host",
            f"is {cfg['host']}: in a pod vLLM must listen on 0.0.0.0 (or ::) for the Service and the kubelet's "
            "probes to reach it",
        )
    if mode == "helm" and cfg["host"] != "0.0.0.0":  # noqa: S104
        _fail("vllm_k8s_server.host", "the production-stack chart always binds 0.0.0.0")
    _check_vllm_model_location(s, cfg, mount, env)
    writable = list(VLLM_POD_MOUNTS[:3]) + ([] if flags["pvc_read_only"] else [mount])
    check_writable_env(
        env,
        s.name("environment"),
        writable if flags["read_only_root_filesystem"] else ["/"],
        {mount: "vllm_k8s_pvc_read_only"} if flags["pvc_read_only"] else {},
    )
    for i, word in enumerate(cfg["extra_args"]):
        reason = secret_value_reason(word)
        if reason:
            _fail(
                f"vllm_k8s_server.extra_args[{i}]",
                f"{reason}: the container's args are readable by anyone who can read the Deployment (and by ps "
                "on the node); pass it in a Secret-backed environment variable or a file",
            )
    grace = _vllm_termination_grace(s, numbers["drain_seconds"], cfg["shutdown_timeout"] or 0)
    parallel = cfg["tensor_parallel_size"] * cfg["pipeline_parallel_size"]
    if gpus is not None and cfg["device"] != "cpu" and gpus < parallel:
        _fail(
            s.name("gpus"),
            f"is {gpus}, but tensor_parallel_size x pipeline_parallel_size is {parallel}: vLLM needs one GPU per "
            "worker (leave vllm_k8s_gpus null to derive it)",
        )

    # Helm mode.
    _text(s("helm_binary"), s.name("helm_binary"), allow_empty=mode != "helm")
    release = _text(s("helm_release"), s.name("helm_release"), allow_empty=False)
    if len(release) > 53 or not DNS_1035_RE.match(release):
        _fail(
            s.name("helm_release"),
            f"must be a Helm release name (a DNS-1035 label of at most 53 characters), got {release!r}",
        )
    chart_ref = _text(s("helm_chart_ref"), s.name("helm_chart_ref"), allow_empty=False)
    repo_url = _text(s("helm_chart_repo_url"), s.name("helm_chart_repo_url"))
    if repo_url:
        if not re.match(r"^(https?|oci)://[^\s]+\Z", repo_url):
            _fail(s.name("helm_chart_repo_url"), f"must be an http(s) or oci URL, got {repo_url!r}")
        if URL_CREDENTIALS_RE.match(repo_url):
            _fail(
                s.name("helm_chart_repo_url"),
                "carries credentials: Helm stores and prints repository URLs; use the repository's auth instead",
            )
        # A chart directory on the controller (an absolute or ./ path) needs no repository; helm.yml adds none.
        local_chart = chart_ref.startswith(("/", "./", "../"))
        if not local_chart and not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*\Z", chart_ref):
            _fail(
                s.name("helm_chart_ref"),
                f"must be <repository>/<chart> when vllm_k8s_helm_chart_repo_url is set, got {chart_ref!r}",
            )
    version = _text(s("helm_chart_version"), s.name("helm_chart_version"))
    if version and re.search(r"\s", version):
        _fail(s.name("helm_chart_version"), f"must not contain spaces, got {version!r}")
    # Null: requestCPU/requestMemory come from vllm_k8s_resources.requests (plugins/module_utils/vllm_helm.py).
    if s("helm_request_cpu") is not None:
        _as_int(s("helm_request_cpu"), s.name("helm_request_cpu"), 1, 1024, strict=True)
    for key in ("helm_request_memory", "helm_pvc_storage"):
        if key == "helm_pvc_storage" or s(key) is not None:
            check_quantity_string(s(key), s.name(key), "32Gi")
    _as_mapping(s("helm_values"), s.name("helm_values"))
    if mode == "helm":
        service = f"{release}-{name}{_HELM_SERVICE_SUFFIX}"
        if len(service) > 63:
            _fail(
                s.name("name"),
                f"is too long for helm mode: the chart names the engine's Service {service!r} ({len(service)} "
                "characters, a real API server allows 63); shorten vllm_k8s_name or vllm_k8s_helm_release",
            )
        if overlaps(mount, "/data"):
            _fail(
                s.name("pvc_mount_path"),
                f"{mount} overlaps /data, where the production-stack chart mounts its own volume",
            )
        if flags["create_namespace"] and level == "restricted":
            _fail(
                s.name("pod_security_level"),
                "is restricted but vllm_k8s_mode is helm: the production-stack chart renders its own pods (router, "
                "engine), which this role cannot check against the restricted profile, and Pod Security Admission "
                "refuses any that falls short. Check the chart's pods (helm template) and set baseline, or set "
                "vllm_k8s_create_namespace false and label the namespace yourself",
            )

    # The health gate and the port-forward (kubectl on the controller).
    check_program(s("kubectl_binary"), s.name("kubectl_binary"))
    _check_loopback(s("port_forward_address"), s.name("port_forward_address"))
    _choice(s("port_forward_state"), s.name("port_forward_state"), ("started", "stopped"))
    check_path(s("port_forward_state_dir"), s.name("port_forward_state_dir"))
    check_controller_dir(s("port_forward_state_dir"), s.name("port_forward_state_dir"), "pidfiles and logs")
    if numbers["gate_local_port"] == numbers["port_forward_local_port"]:
        _fail(
            s.name("gate_local_port"),
            f"local port {numbers['gate_local_port']} is also vllm_k8s_port_forward_local_port: the gate's kubectl "
            "port-forward cannot bind it while ui.yml's forward runs",
        )

    key_secret = secret_name if flags["api_key_required"] or api_key else ""
    objects = vllm_k8s_objects(s, flags, mode=mode, release=release, name=name, secret_name=key_secret)
    check_neighbours(s, namespace, objects, s("neighbour_objects"))
    gpu_count = gpus if gpus is not None else (0 if cfg["device"] == "cpu" else parallel)
    image = f"{repository}:{tag}" + (f"@{digest}" if digest else "")
    return {
        "config": cfg,
        "image": image,
        "gpus": gpu_count,
        "mode": mode,
        "drain_seconds": numbers["drain_seconds"],
        "termination_grace_seconds": grace,
        "objects": objects,
    }


def vllm_k8s_objects(
    s: _Settings, flags: Dict[str, bool], *, mode: str, release: str, name: str, secret_name: str
) -> List[Dict[str, str]]:
    """What vllm_k8s writes into its namespace, {kind, name, variable} (the names of tasks/teardown.yml and
    vars/main.yml: in helm mode the chart's Deployment and Service)."""
    helm = mode == "helm"
    where = s.name("name")
    objects = [
        {
            "kind": "Deployment",
            "name": f"{release}-{name}-deployment-vllm" if helm else name,
            "variable": where + (" and vllm_k8s_helm_release" if helm else ""),
        },
        {
            "kind": "Service",
            "name": f"{release}-{name}{_HELM_SERVICE_SUFFIX}" if helm else name,
            "variable": where + (" and vllm_k8s_helm_release" if helm else ""),
        },
        {"kind": "ServiceAccount", "name": name, "variable": where},
        {"kind": "ConfigMap", "name": f"{name}-model", "variable": where + " (its model record)"},
    ]
    if flags["liveness_completion"]:
        objects.append({"kind": "ConfigMap", "name": f"{name}-probe", "variable": where + " (its liveness probe)"})
    if flags["network_policy"]:
        objects.append({"kind": "NetworkPolicy", "name": name, "variable": where})
    if flags["pdb"] and not helm:
        objects.append({"kind": "PodDisruptionBudget", "name": name, "variable": where})
    if secret_name:
        objects.append({"kind": "Secret", "name": secret_name, "variable": s.name("api_key_secret_name")})
    return objects


def check_neighbours(s: _Settings, namespace: str, objects: List[Dict[str, str]], neighbours: Any) -> None:
    """``neighbours`` (vllm_k8s_neighbour_objects): what other roles own, [{kind, name, variable, namespace}], as
    training_cluster reports it (training_cluster_objects). An object of vLLM's with the same kind and name in the
    same namespace would be overwritten by one role and deleted by the other's teardown."""
    where = s.name("neighbour_objects")
    owned = {(o["kind"], o["name"]): o["variable"] for o in objects}
    for i, other in enumerate(_as_list(neighbours, where)):
        if (
            not isinstance(other, dict)
            or not isinstance(other.get("kind"), str)
            or not isinstance(other.get("name"), str)
        ):
            _fail(f"{where}[{i}]", f"must be a mapping with kind and name (training_cluster_objects), got {other!r}")
        if other.get("namespace", namespace) != namespace:
            continue
        mine = owned.get((other["kind"], other["name"]))
        if mine:
            _fail(
                mine.split(" ", 1)[0],
                f"{other['kind']} {namespace}/{other['name']} of vLLM (from {mine}) is also "
                f"{other.get('variable') or 'another role'}'s {other['kind']} ({where}): one role's apply would "
                "overwrite the other's, and either teardown would delete both; give one of them another name",
            )


# ---- training_cluster: the LLaMA-Factory configs (shared with tasks_from render_llamafactory) -------
_LF_STRINGS = ("base_model", "template", "lora_target", "lr_scheduler_type")
_LF_PATHS = ("dataset_dir", "adapter_dir", "merged_model_dir", "config_mount_path")
_LF_INTS = (
    ("lora_rank", 1),
    ("lora_alpha", 1),
    ("cutoff_len", 16),
    ("per_device_train_batch_size", 1),
    ("gradient_accumulation_steps", 1),
    ("logging_steps", 1),
    ("save_steps", 1),
    ("preprocessing_num_workers", 1),
    ("export_size", 1),
)
_LF_BOOLEANS = ("trust_remote_code", "plot_loss", "overwrite_output_dir", "export_legacy_format", "use_cpu")


def _check_model_overrides(s: _Settings, base: str, output: str, export: str) -> None:
    """model_name_or_path set in train_extra / merge_extra: the model each config reads. Neither may be a
    directory training or the merge writes, and both must be the same model: the merge applies the adapter to
    the model it reads, and an adapter fits only the model it was trained on."""
    models = {}
    for key, what in (("train_extra", "training"), ("merge_extra", "merge")):
        extra = s(key)
        where = f"{s.name(key)}.model_name_or_path"
        if "model_name_or_path" not in extra:
            models[key] = (base, s.name("base_model"))
            continue
        model = _text(extra["model_name_or_path"], where, allow_empty=False)
        if model.startswith("/"):
            model = check_path(model, where)
            for path, path_where in ((export, "the merged model vLLM serves"), (output, "the training output")):
                if overlaps(model, path):
                    _fail(
                        where,
                        f"{model} {'is' if model == path else 'overlaps'} {path} ({path_where}): the {what} would "
                        "read a model that training or the merge overwrites",
                    )
        models[key] = (model, where)
    (train_model, train_where), (merge_model, merge_where) = models["train_extra"], models["merge_extra"]
    if posixpath.normpath(train_model) != posixpath.normpath(merge_model):
        where = merge_where if merge_where != s.name("base_model") else train_where
        _fail(
            where,
            f"training reads the model {train_model} ({train_where}) but the merge applies the adapter to "
            f"{merge_model} ({merge_where}): an adapter fits only the model it was trained on, so vLLM would serve "
            "a broken merge",
        )


def _effective_dir(s: _Settings, extra_key: str, extra_field: str, default_key: str) -> Tuple[str, str]:
    """(path, variable that sets it): a *_extra key overrides the rendered one."""
    extra = s(extra_key)
    if extra_field in extra:
        where = f"{s.name(extra_key)}.{extra_field}"
        return check_path(extra[extra_field], where), where
    return posixpath.normpath(s(default_key)), s.name(default_key)


def plan_llamafactory(settings: Dict[str, Any]) -> Dict[str, Any]:
    """Check the LLaMA-Factory variables of training_cluster; return the directories each config uses."""
    s = _Settings(settings, "training_cluster_")
    for key in _LF_STRINGS:
        _text(s(key), s.name(key), allow_empty=False)
    for key in _LF_PATHS:
        check_path(s(key), s.name(key))
    datasets = _as_list(s("dataset"), s.name("dataset"))
    if not datasets:
        _fail(s.name("dataset"), "must list at least one dataset name from dataset_info.json")
    for i, dataset in enumerate(datasets):
        text = _text(dataset, f"{s.name('dataset')}[{i}]", allow_empty=False)
        if "," in text:
            _fail(f"{s.name('dataset')}[{i}]", f"must be one dataset name (the list is joined with ','), got {text!r}")
    for key, low in _LF_INTS:
        _as_int(s(key), s.name(key), minimum=low)
    for key in ("max_steps", "max_samples"):
        if s(key) is not None:
            _as_int(s(key), s.name(key), minimum=1)
    rate = _as_float(s("learning_rate"), s.name("learning_rate"))
    if not 0 < rate < 1:
        _fail(s.name("learning_rate"), f"must be between 0 and 1 (exclusive), got {rate}")
    if _as_float(s("num_train_epochs"), s.name("num_train_epochs")) <= 0:
        _fail(s.name("num_train_epochs"), "must be greater than 0")
    for key in ("lora_dropout", "warmup_ratio"):
        number = _as_float(s(key), s.name(key))
        if not 0 <= number < 1:
            _fail(s.name(key), f"must be at least 0 and below 1, got {number}")
    flags = {key: _as_bool(s(key), s.name(key)) for key in _LF_BOOLEANS}
    precision = _choice(s("precision"), s.name("precision"), ("bf16", "fp16", "fp32"))
    if flags["use_cpu"] and precision == "fp16":
        _fail(s.name("use_cpu"), "is true but training_cluster_precision is fp16, which needs a GPU (use fp32 or bf16)")
    _choice(s("export_device"), s.name("export_device"), ("cpu", "auto"))
    _choice(s("report_to"), s.name("report_to"), ("mlflow", "tensorboard", "wandb", "none"))
    _text(s("run_name"), s.name("run_name"))
    for key in ("train_extra", "merge_extra"):
        extra = _as_mapping(s(key), s.name(key))
        for field in sorted(extra, key=str):
            if not isinstance(field, str) or not CONFIG_KEY_RE.match(field):
                _fail(
                    _item(s.name(key), field),
                    "is not a LLaMA-Factory option name (letters, digits and '_'): it is written as a bare YAML key "
                    "into the ConfigMap",
                )
            reason = secret_reason(field, extra[field])
            if reason:
                _fail(
                    _item(s.name(key), field),
                    f"{reason}: it is written into the ConfigMap (and training_cluster_render_dir), which anyone who "
                    "can read the namespace's ConfigMaps reads; a ConfigMap is not a Secret. Hugging Face downloads "
                    "read HF_TOKEN (training_cluster_hf_token, a Secret)",
                )

    output, output_where = _effective_dir(s, "train_extra", "output_dir", "adapter_dir")
    adapter, adapter_where = _effective_dir(s, "merge_extra", "adapter_name_or_path", "adapter_dir")
    export, export_where = _effective_dir(s, "merge_extra", "export_dir", "merged_model_dir")
    dataset_dir, dataset_where = _effective_dir(s, "train_extra", "dataset_dir", "dataset_dir")
    if output != adapter:
        _fail(
            output_where,
            f"training writes the adapter to {output} but the merge reads it from {adapter} ({adapter_where})",
        )
    if overlaps(output, export):
        relation = "is" if output == export else ("is inside" if within(export, output) else "contains")
        # Name the *_extra key when one of them set a directory, else training_cluster_merged_model_dir.
        where = output_where if output_where != s.name("adapter_dir") else export_where
        _fail(
            where,
            f"{export} (the merged model vLLM serves) {relation} the training output {output} ({output_where}): "
            "training (overwrite_output_dir) and the merge would overwrite each other",
        )
    for path, where, what in ((output, output_where, "training output"), (export, export_where, "merged model")):
        if within(dataset_dir, path):
            _fail(
                dataset_where if dataset_where != s.name("dataset_dir") else where,
                f"the {what} directory {path} ({where}) holds the datasets ({dataset_dir}, {dataset_where}): "
                "writing it overwrites them",
            )
        if within(path, dataset_dir):
            _fail(
                where,
                f"the {what} directory {path} is inside the datasets directory {dataset_dir} ({dataset_where}): the "
                "model files would mix with the datasets, and whoever refreshes the datasets (replacing the "
                "directory) deletes them",
            )
    base = s("base_model")
    if base.startswith("/"):
        base_path = check_path(base, s.name("base_model"))
        for path, where, what in ((export, export_where, "merge"), (output, output_where, "training")):
            if overlaps(base_path, path):
                _fail(
                    where,
                    f"{path} overlaps the base model's directory {base_path} (training_cluster_base_model): the {what} "
                    "would overwrite the model it reads",
                )
    _check_model_overrides(s, base, output, export)
    return {
        "output_dir": output,
        "adapter_dir": adapter,
        "export_dir": export,
        "dataset_dir": dataset_dir,
        "config_mount_path": posixpath.normpath(s("config_mount_path")),
        "base_model_path": posixpath.normpath(base) if base.startswith("/") else None,
        "output_where": output_where,
        "export_where": export_where,
        "dataset_where": dataset_where,
    }


# ---- training_cluster: the platform -----------------------------------------------------------------
_TC_ROLE_LABELS = (
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/name",
    "app.kubernetes.io/component",
)
_TC_BOUNDS = (
    ("train_gpus", 0, 64),
    ("merge_gpus", 0, 64),
    ("webui_gpus", 0, 64),
    ("webui_port", 1, 65535),
    ("mlflow_port", 1, 65535),
    ("port_forward_webui_port", 1, 65535),
    ("port_forward_mlflow_port", 1, 65535),
    ("job_backoff_limit", 0, 100),
    ("train_timeout", 60, 2592000),
    ("merge_timeout", 60, 2592000),
    ("job_poll_interval", 1, 3600),
    ("job_progress_interval", 1, 86400),
    ("job_pending_timeout", 0, 604800),
    ("job_log_lines", 1, 10000),
    ("run_as_user", 1, 2147483647),
    ("run_as_group", 0, 2147483647),
    ("fs_group", 0, 2147483647),
)
_TC_BOOLEANS = (
    "apply",
    "create_namespace",
    "webui_enabled",
    "mlflow_enabled",
    "port_forward_start",
    "teardown_storage",
    "network_policy",
)
# templates/networkpolicy.yaml.j2: the namespace's default deny (roles/training_cluster/vars/main.yml).
DEFAULT_DENY_POLICY = "default-deny-ingress"
# Set by the role from Secrets: an override in the plain environment would put the value in the clear.
_TC_SECRET_ENV = {
    "HF_TOKEN": "training_cluster_hf_token",
    "HUGGING_FACE_HUB_TOKEN": "training_cluster_hf_token",
    "MLFLOW_TRACKING_PASSWORD": "training_cluster_mlflow_tracking_password",
    "MLFLOW_TRACKING_USERNAME": "training_cluster_mlflow_tracking_username",
    "MLFLOW_TRACKING_TOKEN": "a Secret",
    "VLLM_API_KEY": "the vLLM API key Secret",
}


def _check_loopback(value: Any, where: str) -> str:
    text = _text(value, where, allow_empty=False)
    if text == "localhost":
        return text
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        _fail(
            where,
            f"must be one loopback address (127.0.0.1 or localhost), got {text!r}: kubectl port-forward would "
            "listen on other interfaces",
        )
    if address.version == 6:  # type: ignore[union-attr]
        _fail(where, f"{text} is IPv6: the forward's URL http://{text}:PORT cannot carry it unbracketed; use 127.0.0.1")
    if not address.is_loopback:  # type: ignore[union-attr]
        _fail(
            where,
            f"{text} is not a loopback address: the forwards (the WebUI and MLflow have no login, vLLM's API) would "
            "be reachable from the network; use 127.0.0.1 and an SSH tunnel to share them",
        )
    return text


def _check_name_clashes(s: _Settings, flags: Dict[str, bool]) -> None:
    services = []
    if flags["webui_enabled"]:
        services.append(("webui_name", "the WebUI"))
    if flags["mlflow_enabled"]:
        services.append(("mlflow_name", "MLflow"))
    if len(services) == 2 and s("webui_name") == s("mlflow_name"):
        _fail(
            s.name("mlflow_name"),
            "is also the WebUI's name: the two Deployments and Services would overwrite each other",
        )
    jobs = [
        ("train_job_name", "the training Job"),
        ("merge_job_name", "the merge Job"),
    ]
    for i, (key, what) in enumerate(jobs):
        for other, other_what in jobs[:i]:
            if s(key) == s(other):
                _fail(
                    s.name(key),
                    f"is also {other_what}'s name ({s.name(other)}): running {what} deletes the other Job first",
                )
    # Each workload runs under a ServiceAccount of its own name, and the WebUI and MLflow NetworkPolicies carry
    # their names next to the namespace's default deny.
    accounts = services + jobs
    for i, (key, _what) in enumerate(accounts):
        for other, other_what in accounts[:i]:
            if s(key) == s(other):
                _fail(
                    s.name(key),
                    f"is also {other_what}'s name ({s.name(other)}): the two would share one ServiceAccount, and "
                    "removing one (teardown, a switched-off component) removes the other's",
                )
    for key, _what in services:
        if s(key) == DEFAULT_DENY_POLICY:
            _fail(
                s.name(key), f"{DEFAULT_DENY_POLICY} is the namespace's default-deny NetworkPolicy: choose another name"
            )
    if s("hf_token_secret_name") == s("mlflow_credentials_secret_name"):
        _fail(
            s.name("mlflow_credentials_secret_name"),
            "is also the Hugging Face token Secret's name: the role writes both and each write replaces the other",
        )


def _check_platform_hazards(s: _Settings, flags: Dict[str, bool], numbers: Dict[str, int]) -> None:
    """Values of the right type that a real cluster accepts and that then break the platform or what shares
    the cluster with it (the default namespace and ServiceAccount, vLLM's ConfigMaps, pull secrets, NFS
    options, Job timing, directories on the controller, programs with flags)."""
    namespace = s("namespace")
    check_own_namespace(
        namespace,
        s.name("namespace"),
        [
            "labels it with Pod Security enforce (refusing other pods there)" if flags["create_namespace"] else "",
            f"puts its {DEFAULT_DENY_POLICY} NetworkPolicy there (cutting off every other pod)"
            if flags["network_policy"]
            else "",
        ],
    )
    workloads = [("train_job_name", "the training Job"), ("merge_job_name", "the merge Job")]
    if flags["webui_enabled"]:
        workloads.append(("webui_name", "the WebUI"))
    if flags["mlflow_enabled"]:
        workloads.append(("mlflow_name", "MLflow"))
    for key, what in workloads:
        check_not_default_account(s(key), s.name(key), what)
    owned = {
        s("hf_token_secret_name"): "the Hugging Face token Secret (training_cluster_hf_token_secret_name)",
        s("mlflow_credentials_secret_name"): "the MLflow credentials Secret "
        "(training_cluster_mlflow_credentials_secret_name)",
    }
    for i, secret in enumerate(_as_list(s("image_pull_secrets"), s.name("image_pull_secrets"))):
        if secret in owned:
            _fail(
                f"{s.name('image_pull_secrets')}[{i}]",
                f"{secret} is {owned[secret]}, an Opaque Secret: a pull secret must be a "
                "kubernetes.io/dockerconfigjson Secret, so the kubelet could not pull the images (and the role would "
                "overwrite the one named twice)",
            )

    # Storage: the static NFS volume every workload writes to.
    if s("storage_mode") == "static_nfs":
        server = s("nfs_server")
        try:
            address = ipaddress.ip_address(server) if isinstance(server, str) else None
        except ValueError:
            address = None
        if server == "localhost" or (address is not None and (address.is_loopback or address.is_unspecified)):
            _fail(
                s.name("nfs_server"),
                f"{server} is each node itself: the kubelet mounts the export on whichever node runs the pod; give "
                "the NFS server's name or address",
            )
        if s("pv_reclaim_policy") == "Delete":
            _fail(
                s.name("pv_reclaim_policy"),
                "is Delete, but no provisioner deletes a static NFS volume: when the claim goes (teardown) the "
                "PersistentVolume turns Failed instead of being released; use Retain",
            )
    for i, option in enumerate(_as_list(s("nfs_mount_options"), s.name("nfs_mount_options"))):
        if isinstance(option, str) and option.strip() in ("ro", "read-only"):
            _fail(
                f"{s.name('nfs_mount_options')}[{i}]",
                f"{option} mounts the shared volume read-only: training, the merge, the WebUI and MLflow all write "
                "to it",
            )

    # The Jobs are followed by polling their status (llmops.platform.k8s_job_wait).
    ttl = s("job_ttl_seconds")
    if ttl is not None:
        ttl = _as_int(ttl, s.name("job_ttl_seconds"), minimum=0)
        least = max(60, 2 * numbers["job_poll_interval"])
        if ttl < least:
            _fail(
                s.name("job_ttl_seconds"),
                f"is {ttl} s: the TTL controller deletes a finished Job (and its pod with the log) before the wait, "
                f"polling every {numbers['job_poll_interval']} s (training_cluster_job_poll_interval), can read how "
                f"it ended; give at least {least} s, or null to keep it",
            )
    if numbers["job_pending_timeout"] < 60:
        _fail(
            s.name("job_pending_timeout"),
            f"is {numbers['job_pending_timeout']} s: every pod is Pending while its node pulls the image (minutes "
            "for the LLaMA-Factory image), so each Job would fail before it starts; give at least 60 s",
        )

    # The controller side: directories the role creates, programs it runs.
    check_controller_dir(s("render_dir"), s.name("render_dir"), "the rendered manifests", allow_empty=True)
    check_controller_dir(s("port_forward_state_dir"), s.name("port_forward_state_dir"), "pidfiles and logs")
    check_program(s("kubectl_binary"), s.name("kubectl_binary"))
    tracking_uri = s("mlflow_tracking_uri")
    if isinstance(tracking_uri, str) and secret_value_reason(tracking_uri):
        _fail(
            s.name("mlflow_tracking_uri"),
            f"{secret_value_reason(tracking_uri)}: it reaches the pods as the plain MLFLOW_TRACKING_URI variable; "
            "set training_cluster_mlflow_tracking_username and _password (a Secret) instead",
        )


def _check_forward_ports(s: _Settings, flags: Dict[str, bool], ports: Dict[str, int]) -> None:
    forwards = []
    if flags["webui_enabled"]:
        forwards.append("port_forward_webui_port")
    if flags["mlflow_enabled"]:
        forwards.append("port_forward_mlflow_port")
    for i, key in enumerate(forwards):
        for other in forwards[:i]:
            if ports[key] == ports[other]:
                _fail(
                    s.name(key),
                    f"local port {ports[key]} is also {s.name(other)}: the second kubectl port-forward cannot bind it",
                )


MODEL_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}\Z")


def _check_model_versions(s: _Settings, llamafactory: Dict[str, Any], mount: str) -> None:
    """The versioned merge (files/model-version.py): versions directory, version names, keep count."""
    versions = check_path(s("model_versions_dir"), s.name("model_versions_dir"))
    link = llamafactory["export_dir"]
    if "export_dir" in (s("merge_extra") or {}):
        _fail(
            f"{s.name('merge_extra')}.export_dir",
            "is set by the versioned merge (training_cluster_model_versions_dir/<version>); set "
            "training_cluster_model_versions_dir or training_cluster_merged_model_dir instead",
        )
    if not within(versions, mount) or versions == mount:
        _fail(
            s.name("model_versions_dir"),
            f"{versions} is not inside the shared volume mounted at {mount} (training_cluster_storage_mount_path): "
            "the merged versions would be lost with the merge pod",
        )
    if overlaps(versions, link):
        _fail(
            s.name("model_versions_dir"),
            f"{versions} overlaps training_cluster_merged_model_dir {link}, the link to the newest version: "
            "they must be separate paths (for example /storage/models/merged-model-versions and "
            "/storage/models/merged-model)",
        )
    others = [
        (llamafactory["output_dir"], llamafactory["output_where"], "the training output"),
        (llamafactory["dataset_dir"], s.name("dataset_dir"), "the datasets"),
        (s("mlflow_storage_path"), s.name("mlflow_storage_path"), "MLflow's storage"),
    ]
    if llamafactory.get("base_model_path"):
        others.append((llamafactory["base_model_path"], s.name("base_model"), "the base model"))
    for path, where, what in others:
        if isinstance(path, str) and path and overlaps(versions, posixpath.normpath(path)):
            _fail(
                s.name("model_versions_dir"),
                f"{versions} overlaps {what} ({path}, {where}): pruning old versions would delete it, "
                "or writing it would change a served version",
            )
    version = _text(s("model_version"), s.name("model_version"))
    if version and not MODEL_VERSION_RE.match(version):
        _fail(
            s.name("model_version"),
            f"{version!r} is not a version name: letters, digits, '.', '_' and '-', starting with a letter or digit, "
            "at most 63 characters (it names a directory and goes on the merge's command line)",
        )
    _as_int(s("model_keep"), s.name("model_keep"), minimum=0)
    for i, name in enumerate(_as_list(s("model_protect"), s.name("model_protect"))):
        if not isinstance(name, str) or not MODEL_VERSION_RE.match(name):
            _fail(f"{s.name('model_protect')}[{i}]", f"{name!r} is not a version name")


def plan_training_cluster(settings: Dict[str, Any], llamafactory: Dict[str, Any]) -> Dict[str, Any]:
    """Check every training_cluster variable (``llamafactory``: what ``plan_llamafactory`` returned)."""
    s = _Settings(settings, "training_cluster_")
    if not isinstance(llamafactory, dict) or "output_dir" not in llamafactory:
        raise K8sPlanError("training_cluster_plan: pass the result of llamafactory_plan as its argument")
    for key in ("kubeconfig", "context", "render_dir"):
        _text(s(key), s.name(key))
    flags = {key: _as_bool(s(key), s.name(key)) for key in _TC_BOOLEANS}
    numbers = {key: _as_int(s(key), s.name(key), low, high) for key, low, high in _TC_BOUNDS}

    # Names.
    check_namespace(s("namespace"), s.name("namespace"))
    for key in ("webui_name", "mlflow_name"):
        check_dns_label(s(key), s.name(key), max_length=52, dns1035=True, what=" (it names a Service)")
    for key in ("train_job_name", "merge_job_name"):
        check_dns_label(s(key), s.name(key), max_length=52)
    for key in (
        "pvc_name",
        "pv_name",
        "config_map_name",
        "hf_token_secret_name",
        "mlflow_credentials_secret_name",
    ):
        check_dns_subdomain(s(key), s.name(key))
    for key in ("hf_token_secret_key",):
        check_data_key(s(key), s.name(key))
    check_labels(s("labels"), s.name("labels"), reserved=_TC_ROLE_LABELS)
    _check_name_clashes(s, flags)
    _check_platform_hazards(s, flags, numbers)

    # Pod security and who may connect (templates/networkpolicy.yaml.j2).
    check_pod_security(
        s("pod_security_level"), s("pod_security_version"), s.name("pod_security_level"), s.name("pod_security_version")
    )
    for key in ("webui_allowed_sources", "mlflow_allowed_sources"):
        check_network_peers(s(key), s.name(key), namespace=s("namespace"))

    # Images.
    for key in ("image", "mlflow_image"):
        if key == "image" and s(key) == "":
            _fail(
                s.name(key),
                "is empty: set it to the LLaMA-Factory image you built from Dockerfile.train "
                "(e.g. registry.example.com/llm/llama-factory-train:0.9.5)",
            )
        check_image(s(key), s.name(key))
    _choice(s("image_pull_policy"), s.name("image_pull_policy"), ("Always", "IfNotPresent", "Never"))
    for i, secret in enumerate(_as_list(s("image_pull_secrets"), s.name("image_pull_secrets"))):
        check_dns_subdomain(secret, f"{s.name('image_pull_secrets')}[{i}]")

    # Secret values: checked, never echoed.
    check_header_secret(s("hf_token"), s.name("hf_token"))
    _text(s("mlflow_tracking_username"), s.name("mlflow_tracking_username"), echo=False)
    _text(s("mlflow_tracking_password"), s.name("mlflow_tracking_password"), echo=False)
    database_uri = _text(s("mlflow_database_uri"), s.name("mlflow_database_uri"), echo=False)
    if database_uri and not re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://\S+\Z", database_uri):
        _fail(s.name("mlflow_database_uri"), "must be a database URI such as postgresql://user:pass@host/mlflow")

    # Storage.
    mode = _choice(s("storage_mode"), s.name("storage_mode"), ("storage_class", "static_nfs"))
    check_quantity_string(s("storage_size"), s.name("storage_size"), "500Gi")
    check_dns_subdomain(s("storage_class"), s.name("storage_class"), allow_empty=True)
    if mode == "static_nfs":
        server = _text(s("nfs_server"), s.name("nfs_server"), allow_empty=False)
        try:
            ipaddress.ip_address(server)
        except ValueError:
            if not HOSTNAME_RE.match(server):
                _fail(s.name("nfs_server"), f"must be a host name or an IP address, got {server!r}")
        check_path(s("nfs_path"), s.name("nfs_path"))
    _choice(s("pv_reclaim_policy"), s.name("pv_reclaim_policy"), ("Retain", "Delete"))
    for i, option in enumerate(_as_list(s("nfs_mount_options"), s.name("nfs_mount_options"))):
        text = _text(option, f"{s.name('nfs_mount_options')}[{i}]", allow_empty=False)
        if re.search(r"\s", text):
            _fail(f"{s.name('nfs_mount_options')}[{i}]", f"must be one mount option without spaces, got {text!r}")
    mount = check_mount_point(s("storage_mount_path"), s.name("storage_mount_path"), TRAINING_POD_MOUNTS)
    config_mount = check_mount_point(s("config_mount_path"), s.name("config_mount_path"), TRAINING_POD_MOUNTS)
    if overlaps(config_mount, mount):
        _fail(
            s.name("config_mount_path"),
            f"{config_mount} overlaps the shared volume's mount {mount} (training_cluster_storage_mount_path): the "
            "ConfigMap would hide part of the volume, or the volume the configs",
        )

    # What the Jobs write lives on the shared volume (their only persistent storage; vLLM reads the merge
    # there). Inputs (base model, datasets) may come with the image.
    for path, where in (
        (llamafactory["output_dir"], llamafactory["output_where"]),
        (llamafactory["export_dir"], llamafactory["export_where"]),
    ):
        if not within(path, mount) or path == mount:
            _fail(
                where,
                f"{path} is not inside the shared volume mounted at {mount} (training_cluster_storage_mount_path): "
                "what the Job writes there is lost with its pod, and the other pods never see it",
            )

    # Scheduling, resources, environment.
    gpu_resource = check_gpu_resource(s("gpu_resource"), s.name("gpu_resource"))
    for part in ("train", "merge", "webui", "mlflow"):
        key = f"{part}_resources"
        check_resources(s(key), s.name(key), gpu_resource, s.name(f"{part}_gpus") if part != "mlflow" else None)
    check_labels(s("node_selector"), s.name("node_selector"), what="node selector")
    check_tolerations(s("tolerations"), s.name("tolerations"))
    check_dns_subdomain(s("runtime_class_name"), s.name("runtime_class_name"), allow_empty=True)
    check_quantity_string(s("shm_size"), s.name("shm_size"), "16Gi")
    reserved = {
        name: f"comes from a Secret ({source}); a plain environment value is readable by anyone who can read the Job"
        for name, source in _TC_SECRET_ENV.items()
    }
    if flags["webui_enabled"]:
        reserved.update(
            (name, "is set by the role on the WebUI's pod (training_cluster_webui_port; its Service and probes use "
             "that port): a second entry of the same name would move the WebUI where nothing reaches it")
            for name in ("GRADIO_SERVER_NAME", "GRADIO_SERVER_PORT")
        )  # fmt: skip
    check_environment(s("environment"), s.name("environment"), reserved)

    # Jobs.
    ttl = s("job_ttl_seconds")
    if ttl is not None:
        _as_int(ttl, s.name("job_ttl_seconds"), minimum=0)
    for key in ("train_timeout", "merge_timeout"):
        if numbers["job_poll_interval"] > numbers[key]:
            _fail(
                s.name("job_poll_interval"),
                f"({numbers['job_poll_interval']} s) is longer than {s.name(key)} ({numbers[key]} s)",
            )

    # MLflow. Its storage path reaches `sh -c` (the server's command line) partly unquoted.
    backend = _choice(s("mlflow_backend"), s.name("mlflow_backend"), ("pvc", "database"))
    for i, host in enumerate(_as_list(s("mlflow_allowed_hosts"), s.name("mlflow_allowed_hosts"))):
        where = f"{s.name('mlflow_allowed_hosts')}[{i}]"
        text = _text(host, where, allow_empty=False)
        if not MLFLOW_HOST_RE.match(text):
            _fail(
                where,
                f"must be a host name or address, optionally with :port, got {text!r} (a '*' would switch off "
                "MLflow's Host header check, its guard against DNS rebinding)",
            )
    if backend == "database" and flags["mlflow_enabled"] and not database_uri:
        _fail(
            s.name("mlflow_database_uri"),
            "is empty but training_cluster_mlflow_backend is database: set it (from Ansible Vault; e.g. "
            "postgresql://user:pass@host/mlflow)",
        )
    storage_path = check_path(s("mlflow_storage_path"), s.name("mlflow_storage_path"))
    if not SHELL_SAFE_PATH_RE.match(s("mlflow_storage_path")):
        _fail(
            s.name("mlflow_storage_path"),
            f"{s('mlflow_storage_path')!r} may hold only letters, digits and . _ / + -: it reaches the MLflow "
            "container's shell command (sqlite:///<path>/mlflow.db) unquoted",
        )
    if not within(storage_path, mount) or storage_path == mount:
        _fail(
            s.name("mlflow_storage_path"),
            f"{storage_path} must be inside training_cluster_storage_mount_path ({mount})",
        )
    for path, where in (
        (llamafactory["output_dir"], llamafactory["output_where"]),
        (llamafactory["export_dir"], llamafactory["export_where"]),
        (llamafactory["dataset_dir"], s.name("dataset_dir")),
    ):
        if flags["mlflow_enabled"] and overlaps(storage_path, path):
            _fail(
                s.name("mlflow_storage_path"),
                f"{storage_path} overlaps {path} ({where}): MLflow's database and artifacts would mix with (and be "
                "overwritten by) the training files",
            )
    tracking_uri = _text(s("mlflow_tracking_uri"), s.name("mlflow_tracking_uri"), echo=False)
    if tracking_uri:
        if URL_CREDENTIALS_RE.match(tracking_uri):
            _fail(
                s.name("mlflow_tracking_uri"),
                "carries credentials: it reaches the pods as the plain MLFLOW_TRACKING_URI variable; set "
                "training_cluster_mlflow_tracking_username and _password (a Secret) instead",
            )
        if not re.match(r"^https?://[^\s/]+(/\S*)?\Z", tracking_uri):
            _fail(s.name("mlflow_tracking_uri"), f"must be empty or an http(s) URL, got {tracking_uri!r}")
    if bool(s("mlflow_tracking_username")) != bool(s("mlflow_tracking_password")):
        _fail(s.name("mlflow_tracking_password"), "and training_cluster_mlflow_tracking_username go together")
    if s("report_to") == "mlflow" and not flags["mlflow_enabled"] and not tracking_uri:
        _fail(
            s.name("mlflow_enabled"),
            "is false and no training_cluster_mlflow_tracking_uri is set, but training_cluster_report_to is mlflow",
        )

    # The port-forwards (tasks_from port_forward).
    _text(s("kubectl_binary"), s.name("kubectl_binary"), allow_empty=False)
    _check_loopback(s("port_forward_address"), s.name("port_forward_address"))
    _check_forward_ports(s, flags, numbers)
    _choice(s("port_forward_state"), s.name("port_forward_state"), ("started", "stopped"))
    check_path(s("port_forward_state_dir"), s.name("port_forward_state_dir"))
    _check_model_versions(s, llamafactory, mount)
    return {
        "storage_mount_path": mount,
        "config_mount_path": config_mount,
        "mlflow_storage_path": storage_path,
        "objects": training_cluster_objects(s, flags),
    }


def training_cluster_objects(s: _Settings, flags: Dict[str, bool]) -> List[Dict[str, str]]:
    """What training_cluster owns in its namespace, {kind, name, variable}: another role deploying there (vllm_k8s,
    ``vllm_k8s_neighbour_objects``) checks its own objects against this list instead of mirroring these settings."""
    objects = []

    namespace = s("namespace")

    def add(kind: str, key: str) -> None:
        objects.append({"kind": kind, "name": s(key), "variable": s.name(key), "namespace": namespace})

    for key in ("train_job_name", "merge_job_name"):
        add("Job", key)
        add("ServiceAccount", key)
    for part in ("webui", "mlflow"):
        if flags[f"{part}_enabled"]:
            for kind in ("Deployment", "Service", "ServiceAccount"):
                add(kind, f"{part}_name")
            if flags["network_policy"]:
                add("NetworkPolicy", f"{part}_name")
    if flags["network_policy"]:
        objects.append(
            {
                "kind": "NetworkPolicy",
                "name": DEFAULT_DENY_POLICY,
                "variable": "training_cluster_network_policy",
                "namespace": namespace,
            }
        )
    add("ConfigMap", "config_map_name")
    add("Secret", "hf_token_secret_name")
    add("Secret", "mlflow_credentials_secret_name")
    add("PersistentVolumeClaim", "pvc_name")
    return objects
