# Copyright: (c) 2026, llmops.platform maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Every variable check of the vllm_host role, and the plan of what each instance runs, in one pass.

The role's preflight calls ``plan_host(settings)`` (through the ``llmops.platform.vllm_host_plan``
filter) with its variables, before it looks at the host. Each problem raises ``HostPlanError`` naming
the variable (``vllm_host_instances[1].devices: GPU 0 is already given to vllm@a``), so a bad value
fails the play before anything changes. The checks aim at values that have the right type and still
cannot work on a real host: a privileged port the unprivileged engine cannot bind, one GPU given to
two instances, a system directory as a role directory, a character that would break a unit, drop-in or
environment file, ``root`` as the service user, a model path the unit's own sandbox hides from the
server, a health address nothing listens on, a version that is not a pinned release.

The result carries no secret: instance environments and keys are checked here but never returned,
because the plan is a fact that Ansible prints with ``-v`` and stores in its JSON output.

Standard library only, Python 3.8 compatible: the filter runs on the controller.
"""

from __future__ import absolute_import, division, print_function  # noqa: UP010

__metaclass__ = type  # noqa: UP001

import ipaddress
import os
import posixpath
import re
from typing import Any, Dict, List, Optional

from ansible_collections.llmops.platform.plugins.module_utils.checks import (
    HOSTNAME_RE,
    URL_CREDENTIALS_RE,
    ValueChecks,
    has_control,
)
from ansible_collections.llmops.platform.plugins.module_utils.checks import type_name as _type_name
from ansible_collections.llmops.platform.plugins.module_utils.checks import within as _within
from ansible_collections.llmops.platform.plugins.module_utils.vllm_server import (
    LORA_RUNTIME_ENV,
    VllmConfigError,
    normalize_server_config,
    render_server_args,
)


class HostPlanError(ValueError):
    """A variable cannot work on a host; the message starts with the variable's name."""


# Directories a role must never own (chown, chmod 0700, ReadWritePaths=...): the system's own.
SYSTEM_DIRECTORIES = frozenset(
    (
        "/",
        "/bin",
        "/boot",
        "/dev",
        "/etc",
        "/etc/systemd",
        "/etc/systemd/system",
        "/home",
        "/lib",
        "/lib32",
        "/lib64",
        "/media",
        "/mnt",
        "/opt",
        "/proc",
        "/root",
        "/run",
        "/sbin",
        "/srv",
        "/sys",
        "/tmp",  # noqa: S108 - a name to refuse, not a temporary file
        "/usr",
        "/usr/bin",
        "/usr/lib",
        "/usr/local",
        "/usr/local/bin",
        "/usr/sbin",
        "/var",
        "/var/cache",
        "/var/lib",
        "/var/log",
        "/var/tmp",  # noqa: S108 - a name to refuse, not a temporary file
    )
)
# What the vllm@ unit's sandbox hides from the server: ProtectHome=yes, PrivateTmp=yes, and the kernel
# file systems (ProtectKernel*, PrivateDevices).
SANDBOX_HIDDEN = ("/home", "/root", "/run/user", "/tmp", "/var/tmp", "/proc", "/sys", "/dev")  # noqa: S108
# Environment variables the role sets from its own variables: an instance may not override them.
RESERVED_ENVIRONMENT = {
    "VLLM_API_KEY": "vllm_host_api_key",
    "HF_TOKEN": "vllm_host_hf_token",
    "HUGGING_FACE_HUB_TOKEN": "vllm_host_hf_token",
    "CUDA_VISIBLE_DEVICES": "the instance's `devices`",
    LORA_RUNTIME_ENV: "vllm_host_lora_runtime_updating",
}
# Server configuration keys the role sets from its own variables (declared once for every instance).
ROLE_SERVER_KEYS = {
    "lora_adapters": "vllm_host_lora_adapters",
    "lora_runtime_updating": "vllm_host_lora_runtime_updating",
}
# Environment variables that name directories the server writes (caches, its home): an override must stay
# writable inside the unit's sandbox.
WRITABLE_ENVIRONMENT = (
    "HOME",
    "HF_HOME",
    "HF_HUB_CACHE",
    "HUGGINGFACE_HUB_CACHE",
    "TRANSFORMERS_CACHE",
    "VLLM_CACHE_ROOT",
    "XDG_CACHE_HOME",
)
INSTANCE_KEYS = ("name", "devices", "environment")
INSTANCE_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}\Z")
ACCOUNT_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}\Z")
ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
# A pinned release as pip's `==` reads it: 0.32.0, 0.32.0.post1, 0.33.0rc1, 0.32.0+cpu. Not `latest`,
# not a range, not a wildcard.
VERSION_RE = re.compile(r"^[0-9]+(\.[0-9]+){1,3}((a|b|rc)[0-9]+)?(\.post[0-9]+)?(\.dev[0-9]+)?(\+[A-Za-z0-9.]+)?\Z")
PACKAGE_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?\Z")
# Characters that break (or change the meaning of) a unit file, a drop-in line or an environment file.
UNSAFE_PATH_CHARS = re.compile(r"[\s\"'\\%$;`*?\[\]{}<>|&#]")
UNIT_NAME_RE = re.compile(r"^[A-Za-z0-9:_.@%-]{1,200}\.(service|target|socket|timer|path)\Z")
ROUTE_RE = re.compile(r"^/[A-Za-z0-9._~/-]*\Z")
# A model that is not an absolute path is a Hugging Face repository id: `name` or `org/name`.
HF_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?\Z")
# The first served model name goes unquoted into the watchdog's environment file, where systemd reads
# quotes and backslashes as syntax.
ENV_FILE_UNSAFE = re.compile(r"[\"'\\]")
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
ANY_ADDRESSES = ("0.0.0.0", "::", "*")  # noqa: S104 - names of the wildcard address, not a bind
# Wildcards that listen on IPv4 only (HAProxy's `*` and an empty address are IPv4; uvicorn's 0.0.0.0 too).
IPV4_ANY_ADDRESSES = ("0.0.0.0", "*")  # noqa: S104 - names of the wildcard address, not a bind
# Key and token material ends up in a HAProxy list file and an environment file, one per line.
SECRET_RE = re.compile(r"^[\x21-\x7e]+\Z")
MIN_KEY_LENGTH = 16


# The shared value checks (checks.py), raising HostPlanError; also imported from here by model_sync_plan.py.
_CHECKS = ValueChecks(HostPlanError, integral_floats=True)
_fail = _CHECKS.fail
_as_int = _CHECKS.as_int
_as_bool = _CHECKS.as_bool
_as_list = _CHECKS.as_list
_text = _CHECKS.text


def hidden_by_sandbox(path: str) -> Optional[str]:
    """The SANDBOX_HIDDEN directory that holds ``path`` (lexically normalized), or None."""
    normal = posixpath.normpath(path)
    for hidden in SANDBOX_HIDDEN:
        if _within(normal, hidden):
            return hidden
    return None


def check_path(value: Any, where: str, *, allow_system: bool = False) -> str:
    """An absolute, normalized path that is safe in a unit file, or HostPlanError."""
    path = _text(value, where, allow_empty=False)
    if not path.startswith("/"):
        _fail(where, f"must be an absolute path, got {path!r}")
    if UNSAFE_PATH_CHARS.search(path):
        _fail(
            where,
            "must not contain spaces, quotes, backslashes or shell/systemd special characters "
            f"(it is written into unit files), got {path!r}",
        )
    if posixpath.normpath(path) != path or "//" in path:
        _fail(where, f"must be a normalized path (no '..', '.', '//' or trailing '/'), got {path!r}")
    if not allow_system and path in SYSTEM_DIRECTORIES:
        _fail(
            where,
            "{} is a system directory; give the role a directory of its own, e.g. {}/vllm".format(
                path, path.rstrip("/")
            ),
        )
    return path


def check_secret(value: Any, where: str, min_length: int = 0) -> str:
    if not isinstance(value, str):
        _fail(where, f"must be a string, got {_type_name(value)}")
    if value and not SECRET_RE.match(value):
        _fail(where, "must be printable ASCII without spaces, quotes being fine (it is written one per line)")
    if value and min_length and len(value) < min_length:
        _fail(
            where,
            f"is {len(value)} characters long; use a random key of at least {min_length} (e.g. openssl rand -hex 24)",
        )
    return value


def _check_environment(env: Any, where: str) -> Dict[str, str]:
    if env is None:
        return {}
    if not isinstance(env, dict):
        _fail(where, f"must be a mapping of variable name to value, got {_type_name(env)}")
    for key in sorted(env, key=str):
        key_where = f"{where}.{key}"
        if not isinstance(key, str) or not ENV_KEY_RE.match(key):
            _fail(key_where, "is not a valid environment variable name (letters, digits, _; not starting with a digit)")
        if key in RESERVED_ENVIRONMENT:
            _fail(key_where, f"is set by the role; use {RESERVED_ENVIRONMENT[key]} instead")
        value = env[key]
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            _fail(key_where, f"must be a string or a number, got {_type_name(value)}")
        text = str(value)
        if has_control(text):
            # Not echoed: an environment value may be a secret.
            _fail(key_where, "must not contain newlines or other control characters (it goes into an environment file)")
    return env


def _check_model_location(model: str, where: str, config_dir: str, ip_allow: List[str]) -> None:
    _text(model, where)  # control characters: a path or id with a newline names nothing real
    if model.startswith("/"):
        # `..` could walk out of an allowed directory into a hidden one: judge the normalized path.
        hidden = hidden_by_sandbox(model)
        if hidden:
            _fail(
                where,
                f"{model} is under {hidden}, which the vllm@ unit's sandbox hides from the server (ProtectHome, "
                "PrivateTmp, kernel file systems); put models under /srv or /var/lib",
            )
        if _within(posixpath.normpath(model), config_dir):
            _fail(where, f"{model} is inside vllm_host_config_dir ({config_dir}, readable by root only)")
    elif not HF_ID_RE.match(model) or ".." in model:
        _fail(
            where,
            f"{model!r} is neither an absolute path nor a Hugging Face id (name or org/name); a relative path "
            "would be read from the unit's working directory (vllm_host_state_dir)",
        )
    elif "any" not in ip_allow:
        _fail(
            where,
            "{!r} is a Hugging Face id, but the engine may reach only {} (vllm_host_engine_ip_allow), so it cannot "
            "download it: sync the model to the host with model_sync, or add 'any' to vllm_host_engine_ip_allow".format(
                model, ", ".join(["localhost", *ip_allow])
            ),
        )


def _check_address(value: Any, where: str) -> str:
    text = _text(value, where, allow_empty=False)
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        _fail(where, f"must be an IP address or network (CIDR), got {text!r}")
    return text


def _check_address_list(values: Any, where: str) -> List[str]:
    return [_check_address(value, f"{where}[{i}]") for i, value in enumerate(_as_list(values, where))]


def _check_devices(devices: Any, where: str) -> List[int]:
    result = [_as_int(d, f"{where}[{i}]", minimum=0, maximum=1023) for i, d in enumerate(_as_list(devices, where))]
    if len(set(result)) != len(result):
        _fail(where, f"lists a GPU twice: {result}")
    return result


def _check_host(value: Any, where: str) -> str:
    """An IP address or a DNS name (what goes into a URL's host or a bind address)."""
    host = _text(value, where, allow_empty=False)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if host not in ANY_ADDRESSES and not HOSTNAME_RE.match(host):
            _fail(where, f"must be an IP address or a host name (no port, scheme or spaces), got {host!r}")
    return host


def _is_ipv6(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).version == 6
    except ValueError:
        return False


def _check_served_names(names: Any, where: str) -> None:
    for i, name in enumerate(names if isinstance(names, (list, tuple)) else [names]):
        item_where = f"{where}[{i}]" if isinstance(names, (list, tuple)) else where
        if not isinstance(name, str):
            continue  # the server configuration model names the type error
        _text(name, item_where)
        if ENV_FILE_UNSAFE.search(name):
            _fail(
                item_where,
                f"must not contain quotes or backslashes (the watchdog's environment file carries it), got {name!r}",
            )


def _sets_pip_index(word: str) -> bool:
    """``-i URL``, ``-iURL``, ``--index-url[=URL]``, ``--extra-index-url`` and the abbreviations pip accepts."""
    if word.startswith("-i"):
        return True
    name = word.split("=", 1)[0]
    return len(name) >= len("--ind") and any(option.startswith(name) for option in ("--index-url", "--extra-index-url"))


def _reaches(client: str, listen: str) -> bool:
    """Whether a client connecting to ``client`` reaches a socket bound to ``listen`` (not a wildcard).

    A socket bound to 127.0.0.1 answers neither ::1 nor 127.0.0.2; only the name ``localhost`` stands for
    either loopback address (the client tries each address it resolves to).
    """
    if client == listen:
        return True
    if client == "localhost":
        return listen in LOOPBACK_NAMES
    return listen == "localhost" and client in LOOPBACK_NAMES


def _check_writable_environment(env: Any, where: str, writable: List[str]) -> None:
    """Cache and home directories set in an environment must be writable inside the unit's sandbox."""
    for key in sorted(k for k in (env or {}) if k in WRITABLE_ENVIRONMENT):
        value = str(env[key])
        if not value.startswith("/") or not any(_within(posixpath.normpath(value), path) for path in writable):
            _fail(
                f"{where}.{key}",
                f"{value} is not writable by the server: the vllm@ unit makes everything read-only "
                "(ProtectSystem=strict) but vllm_host_state_dir, vllm_host_extra_read_write_paths and its private "
                f"temporary directories; put it under {writable[0]}",
            )


def _role_variable_error(exc: VllmConfigError, where: str) -> str:
    """The message of a configuration error, naming the role variable when a role-set key is at fault."""
    for key, variable in ROLE_SERVER_KEYS.items():
        prefix = f"{where}.{key}"
        if exc.field == prefix or exc.field.startswith((prefix + "[", prefix + ".")):
            return f"{variable}{exc.field[len(prefix) :]}: {exc.message}"
    return str(exc)


def plan_host(s: Dict[str, Any]) -> Dict[str, Any]:
    """Check the role's variables (``s``: name without the ``vllm_host_`` prefix -> value) and return the plan.

    The plan: ``servers`` (per instance: name, devices, config, args, port (what clients use), engine_host,
    engine_port, probe_url (the engine itself, for the watchdog), gate_url (what the health gate calls)),
    and ``proxy``/``tls`` switches. Raises HostPlanError on the first problem.
    """
    s = dict(s)  # the integers are normalized in place below; the caller's settings stay as they were
    profile = s["profile"]
    if profile not in ("cuda", "cpu"):
        _fail("vllm_host_profile", f"must be cuda or cpu, got {profile!r}")
    version = _text(s["version"], "vllm_host_version", allow_empty=False)
    if not VERSION_RE.match(version):
        _fail(
            "vllm_host_version",
            f"must be a pinned release such as 0.32.0 (not a range, wildcard or 'latest'), got {version!r}",
        )
    package = _text(s.get("package", ""), "vllm_host_package")
    if package and not PACKAGE_RE.match(package):
        _fail("vllm_host_package", f"must be a PyPI distribution name, got {package!r}")

    for var in ("user", "group"):
        name = _text(s[var], "vllm_host_" + var, allow_empty=False)
        if not ACCOUNT_RE.match(name):
            _fail("vllm_host_" + var, f"must be a plain account name (a-z, 0-9, _ and -), got {name!r}")
        if name in ("root", "wheel", "sudo", "adm", "daemon", "bin", "sys", "nogroup", "nobody"):
            _fail(
                "vllm_host_" + var,
                f"{name!r} is a system account; vLLM runs as a dedicated unprivileged one (default: vllm)",
            )

    dirs = {var: check_path(s[var + "_dir"], f"vllm_host_{var}_dir") for var in ("install", "config", "state")}
    for var, path in dirs.items():
        for other, other_path in dirs.items():
            if var != other and _within(path, other_path):
                _fail(
                    f"vllm_host_{var}_dir",
                    f"{path} is inside vllm_host_{other}_dir ({other_path}); the three directories must be separate "
                    "(the state directory belongs to the service user, the others to root)",
                )
    for var, use in (
        ("install", "run the virtualenv (server and watchdog) from it"),
        ("state", "use it as its working directory and cache"),
    ):
        hidden = hidden_by_sandbox(dirs[var])
        if hidden:
            _fail(
                f"vllm_host_{var}_dir",
                f"{dirs[var]} is under {hidden}, which the sandbox of the vllm@ and watchdog units hides "
                f"(ProtectHome, PrivateTmp); the server could not {use}",
            )
    python = check_path(s["python"], "vllm_host_python", allow_system=True)
    hidden = hidden_by_sandbox(python)
    if hidden:
        _fail(
            "vllm_host_python",
            f"{python} is under {hidden}, which the units' sandbox hides: the virtualenv's interpreter links to it, "
            "so neither the server nor the watchdog could start; use a system Python such as /usr/bin/python3",
        )
    rw_paths = [
        check_path(p, f"vllm_host_extra_read_write_paths[{i}]")
        for i, p in enumerate(_as_list(s["extra_read_write_paths"], "vllm_host_extra_read_write_paths"))
    ]
    for i, path in enumerate(rw_paths):
        if _within(dirs["config"], path) or _within(dirs["install"], path):
            _fail(
                f"vllm_host_extra_read_write_paths[{i}]",
                f"{path} would make the root-owned configuration or install directory writable by the server",
            )
    ro_paths = [
        check_path(p, f"vllm_host_extra_read_only_paths[{i}]", allow_system=True)
        for i, p in enumerate(_as_list(s["extra_read_only_paths"], "vllm_host_extra_read_only_paths"))
    ]
    for var, paths in (("extra_read_write_paths", rw_paths), ("extra_read_only_paths", ro_paths)):
        for i, path in enumerate(paths):
            hidden = hidden_by_sandbox(path)
            if hidden:
                _fail(
                    f"vllm_host_{var}[{i}]",
                    f"{path} is under {hidden}, which the vllm@ unit's sandbox hides (ProtectHome, PrivateTmp): the "
                    "path does not exist there, so systemd would refuse to start the unit",
                )
    for i, path in enumerate(ro_paths):
        # A more specific path wins in the unit's namespace: this one would override ReadWritePaths= of the state.
        if _within(path, dirs["state"]):
            _fail(
                f"vllm_host_extra_read_only_paths[{i}]",
                "{} would make the server's state directory (vllm_host_state_dir {}: caches, Hugging Face home) "
                "read-only".format(path, dirs["state"]),
            )

    proxy = _as_bool(s["proxy"], "vllm_host_proxy")
    tls = _as_bool(s["tls"], "vllm_host_tls")
    if tls and not proxy:
        _fail(
            "vllm_host_tls",
            "is true but vllm_host_proxy is false: TLS is terminated by the proxy, so the engine would serve plain "
            "HTTP; keep the proxy, or set vllm_host_tls to false as well (plain HTTP, not recommended)",
        )
    for i, unit in enumerate(_as_list(s.get("on_failure_units", []), "vllm_host_on_failure_units")):
        if not isinstance(unit, str) or not UNIT_NAME_RE.match(unit):
            _fail(
                f"vllm_host_on_failure_units[{i}]",
                f"must be a systemd unit name such as notify-oncall@%i.service (it goes into OnFailure=), got {unit!r}",
            )
    key_required = _as_bool(s["api_key_required"], "vllm_host_api_key_required")
    api_key = check_secret(s["api_key"], "vllm_host_api_key", MIN_KEY_LENGTH)
    if key_required and not api_key:
        _fail(
            "vllm_host_api_key",
            "is empty but vllm_host_api_key_required is true: set vllm_host_api_key (from Ansible Vault) or set "
            "vllm_host_api_key_required to false for an open endpoint",
        )
    check_secret(s["hf_token"], "vllm_host_hf_token")

    # pip values may carry credentials: checked without echoing them.
    pip_index = _text(s["pip_index_url"], "vllm_host_pip_index_url", echo=False)
    if pip_index and not re.match(r"^https?://[^\s]+\Z", pip_index):
        _fail("vllm_host_pip_index_url", f"must be an http(s) URL, got a {len(pip_index)}-character value")
    for var in ("pip_find_links", "pip_extra_args"):
        for i, value in enumerate(_as_list(s[var], "vllm_host_" + var)):
            text = _text(value, f"vllm_host_{var}[{i}]", echo=False)
            if URL_CREDENTIALS_RE.match(text) or re.search(r"://[^/@\s]*:[^/@\s]*@", text):
                _fail(
                    f"vllm_host_{var}[{i}]",
                    "carries credentials in a URL, which would reach pip's command line; give the index with its "
                    "credentials as vllm_host_pip_index_url (written to a 0600 pip.conf) instead",
                )
            if var == "pip_extra_args" and _sets_pip_index(text):
                _fail(
                    f"vllm_host_{var}[{i}]",
                    "sets the index on pip's command line; use vllm_host_pip_index_url",
                )

    ip_allow = _as_list(s["engine_ip_allow"], "vllm_host_engine_ip_allow")
    for i, value in enumerate(ip_allow):
        if value != "any":
            _check_address(value, f"vllm_host_engine_ip_allow[{i}]")
    metrics_allow = _check_address_list(s["metrics_allow"], "vllm_host_metrics_allow")
    routes = [
        _text(r, f"vllm_host_proxy_routes[{i}]", allow_empty=False)
        for i, r in enumerate(_as_list(s["proxy_routes"], "vllm_host_proxy_routes"))
    ]
    for i, route in enumerate(routes):
        if not ROUTE_RE.match(route) or "/../" in route or route.endswith("/.."):
            _fail(f"vllm_host_proxy_routes[{i}]", f"must be a URL path prefix such as /v1/, got {route!r}")
    if proxy and not routes:
        _fail("vllm_host_proxy_routes", "is empty: clients could reach nothing; the default is ['/v1/']")

    proxy_bind = _text(s["proxy_bind"], "vllm_host_proxy_bind", allow_empty=False)
    if proxy_bind not in ANY_ADDRESSES:
        try:
            ipaddress.ip_address(proxy_bind)
        except ValueError:
            _fail(
                "vllm_host_proxy_bind",
                f"must be an IP address of the host (or 0.0.0.0 / :: for all), got {proxy_bind!r}",
            )
    offset = _as_int(s["engine_port_offset"], "vllm_host_engine_port_offset", minimum=1, maximum=64511)
    if tls:
        cert, key, local_ca = s["tls_cert_src"], s["tls_key_src"], s["tls_local_ca_dir"]
        if bool(cert) != bool(key):
            _fail(
                "vllm_host_tls_cert_src" if not cert else "vllm_host_tls_key_src",
                "give both the certificate and its key",
            )
        if not cert and not local_ca:
            _fail(
                "vllm_host_tls_cert_src",
                "is empty: give this host's certificate and key (vllm_host_tls_cert_src, vllm_host_tls_key_src), or "
                "vllm_host_tls_local_ca_dir to issue one from a local CA (tests, demos), or set vllm_host_tls to false",
            )
        for var in ("tls_cert_src", "tls_key_src", "tls_ca_src"):
            if s[var] and not os.path.isfile(s[var]):
                _fail("vllm_host_" + var, f"{s[var]} is not a file on the controller")
        if local_ca and not cert:
            check_path(local_ca, "vllm_host_tls_local_ca_dir", allow_system=False)

    for var, minimum in (
        ("restart_sec", 0),
        ("stop_timeout", 1),
        ("start_timeout", 1),
        ("health_timeout", 1),
        ("min_free_disk_mb", 0),
        ("watchdog_interval", 1),
        ("watchdog_timeout", 1),
        ("watchdog_failures", 1),
        ("watchdog_start_grace", 0),
        ("proxy_timeout", 1),
    ):
        s[var] = _as_int(s[var], "vllm_host_" + var, minimum=minimum)
    watchdog = _as_bool(s["watchdog"], "vllm_host_watchdog")
    if watchdog and s["watchdog_start_grace"] < s["health_timeout"]:
        # A first start is not under a maintenance marker: the grace must cover the whole health gate.
        _fail(
            "vllm_host_watchdog_start_grace",
            "({} s) is shorter than vllm_host_health_timeout ({} s): the watchdog would kill an engine the health "
            "gate still waits for while it loads".format(s["watchdog_start_grace"], s["health_timeout"]),
        )
    if watchdog and s["watchdog_timeout"] > s["watchdog_interval"] * 6:
        _fail(
            "vllm_host_watchdog_timeout",
            "({} s) is far longer than the interval ({} s); a hung engine would go unnoticed for minutes".format(
                s["watchdog_timeout"], s["watchdog_interval"]
            ),
        )

    _check_served_names(s["served_model_name"], "vllm_host_served_model_name")
    server_defaults = s["server_defaults"]
    if server_defaults is None:
        server_defaults = {}
    if not isinstance(server_defaults, dict):
        _fail(
            "vllm_host_server_defaults",
            f"must be a mapping of server configuration keys, got {_type_name(server_defaults)}",
        )
    for key in sorted(k for k in server_defaults if k in ROLE_SERVER_KEYS):
        _fail(f"vllm_host_server_defaults.{key}", f"is set by the role; use {ROLE_SERVER_KEYS[key]} instead")
    lora_runtime = _as_bool(s["lora_runtime_updating"], "vllm_host_lora_runtime_updating")
    if proxy and "host" in server_defaults:
        _fail(
            "vllm_host_server_defaults.host",
            "the engine listens on 127.0.0.1 behind the proxy; vllm_host_proxy_bind sets the address clients use",
        )

    base_env = _check_environment(s["environment"], "vllm_host_environment")
    writable = [dirs["state"], *rw_paths, "/tmp", "/var/tmp"]  # noqa: S108 - PrivateTmp: the unit's own
    _check_writable_environment(base_env, "vllm_host_environment", writable)
    del base_env  # checked, never returned (values may be secrets)

    instances = _as_list(s["instances"], "vllm_host_instances")
    if not instances:
        _fail("vllm_host_instances", "must list at least one instance")
    names = []  # type: List[str]
    used_devices = {}  # type: Dict[int, str]
    servers = []
    for idx, inst in enumerate(instances):
        where = f"vllm_host_instances[{idx}]"
        if not isinstance(inst, dict):
            _fail(where, f"must be a mapping with at least a `name`, got {_type_name(inst)}")
        name = inst.get("name")
        if not isinstance(name, str) or not INSTANCE_NAME_RE.match(name):
            _fail(
                where + ".name",
                "must be a string of a-z, 0-9, '-' or '_' (at most 32, it names the systemd unit vllm@NAME), "
                f"got {name!r}",
            )
        if name in names:
            _fail(where + ".name", f"vllm@{name} is declared twice")
        names.append(name)
        # `devices: 0` is GPU 0 written as a scalar, not "no devices": only an absent/null value means none.
        devices = _check_devices([] if inst.get("devices") is None else inst["devices"], where + ".devices")
        if devices and profile == "cpu":
            _fail(where + ".devices", "lists GPUs, but the cpu profile has none")
        for device in devices:
            if device in used_devices:
                _fail(
                    where + ".devices",
                    f"GPU {device} is already given to vllm@{used_devices[device]}; each GPU serves one instance",
                )
            used_devices[device] = name
        _check_writable_environment(
            _check_environment(inst.get("environment"), where + ".environment"), where + ".environment", writable
        )

        own = {k: v for k, v in inst.items() if k not in INSTANCE_KEYS}
        for key in sorted(k for k in own if k in ROLE_SERVER_KEYS):
            _fail(f"{where}.{key}", f"is set by the role for every instance; use {ROLE_SERVER_KEYS[key]} instead")
        if proxy and "host" in own:
            _fail(
                where + ".host",
                "the engine listens on 127.0.0.1 behind the proxy; vllm_host_proxy_bind sets the address clients use",
            )
        merged = {"model": s["model_path"], "served_model_name": s["served_model_name"], "device": profile}
        merged.update(server_defaults)
        merged.update(own)
        merged.update(lora_adapters=s["lora_adapters"], lora_runtime_updating=lora_runtime)
        try:
            config = normalize_server_config(merged, where)
        except VllmConfigError as exc:
            raise HostPlanError(_role_variable_error(exc, where)) from None
        needed = config["tensor_parallel_size"] * config["pipeline_parallel_size"]
        if devices and len(devices) != needed:
            _fail(
                where + ".devices",
                f"lists {len(devices)} GPU(s) but tensor_parallel_size x pipeline_parallel_size is {needed}",
            )
        _check_served_names(config["served_model_name"] or [], where + ".served_model_name")
        for i, word in enumerate(config["extra_args"]):
            option = word.split("=", 1)[0].replace("_", "-") if word.startswith("--") else ""
            if proxy and len(option) >= 4 and "--uds".startswith(option):
                _fail(
                    f"{where}.extra_args[{i}]",
                    "--uds makes the engine listen on a Unix socket instead of the port the proxy forwards to",
                )
            if watchdog and option == "--disable-log-stats":
                _fail(
                    f"{where}.extra_args[{i}]",
                    "--disable-log-stats hides the token counters the watchdog uses to tell a busy engine from a "
                    "hung one; drop it or set vllm_host_watchdog to false",
                )
        _check_model_location(config["model"], where + ".model", dirs["config"], ip_allow)
        for adapter, path in sorted(config["lora_modules"].items()):
            _check_model_location(path, f"{where}.lora_modules.{adapter}", dirs["config"], ["any"])
        if (config["shutdown_timeout"] or 0) >= s["stop_timeout"]:
            _fail(
                "vllm_host_stop_timeout",
                "({} s) must exceed the shutdown_timeout of vllm@{} ({} s), or systemd kills the server while it still "
                "drains requests in flight".format(s["stop_timeout"], name, config["shutdown_timeout"]),
            )

        port = config["port"]
        if proxy:
            engine_port = port + offset
            if engine_port > 65535:
                _fail(
                    where + ".port",
                    f"{port} + vllm_host_engine_port_offset {offset} is beyond 65535; lower one of them",
                )
            if engine_port < 1024:
                _fail(
                    where + ".port",
                    "{} + vllm_host_engine_port_offset {} = {} is a privileged port, which the engine (running as {} "
                    "without capabilities) cannot bind; raise vllm_host_engine_port_offset".format(
                        port, offset, engine_port, s["user"]
                    ),
                )
            config["host"] = "127.0.0.1"
            config["port"] = engine_port
            engine_host = "127.0.0.1"
        else:
            engine_port = port
            engine_host = _check_host(config["host"], where + ".host")
            if port < 1024:
                _fail(
                    where + ".port",
                    "{} is a privileged port and the engine runs as {} without capabilities; enable vllm_host_proxy "
                    "(HAProxy binds it) or use a port of 1024 or more".format(port, s["user"]),
                )
        probe_host = "127.0.0.1" if engine_host in ANY_ADDRESSES or engine_host == "localhost" else engine_host
        if ":" in probe_host:
            probe_host = f"[{probe_host}]"
        servers.append(
            {
                "name": name,
                "devices": devices,
                "config": config,
                "args": render_server_args(config, where),
                "port": port,
                "engine_host": engine_host,
                "engine_port": engine_port,
                "probe_url": f"http://{probe_host}:{engine_port}",
            }
        )

    if profile == "cuda" and len(servers) > 1:
        for idx, srv in enumerate(servers):
            if not srv["devices"]:
                _fail(
                    f"vllm_host_instances[{idx}].devices",
                    "is empty, so vllm@{} would use every GPU, which the host's other instances use too; give each "
                    "instance its own `devices` when a host runs several".format(srv["name"]),
                )

    public = [srv["port"] for srv in servers]
    engines = [srv["engine_port"] for srv in servers]
    for idx, srv in enumerate(servers):
        where = f"vllm_host_instances[{idx}].port"
        if public.count(srv["port"]) > 1:
            _fail(where, "{} is used by two instances ({}); give each its own port".format(srv["port"], public))
        if proxy and (srv["engine_port"] in public or engines.count(srv["engine_port"]) > 1):
            _fail(
                where,
                "the engine port {} (port + vllm_host_engine_port_offset) collides with another instance's port; "
                "change vllm_host_engine_port_offset".format(srv["engine_port"]),
            )

    health_host = _check_host(s["health_host"], "vllm_host_health_host")
    for srv in servers:
        listen = proxy_bind if proxy else srv["engine_host"]
        if listen in IPV4_ANY_ADDRESSES and _is_ipv6(health_host):
            _fail(
                "vllm_host_health_host",
                "{} is an IPv6 address, but vllm@{} listens on IPv4 only ({}); the health gate would find "
                "nothing".format(health_host, srv["name"], listen),
            )
        if listen in ANY_ADDRESSES:
            continue
        if not _reaches(health_host, listen):
            _fail(
                "vllm_host_health_host",
                "{} is not where vllm@{} listens ({}); the health gate would find nothing".format(
                    health_host, srv["name"], listen
                ),
            )
    gate_host = f"[{health_host}]" if ":" in health_host else health_host
    scheme = "https" if tls else "http"
    for srv in servers:
        srv["gate_url"] = "{}://{}:{}".format(scheme, gate_host, srv["port"])

    return {
        "servers": servers,
        "proxy": proxy,
        "tls": tls,
        "watchdog": watchdog,
        "metrics_allow": metrics_allow,
        "routes": routes,
        "python": python,
    }
