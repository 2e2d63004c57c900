# Copyright: (c) 2026, llmops.platform maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters over the one vLLM server configuration model (plugins/module_utils/vllm_server.py).

Documentation lives next to this file, one YAML file per filter (vllm_server_args.yml, ...).
"""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.llmops.platform.plugins.module_utils.vllm_server import (
    VllmConfigError,
    normalize_server_config,
    render_helm_model_spec,
    render_server_args,
    server_environment,
    systemd_exec_args,
)


def _wrap(func, *args, **kwargs):
    try:
        return func(*args, **kwargs)
    except (VllmConfigError, ValueError, TypeError) as exc:
        raise AnsibleFilterError(str(exc)) from exc


def vllm_server_config(cfg, path=None):
    """Validated configuration with every default filled in."""
    return _wrap(normalize_server_config, cfg, path)


def vllm_server_args(cfg, path=None):
    """vLLM argv (after the program) for a server configuration."""
    return _wrap(render_server_args, cfg, path)


def vllm_server_environment(cfg, path=None):
    """Environment variables the server configuration needs besides its argv (VLLM_ALLOW_RUNTIME_LORA_UPDATING)."""
    return _wrap(lambda: server_environment(normalize_server_config(cfg, path)))


def vllm_systemd_exec_args(args):
    """argv quoted for a systemd ExecStart= line."""
    if isinstance(args, (str, bytes)) or not isinstance(args, (list, tuple)):
        raise AnsibleFilterError(f"vllm_systemd_exec_args expects a list of arguments, got {type(args).__name__}")
    return _wrap(systemd_exec_args, args)


def vllm_helm_model_spec(cfg, name, image_repo, image_tag, **kwargs):
    """A production-stack chart servingEngineSpec.modelSpec[] entry for a server configuration."""
    return _wrap(render_helm_model_spec, cfg, name, image_repo, image_tag, **kwargs)


class FilterModule:
    def filters(self):
        return {
            "vllm_server_config": vllm_server_config,
            "vllm_server_args": vllm_server_args,
            "vllm_server_environment": vllm_server_environment,
            "vllm_systemd_exec_args": vllm_systemd_exec_args,
            "vllm_helm_model_spec": vllm_helm_model_spec,
        }
