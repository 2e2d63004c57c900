"""Bad variables make vllm_host fail in preflight, before any change, naming the variable.

Every case is one inventory host (``case-NNN``, ``ansible_connection: local``) whose host vars are one
bad setting on top of an otherwise valid configuration, and ONE ansible-playbook run (forks 10, the
ansible.posix.json callback, ``--tags vllm_host_preflight``) plays the real role against all of them; the
tests then read each host's results. A bad host must fail in a variable check (the role's argument
spec, the one-pass plan of plugins/module_utils/vllm_host_plan.py, the drain-hook check or the GPU
checks), in a message that names the variable, with changed=0 and without its API key in the output.

The cases aim at values that have the right type and still cannot work on a real host: privileged ports,
one GPU in two instances, system directories, characters that break unit and environment files, system
accounts, paths the unit's sandbox hides, addresses nothing listens on, unpinned versions, the same name
or number written two ways.

The valid controls (``VALID_CASES``) pass every variable check. This controller is not a systemd host, so
they stop at the host assert (HOST_CHECKS), which is what proves the variable checks let them through.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

import pytest
from itest_support import (
    LOCAL_HOST,
    CaseRun,
    assert_fails_in_variable_checks,
    assert_one_run_for_every_case,
    assert_passes_variable_checks,
    case_hosts,
    case_overrides,
    run_role_cases,
    secrets_in,
    task_name,
)
from itest_support import VariableCase as Case

ROOT = Path(__file__).resolve().parents[3]
DATA = ROOT / "tests" / "unit" / "data" / "nvidia-smi"
KEY_MARK = "s3cret"  # in every API key, token and secret-like value a case sets: none may reach the output


CUDA = {"vllm_host_profile": "cuda", "vllm_host_gpu_check": False}
NO_PROXY = {"vllm_host_proxy": False, "vllm_host_tls": False}


def inst(**keys: Any) -> Dict[str, Any]:
    return {"vllm_host_instances": [{"name": "main", "port": 8000, **keys}]}


def insts(*entries: Dict[str, Any]) -> Dict[str, Any]:
    return {"vllm_host_instances": list(entries)}


CASES: Dict[str, Case] = {
    # --- kept from the one-run-per-case version of this file -------------------------------------
    "profile not a choice": Case({"vllm_host_profile": "gpu"}, "vllm_host_profile"),
    "drain time beyond the stop timeout": Case(inst(shutdown_timeout=200), "vllm_host_stop_timeout", "must exceed"),
    "negative drain time": Case(inst(shutdown_timeout=-1), "vllm_host_instances[0].shutdown_timeout"),
    "drain hook that does not exist": Case(
        {"vllm_host_drain_tasks": "/nonexistent/drain.yml"}, "vllm_host_drain_tasks", "does not exist"
    ),
    "gate hook that does not exist": Case(
        {"vllm_host_gate_tasks": "/nonexistent/parity.yml"}, "vllm_host_gate_tasks", "does not exist"
    ),
    "instances not a list": Case({"vllm_host_instances": 5}, "vllm_host_instances"),
    "instance without name": Case(insts({"port": 8000}), "vllm_host_instances[0].name"),
    "instance name with spaces": Case(insts({"name": "Main Server"}), "vllm_host_instances[0].name"),
    "duplicate instance names": Case(
        insts({"name": "a", "port": 8000}, {"name": "a", "port": 8001}), "vllm_host_instances[1].name", "twice"
    ),
    "duplicate ports": Case(
        insts({"name": "a", "port": 8000}, {"name": "b", "port": 8000}), "vllm_host_instances[0].port", "two instances"
    ),
    "port out of range": Case(inst(port=70000), "vllm_host_instances[0].port"),
    "port not a number": Case(inst(port="http"), "vllm_host_instances[0].port"),
    "gpu memory fraction above 1": Case(
        {**CUDA, **inst(gpu_memory_utilization=1.5)}, "vllm_host_instances[0].gpu_memory_utilization"
    ),
    "gpu memory fraction zero": Case(
        {**CUDA, **inst(gpu_memory_utilization=0)}, "vllm_host_instances[0].gpu_memory_utilization"
    ),
    "tensor parallel size zero": Case(inst(tensor_parallel_size=0), "vllm_host_instances[0].tensor_parallel_size"),
    "unknown dtype": Case({"vllm_host_server_defaults": {"dtype": "fp7"}}, "vllm_host_instances[0].dtype"),
    "misspelled server key": Case(inst(max_model_length=512), "vllm_host_instances[0].max_model_length", "unknown"),
    "api key in extra_args": Case(
        inst(extra_args=["--api-key", f"{KEY_MARK}-in-argv-0123456789"]), "vllm_host_instances[0].extra_args[0]"
    ),
    "missing model": Case({"vllm_host_model_path": ""}, "vllm_host_instances[0].model"),
    "empty key where one is required": Case({"vllm_host_api_key": ""}, "vllm_host_api_key", "is empty"),
    "health timeout not an int": Case({"vllm_host_health_timeout": "soon"}, "vllm_host_health_timeout"),
    "unknown health probe": Case({"vllm_host_health_probes": ["ping"]}, "vllm_host_health_probes"),
    "disk threshold not an int": Case({"vllm_host_min_free_disk_mb": "lots"}, "vllm_host_min_free_disk_mb"),
    # GPU checks against a replayed real H100 host (one GPU): see replaying_nvidia_smi().
    "tensor parallel size above the GPU count": Case(
        {"vllm_host_profile": "cuda", **inst(tensor_parallel_size=2)}, "vllm_host_instances", "1 GPU(s)"
    ),
    "device index the host does not have": Case(
        {"vllm_host_profile": "cuda", **inst(devices=[3])}, "vllm_host_instances", "1 GPU(s)"
    ),
    # --- accounts ------------------------------------------------------------------------------------
    "root as the service user": Case({"vllm_host_user": "root"}, "vllm_host_user", "system account"),
    "daemon as the service group": Case({"vllm_host_group": "daemon"}, "vllm_host_group", "system account"),
    "nobody as the service user": Case({"vllm_host_user": "nobody"}, "vllm_host_user", "system account"),
    "user name with a space": Case({"vllm_host_user": "vllm svc"}, "vllm_host_user", "plain account name"),
    "user name with a newline": Case({"vllm_host_user": "vllm\nroot"}, "vllm_host_user", "control characters"),
    # --- what gets installed ---------------------------------------------------------------------------
    "version latest": Case({"vllm_host_version": "latest"}, "vllm_host_version", "pinned release"),
    "version range": Case({"vllm_host_version": ">=0.32"}, "vllm_host_version", "pinned release"),
    "version wildcard": Case({"vllm_host_version": "0.32.*"}, "vllm_host_version", "pinned release"),
    "version with a trailing space": Case({"vllm_host_version": "0.32.0 "}, "vllm_host_version", "pinned release"),
    "package with a version pin": Case({"vllm_host_package": "vllm==0.31.0"}, "vllm_host_package", "PyPI"),
    "index URL without a scheme": Case(
        {"vllm_host_pip_index_url": "mirror.internal/simple"}, "vllm_host_pip_index_url", "http(s) URL"
    ),
    "credentials in a find-links URL": Case(
        {"vllm_host_pip_find_links": [f"https://ci:{KEY_MARK}-pw@mirror.internal/wheels/"]},
        "vllm_host_pip_find_links[0]",
        "credentials",
    ),
    "credentials in a pip argument": Case(
        {"vllm_host_pip_extra_args": ["--trusted-host", f"https://{KEY_MARK}-token@mirror.internal/simple"]},
        "vllm_host_pip_extra_args[1]",
        "credentials",
    ),
    "index URL in pip arguments": Case(
        {"vllm_host_pip_extra_args": ["--index-url", "https://mirror.internal/simple"]},
        "vllm_host_pip_extra_args[0]",
        "sets the index",
    ),
    "short index option glued to its URL in pip arguments": Case(
        {"vllm_host_pip_extra_args": ["-ihttps://mirror.internal/simple"]}, "vllm_host_pip_extra_args[0]", "index"
    ),
    "abbreviated extra index option in pip arguments": Case(
        {"vllm_host_pip_extra_args": ["--extra-index=https://mirror.internal/simple"]},
        "vllm_host_pip_extra_args[0]",
        "sets the index",
    ),
    # --- the role's directories ------------------------------------------------------------------------
    "root directory as the install directory": Case({"vllm_host_install_dir": "/"}, "vllm_host_install_dir", "system"),
    "/etc as the config directory": Case({"vllm_host_config_dir": "/etc"}, "vllm_host_config_dir", "system directory"),
    "/var/lib as the state directory": Case(
        {"vllm_host_state_dir": "/var/lib"}, "vllm_host_state_dir", "system directory"
    ),
    "/opt as the install directory": Case({"vllm_host_install_dir": "/opt"}, "vllm_host_install_dir", "system"),
    "relative install directory": Case({"vllm_host_install_dir": "opt/vllm"}, "vllm_host_install_dir", "absolute"),
    "config directory with ..": Case({"vllm_host_config_dir": "/etc/vllm/../ssh"}, "vllm_host_config_dir", "..'"),
    "state directory with a space": Case(
        {"vllm_host_state_dir": "/var/lib/my vllm"}, "vllm_host_state_dir", "must not contain spaces"
    ),
    "install directory with a quote": Case(
        {"vllm_host_install_dir": "/opt/vllm'x"}, "vllm_host_install_dir", "must not contain spaces, quotes"
    ),
    "config directory with a percent sign": Case(
        {"vllm_host_config_dir": "/etc/vllm%i"}, "vllm_host_config_dir", "special characters"
    ),
    "state directory inside the config directory": Case(
        {"vllm_host_state_dir": "/etc/vllm/state"}, "vllm_host_state_dir", "inside vllm_host_config_dir"
    ),
    "config directory inside the install directory": Case(
        {"vllm_host_config_dir": "/opt/vllm/etc"}, "vllm_host_config_dir", "inside vllm_host_install_dir"
    ),
    "install directory under /home": Case(
        {"vllm_host_install_dir": "/home/ops/vllm"}, "vllm_host_install_dir", "hides"
    ),
    "state directory under /tmp": Case({"vllm_host_state_dir": "/tmp/vllm-state"}, "vllm_host_state_dir", "hides"),
    "python under /root": Case({"vllm_host_python": "/root/.pyenv/bin/python3"}, "vllm_host_python", "hides"),
    "relative python": Case({"vllm_host_python": "python3"}, "vllm_host_python", "absolute"),
    "read-write path /etc": Case(
        {"vllm_host_extra_read_write_paths": ["/etc"]}, "vllm_host_extra_read_write_paths[0]", "system directory"
    ),
    "read-write path covering the config directory": Case(
        {"vllm_host_extra_read_write_paths": ["/etc/vllm"]}, "vllm_host_extra_read_write_paths[0]", "root-owned"
    ),
    "read-write path covering the install directory": Case(
        {"vllm_host_extra_read_write_paths": ["/srv/data", "/opt/vllm"]},
        "vllm_host_extra_read_write_paths[1]",
        "root-owned",
    ),
    "read-write path under /tmp": Case(
        {"vllm_host_extra_read_write_paths": ["/tmp/scratch"]}, "vllm_host_extra_read_write_paths[0]", "hides"
    ),
    "read-write paths as one string": Case(
        {"vllm_host_extra_read_write_paths": "/srv/data"}, "vllm_host_extra_read_write_paths", "must be a list"
    ),
    "read-only path that is the state directory": Case(
        {"vllm_host_extra_read_only_paths": ["/var/lib/vllm"]}, "vllm_host_extra_read_only_paths[0]", "read-only"
    ),
    "read-only path inside the state directory": Case(
        {"vllm_host_extra_read_only_paths": ["/var/lib/vllm/cache"]}, "vllm_host_extra_read_only_paths[0]", "state"
    ),
    "read-only path with a space": Case(
        {"vllm_host_extra_read_only_paths": ["/srv/shared models"]}, "vllm_host_extra_read_only_paths[0]", "spaces"
    ),
    # --- the model the server must read ----------------------------------------------------------------
    "model under /home": Case(
        {"vllm_host_model_path": "/home/ops/models/tiny"}, "vllm_host_instances[0].model", "/home"
    ),
    "model under /root": Case({"vllm_host_model_path": "/root/models/tiny"}, "vllm_host_instances[0].model", "/root"),
    "model under /tmp": Case({"vllm_host_model_path": "/tmp/models/tiny"}, "vllm_host_instances[0].model", "/tmp"),
    "model that walks into /home with ..": Case(
        {"vllm_host_model_path": "/srv/../home/ops/tiny"}, "vllm_host_instances[0].model", "hides"
    ),
    "model in the config directory": Case(
        {"vllm_host_model_path": "/etc/vllm/models/tiny"}, "vllm_host_instances[0].model", "vllm_host_config_dir"
    ),
    "instance model in the config directory": Case(
        inst(model="/etc/vllm/tiny"), "vllm_host_instances[0].model", "vllm_host_config_dir"
    ),
    "Hugging Face id with the engine's egress restricted": Case(
        {"vllm_host_model_path": "Qwen/Qwen2.5-0.5B-Instruct"}, "vllm_host_instances[0].model", "Hugging Face id"
    ),
    "relative model path": Case(
        {"vllm_host_model_path": "./models/tiny", "vllm_host_engine_ip_allow": ["any"]},
        "vllm_host_instances[0].model",
        "neither an absolute path",
    ),
    "model in the home directory by tilde": Case(
        {"vllm_host_model_path": "~/models/tiny", "vllm_host_engine_ip_allow": ["any"]},
        "vllm_host_instances[0].model",
        "neither an absolute path",
    ),
    "model path with a newline": Case(
        {"vllm_host_model_path": "/srv/models/tiny\nExecStartPre=/bin/true"},
        "vllm_host_instances[0].model",
        "control characters",
    ),
    "LoRA adapter under /home": Case(
        inst(enable_lora=True, lora_modules={"sql": "/home/ops/adapters/sql"}),
        "vllm_host_instances[0].lora_modules.sql",
        "hides",
    ),
    "LoRA adapter under /tmp": Case(
        inst(enable_lora=True, lora_modules={"sql": "/tmp/adapters/sql"}),
        "vllm_host_instances[0].lora_modules.sql",
        "hides",
    ),
    "served model name with a newline": Case(
        {"vllm_host_served_model_name": "tiny\nWATCHDOG_URL=http://10.0.0.9"},
        "vllm_host_served_model_name",
        "control characters",
    ),
    "served model name with a quote": Case(
        {"vllm_host_served_model_name": 'tiny"chat'}, "vllm_host_served_model_name", "quotes"
    ),
    "instance served model name with a backslash": Case(
        inst(served_model_name=["tiny", "tiny\\chat"]), "vllm_host_instances[0].served_model_name[1]", "backslashes"
    ),
    # --- environment files -----------------------------------------------------------------------------
    "environment name with a newline": Case(
        {"vllm_host_environment": {"FOO\nVLLM_API_KEY": "1"}}, "vllm_host_environment.FOO", "not a valid"
    ),
    "environment name with a trailing newline": Case(
        {"vllm_host_environment": {"HF_HUB_OFFLINE\n": "1"}}, "vllm_host_environment.HF_HUB_OFFLINE", "not a valid"
    ),
    "environment name starting with a digit": Case(
        {"vllm_host_environment": {"1ST": "1"}}, "vllm_host_environment.1ST", "not a valid"
    ),
    "environment value with a newline": Case(
        {"vllm_host_environment": {"HF_HUB_OFFLINE": f"1\nVLLM_API_KEY={KEY_MARK}-injected-0123456789"}},
        "vllm_host_environment.HF_HUB_OFFLINE",
        "newlines",
    ),
    "environment value that is a list": Case(
        {"vllm_host_environment": {"VLLM_CPU_OMP_THREADS_BIND": [0, 1]}},
        "vllm_host_environment.VLLM_CPU_OMP_THREADS_BIND",
        "string or a number",
    ),
    "Hugging Face home the sandbox makes read-only": Case(
        {"vllm_host_environment": {"HF_HOME": "/var/cache/huggingface"}},
        "vllm_host_environment.HF_HOME",
        "not writable",
    ),
    "instance cache root in the install directory": Case(
        inst(environment={"VLLM_CACHE_ROOT": "/opt/vllm/cache"}),
        "vllm_host_instances[0].environment.VLLM_CACHE_ROOT",
        "not writable",
    ),
    "HF_TOKEN in the shared environment": Case(
        {"vllm_host_environment": {"HF_TOKEN": f"hf_{KEY_MARK}0123456789"}},
        "vllm_host_environment.HF_TOKEN",
        "vllm_host_hf_token",
    ),
    "VLLM_API_KEY in an instance environment": Case(
        inst(environment={"VLLM_API_KEY": f"{KEY_MARK}-other-0123456789"}),
        "vllm_host_instances[0].environment.VLLM_API_KEY",
        "set by the role",
    ),
    "CUDA_VISIBLE_DEVICES in an instance environment": Case(
        {**CUDA, **inst(environment={"CUDA_VISIBLE_DEVICES": "0"})},
        "vllm_host_instances[0].environment.CUDA_VISIBLE_DEVICES",
        "devices",
    ),
    "LoRA adapter name with a slash": Case(
        {"vllm_host_lora_adapters": [{"name": "org/sql", "path": "/srv/vllm/adapters/sql", "rank": 8}]},
        "vllm_host_lora_adapters[0].name",
        "letters, digits and ._-",
    ),
    "LoRA adapter path leaving its directory": Case(
        {"vllm_host_lora_adapters": [{"name": "sql", "path": "/srv/vllm/adapters/../../../home/x", "rank": 8}]},
        "vllm_host_lora_adapters[0].path",
        "'..'",
    ),
    "LoRA adapter named like the served model": Case(
        {"vllm_host_lora_adapters": [{"name": "tiny", "path": "/srv/vllm/adapters/tiny"}]},
        "vllm_host_lora_adapters[0].name",
        "served model name",
    ),
    "LoRA adapter without a path": Case(
        {"vllm_host_lora_adapters": [{"name": "sql"}]}, "vllm_host_lora_adapters", "path"
    ),
    "LoRA runtime updating not a boolean": Case(
        {"vllm_host_lora_runtime_updating": "sometimes"}, "vllm_host_lora_runtime_updating"
    ),
    "instance environment as a list": Case(
        inst(environment=["HF_HUB_OFFLINE=1"]), "vllm_host_instances[0].environment", "mapping"
    ),
    # --- keys and TLS ----------------------------------------------------------------------------------
    "too short API key": Case({"vllm_host_api_key": f"{KEY_MARK}-short"}, "vllm_host_api_key", "characters long"),
    "API key with spaces": Case(
        {"vllm_host_api_key": f"{KEY_MARK} key with spaces in it"}, "vllm_host_api_key", "without spaces"
    ),
    "API key with a newline": Case(
        {"vllm_host_api_key": f"{KEY_MARK}-0123456789\nBearer x"}, "vllm_host_api_key", "printable"
    ),
    "API key with a trailing newline (a YAML block scalar)": Case(
        {"vllm_host_api_key": f"{KEY_MARK}-0123456789abcdef\n"}, "vllm_host_api_key", "printable"
    ),
    "Hugging Face token with a newline": Case(
        {"vllm_host_hf_token": f"hf_{KEY_MARK}\nHF_HUB_OFFLINE=0"}, "vllm_host_hf_token", "printable"
    ),
    "TLS without a certificate or a local CA": Case(
        {"vllm_host_tls_local_ca_dir": ""}, "vllm_host_tls_cert_src", "is empty"
    ),
    "certificate without its key": Case({"vllm_host_tls_cert_src": "@CERT@"}, "vllm_host_tls_key_src", "both"),
    "key without its certificate": Case({"vllm_host_tls_key_src": "@KEY@"}, "vllm_host_tls_cert_src", "both"),
    "certificate file that does not exist": Case(
        {"vllm_host_tls_cert_src": "/nonexistent/host.pem", "vllm_host_tls_key_src": "@KEY@"},
        "vllm_host_tls_cert_src",
        "not a file",
    ),
    "relative local CA directory": Case({"vllm_host_tls_local_ca_dir": "pki/ca"}, "vllm_host_tls_local_ca_dir"),
    # --- booleans that are not ---------------------------------------------------------------------------
    "proxy switch that is not a boolean": Case({"vllm_host_proxy": "sometimes"}, "vllm_host_proxy", "boolean"),
    "TLS switch that is not a boolean": Case({"vllm_host_tls": "maybe"}, "vllm_host_tls", "boolean"),
    "watchdog switch that is not a boolean": Case({"vllm_host_watchdog": "enabled"}, "vllm_host_watchdog", "boolean"),
    "key requirement that is not a boolean": Case(
        {"vllm_host_api_key_required": "perhaps"}, "vllm_host_api_key_required"
    ),
    # --- ports, addresses, the proxy ---------------------------------------------------------------------
    "privileged port without the proxy": Case(
        {**NO_PROXY, **inst(port=443)}, "vllm_host_instances[0].port", "privileged"
    ),
    "engine port on a privileged port behind the proxy": Case(
        {"vllm_host_engine_port_offset": 100, **inst(port=443)}, "vllm_host_instances[0].port", "privileged"
    ),
    "engine port on another instance's public port": Case(
        insts({"name": "a", "port": 8000}, {"name": "b", "port": 18000}), "vllm_host_instances[0].port", "collides"
    ),
    "engine port beyond 65535": Case(inst(port=60000), "vllm_host_instances[0].port", "beyond 65535"),
    "engine port offset zero": Case({"vllm_host_engine_port_offset": 0}, "vllm_host_engine_port_offset", "at least 1"),
    "same port written two ways": Case(
        insts({"name": "a", "port": 8000}, {"name": "b", "port": "8000"}), "vllm_host_instances[0].port", "two"
    ),
    "instance host while the proxy is on": Case(inst(host="0.0.0.0"), "vllm_host_instances[0].host", "127.0.0.1"),
    "shared host while the proxy is on": Case(
        {"vllm_host_server_defaults": {"host": "0.0.0.0"}}, "vllm_host_server_defaults.host", "127.0.0.1"
    ),
    "host in extra_args": Case(inst(extra_args=["--host", "0.0.0.0"]), "vllm_host_instances[0].extra_args[0]", "host"),
    "health host the proxy does not bind": Case(
        {"vllm_host_proxy_bind": "10.0.0.5", "vllm_host_health_host": "127.0.0.1"}, "vllm_host_health_host", "10.0.0.5"
    ),
    "health host the engine does not bind": Case(
        {**NO_PROXY, **inst(port=8080, host="127.0.0.1"), "vllm_host_health_host": "10.0.0.5"},
        "vllm_host_health_host",
        "127.0.0.1",
    ),
    "IPv6 health host on an IPv4 bind": Case({"vllm_host_health_host": "::1"}, "vllm_host_health_host", "IPv4 only"),
    "health host 127.0.0.1 on the IPv6 loopback": Case(
        {"vllm_host_proxy_bind": "::1", "vllm_host_health_host": "127.0.0.1"}, "vllm_host_health_host", "::1"
    ),
    "health host with a port": Case({"vllm_host_health_host": "127.0.0.1:8000"}, "vllm_host_health_host", "no port"),
    "engine host that is not an address": Case(
        {**NO_PROXY, **inst(port=8080, host="all interfaces")}, "vllm_host_instances[0].host", "host name"
    ),
    "proxy bind that is not an address": Case({"vllm_host_proxy_bind": "all"}, "vllm_host_proxy_bind", "IP address"),
    "metrics source that is a host name": Case(
        {"vllm_host_metrics_allow": ["prometheus.internal"]}, "vllm_host_metrics_allow[0]", "CIDR"
    ),
    "metrics source with a bad prefix": Case(
        {"vllm_host_metrics_allow": ["10.0.0.0/33"]}, "vllm_host_metrics_allow[0]", "CIDR"
    ),
    "engine egress to a name": Case({"vllm_host_engine_ip_allow": ["internet"]}, "vllm_host_engine_ip_allow[0]"),
    "route that is not a path": Case({"vllm_host_proxy_routes": ["v1/"]}, "vllm_host_proxy_routes[0]", "path"),
    "route that climbs out with ..": Case(
        {"vllm_host_proxy_routes": ["/v1/../admin"]}, "vllm_host_proxy_routes[0]", "path"
    ),
    "empty route": Case({"vllm_host_proxy_routes": ["/v1/", ""]}, "vllm_host_proxy_routes[1]", "empty"),
    "no routes at all": Case({"vllm_host_proxy_routes": []}, "vllm_host_proxy_routes", "reach nothing"),
    "proxy timeout zero": Case({"vllm_host_proxy_timeout": 0}, "vllm_host_proxy_timeout", "at least 1"),
    # --- instances and GPUs ------------------------------------------------------------------------------
    "instance name as a YAML number": Case(insts({"name": 1, "port": 8000}), "vllm_host_instances[0].name"),
    "same instance name as a string and a number": Case(
        insts({"name": "1", "port": 8000}, {"name": 1, "port": 8001}), "vllm_host_instances[1].name"
    ),
    "instance name with a trailing newline": Case(
        insts({"name": "main\n", "port": 8000}), "vllm_host_instances[0].name"
    ),
    "instance name in capitals": Case(insts({"name": "Main", "port": 8000}), "vllm_host_instances[0].name"),
    "instance name longer than 32": Case(insts({"name": "m" * 33, "port": 8000}), "vllm_host_instances[0].name"),
    "instance that is a string": Case({"vllm_host_instances": ["main"]}, "vllm_host_instances"),
    "no instances": Case({"vllm_host_instances": []}, "vllm_host_instances", "at least one"),
    "devices on the cpu profile": Case(inst(devices=[0]), "vllm_host_instances[0].devices", "cpu profile"),
    "one GPU given to two instances": Case(
        {**CUDA, **insts({"name": "a", "port": 8000, "devices": [0]}, {"name": "b", "port": 8001, "devices": [0]})},
        "vllm_host_instances[1].devices",
        "already given",
    ),
    "one GPU given to two instances, written two ways": Case(
        {**CUDA, **insts({"name": "a", "port": 8000, "devices": [0]}, {"name": "b", "port": 8001, "devices": ["0"]})},
        "vllm_host_instances[1].devices",
        "already given",
    ),
    "two instances sharing every GPU": Case(
        {**CUDA, **insts({"name": "a", "port": 8000, "devices": [0]}, {"name": "b", "port": 8001})},
        "vllm_host_instances[1].devices",
        "every GPU",
    ),
    "GPU listed twice in one instance": Case(
        {**CUDA, **inst(devices=[0, 0], tensor_parallel_size=2)}, "vllm_host_instances[0].devices", "twice"
    ),
    "devices not matching tensor x pipeline parallel": Case(
        {**CUDA, **inst(devices=[0, 1], tensor_parallel_size=1)}, "vllm_host_instances[0].devices", "tensor_parallel"
    ),
    "devices as one number": Case({**CUDA, **inst(devices=0)}, "vllm_host_instances[0].devices", "must be a list"),
    "negative device index": Case({**CUDA, **inst(devices=[-1])}, "vllm_host_instances[0].devices[0]", "at least 0"),
    # --- systemd and the watchdog ------------------------------------------------------------------------
    "watchdog interval zero": Case({"vllm_host_watchdog_interval": 0}, "vllm_host_watchdog_interval", "at least 1"),
    "watchdog failures zero": Case({"vllm_host_watchdog_failures": 0}, "vllm_host_watchdog_failures", "at least 1"),
    "watchdog timeout far beyond the interval": Case(
        {"vllm_host_watchdog_timeout": 600}, "vllm_host_watchdog_timeout", "far longer"
    ),
    "watchdog interval as a boolean": Case(
        {"vllm_host_watchdog_interval": True}, "vllm_host_watchdog_interval", "integer"
    ),
    "stop timeout zero": Case({"vllm_host_stop_timeout": 0}, "vllm_host_stop_timeout", "at least 1"),
    "negative restart delay": Case({"vllm_host_restart_sec": -1}, "vllm_host_restart_sec", "at least 0"),
    "start timeout not a number": Case({"vllm_host_start_timeout": "never"}, "vllm_host_start_timeout"),
}

# Valid configurations: they pass every variable check (here they stop at the host assert).
VALID_CASES: Dict[str, Dict[str, Any]] = {
    "the baseline": {},
    "one H100, tensor parallel 1": {"vllm_host_profile": "cuda"},
    "one H100 as device 0": {"vllm_host_profile": "cuda", **inst(devices=[0])},
    "no proxy, plain HTTP on 8080": {**NO_PROXY, **inst(port=8080)},
    "public port 443 behind the proxy": inst(port=443),
    "TLS from certificate files": {"vllm_host_tls_cert_src": "@CERT@", "vllm_host_tls_key_src": "@KEY@"},
    "Hugging Face id with open egress": {
        "vllm_host_model_path": "Qwen/Qwen2.5-0.5B",
        "vllm_host_engine_ip_allow": ["any"],
    },
    "two instances, two ports": insts({"name": "a", "port": 8000}, {"name": "b", "port": 8001}),
    "LoRA adapters with runtime updating": {
        "vllm_host_lora_adapters": [{"name": "sql", "path": "/srv/vllm/models/adapters/sql/current", "rank": 8}],
        "vllm_host_lora_runtime_updating": True,
    },
    "read-only parent of the state directory": {
        "vllm_host_extra_read_only_paths": ["/var/lib"],
        "vllm_host_extra_read_write_paths": ["/srv/vllm/scratch"],
    },
    "IPv6 health host on a dual-stack bind": {"vllm_host_proxy_bind": "::", "vllm_host_health_host": "::1"},
    "environment value with spaces and quotes": {"vllm_host_environment": {"VLLM_LOGGING_PREFIX": 'a "b" c'}},
    "Hugging Face home on an extra read-write path": {
        "vllm_host_extra_read_write_paths": ["/srv/hf"],
        "vllm_host_environment": {"HF_HOME": "/srv/hf/home"},
    },
    "health host localhost on the IPv6 loopback": {"vllm_host_proxy_bind": "::1", "vllm_host_health_host": "localhost"},
}

# Preflight tasks that look at the host rather than the variables (this controller is not a systemd host).
HOST_CHECKS = ("[Require systemd", "[Require an active NVIDIA fabric manager")
# Tasks that check variables: a bad case must fail in one of these.
VARIABLE_CHECKS = (
    "[Validating arguments against arg spec",
    "[Check every variable and plan the instances",
    "[Require the drain and gate hooks to exist",
    "[Require enough GPUs for every instance's parallelism",
)
PLAN_TASK = "Check every variable"  # its failure message starts with the variable


def replaying_nvidia_smi(directory: Path) -> Path:
    """An nvidia-smi that answers with the real captures of a one-GPU H100 host.

    The --query-gpu capture has units (``81559 MiB``); the role asks for ``nounits``, so they are
    stripped, nothing else changes.
    """
    row = (DATA / "smi_query_gpu.csv").read_text().splitlines()[1]
    values = [v.strip() for v in row.split(",")]
    values = [v.split(" ")[0] if v.endswith((" MiB", " %", " W")) else v for v in values]
    (directory / "query.csv").write_text(", ".join(values) + "\n")
    app = (DATA / "smi_compute_apps_busy.csv").read_text().splitlines()[1]
    pid, name, used, uuid = (v.strip() for v in app.split(","))
    (directory / "apps.csv").write_text(f"{uuid}, {pid}, {name}, {used.split(' ')[0]}\n")
    script = directory / "nvidia-smi"
    script.write_text(
        "#!/bin/sh\n"
        'case "$1" in\n'
        f'  --query-gpu=*) exec cat "{directory}/query.csv" ;;\n'
        f'  --query-compute-apps=*) exec cat "{directory}/apps.csv" ;;\n'
        f'  -q) exec cat "{DATA}/smi_q.xml" ;;\n'
        '  *) echo "unexpected arguments: $*" >&2; exit 2 ;;\n'
        "esac\n"
    )
    script.chmod(0o755)
    return script


HOSTS = case_hosts([*CASES, *VALID_CASES])


def valid_key(host: str) -> str:
    return f"{KEY_MARK}-valid-key-{host}"


def substitute(value: Any, files: Dict[str, str]) -> Any:
    if isinstance(value, str):
        return files.get(value, value)
    if isinstance(value, dict):
        return {k: substitute(v, files) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, files) for v in value]
    return value


@pytest.fixture(scope="module")
def preflight(tmp_path_factory: pytest.TempPathFactory) -> CaseRun:
    """One ansible-playbook run of the role's preflight against every case host."""
    work = tmp_path_factory.mktemp("vllm-host-preflight")
    (work / "ca").mkdir()
    files = {"@CERT@": str(work / "host.pem"), "@KEY@": str(work / "host.key")}
    for path in files.values():
        Path(path).write_text("not checked in preflight\n")
    baseline = {
        **LOCAL_HOST,
        "vllm_host_profile": "cpu",
        "vllm_host_model_path": "/srv/models/tiny",
        "vllm_host_served_model_name": "tiny",
        "vllm_host_instances": [{"name": "main", "port": 8000}],
        "vllm_host_tls_local_ca_dir": str(work / "ca"),
        "vllm_host_nvidia_smi_path": str(replaying_nvidia_smi(work)),
    }
    overrides = case_overrides(HOSTS, CASES, VALID_CASES)
    hosts = {host: {"vllm_host_api_key": valid_key(host), **substitute(overrides[host], files)} for host in overrides}
    # Only the preflight runs (tag), so even a valid configuration never installs anything here.
    return run_role_cases("llmops.platform.vllm_host", "vllm_host_preflight", baseline, hosts, work)


@pytest.mark.parametrize("case", list(CASES))
def test_bad_variable_fails_in_preflight_naming_it(preflight: CaseRun, case: str) -> None:
    host = HOSTS[case]
    secrets = [valid_key(host), *secrets_in(CASES[case].overrides, KEY_MARK)]
    messages = assert_fails_in_variable_checks(
        preflight, case, host, CASES[case], variable_checks=VARIABLE_CHECKS, plan_task=PLAN_TASK, secrets=secrets
    )
    assert not any(m.startswith(HOST_CHECKS) for m in messages), f"{case}: failed on a host check: {messages}"


@pytest.mark.parametrize("case", list(VALID_CASES))
def test_valid_variables_pass_the_variable_checks(preflight: CaseRun, case: str) -> None:
    """Valid configurations pass every variable check (they may stop at a host check here)."""
    host = HOSTS[case]
    assert_passes_variable_checks(preflight, case, host, allowed_failures=HOST_CHECKS, secrets=[valid_key(host)])
    plan = [
        t
        for p in preflight.report["plays"]
        for t in p["tasks"]
        if "Check every variable and plan the instances" in t["task"]["name"]
    ]
    assert plan and not plan[0]["hosts"][host].get("failed"), f"{case}: the plan did not run"
    read = [t for p in preflight.report["plays"] for t in p["tasks"] if task_name(t).startswith("Read the host once")]
    result = read[0]["hosts"].get(host, {}) if read else {}
    assert result and not result.get("skipped"), f"{case}: the host was not read after the variable checks"


def test_one_gpu_host_passes_the_gpu_checks(preflight: CaseRun) -> None:
    """Control for the GPU cases: the same replayed host with tensor_parallel_size 1 passes them."""
    for case in ("one H100, tensor parallel 1", "one H100 as device 0"):
        host = HOSTS[case]
        tasks = {task_name(t): t["hosts"].get(host) for p in preflight.report["plays"] for t in p["tasks"]}
        gpus = tasks["Inventory the NVIDIA GPUs"]
        assert gpus and gpus["count"] == 1, f"{case}: {gpus}"
        assert not tasks["Require enough GPUs for every instance's parallelism"].get("failed")


def test_one_run_for_every_case(preflight: CaseRun) -> None:
    """Every case host is in the one run's stats, no key reached the output, and the run stays quick (CI time)."""
    assert_one_run_for_every_case(preflight, HOSTS, mark=KEY_MARK, what="a key, token or secret-like value")
    assert len(CASES) >= 65
