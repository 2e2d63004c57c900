#!/usr/bin/python
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)


DOCUMENTATION = r"""
module: vllm_lora_adapter
short_description: Load or unload a LoRA adapter on a running vLLM server, without a restart
version_added: 0.1.0
description:
  - Makes a LoRA adapter present (served under O(name) next to the base model) or absent on a running vLLM
    server, through vLLM's C(POST /v1/load_lora_adapter) and C(POST /v1/unload_lora_adapter).
  - Reads C(/v1/models) first, where vLLM lists each adapter with its base model as C(parent) and its path as
    C(root). An adapter already listed with the same path is left alone (C(changed=false)); one listed with
    another path is unloaded and loaded again from O(path). After a change it reads C(/v1/models) again and
    fails unless the adapter is (or is no longer) listed.
  - The server must have been started with C(--enable-lora) and C(VLLM_ALLOW_RUNTIME_LORA_UPDATING=True)
    (roles vllm_host and vllm_k8s, C(*_lora_runtime_updating=true)); otherwise vLLM answers HTTP 404 or 500 and
    the module fails saying which variable enables it.
  - Adapters loaded this way live as long as the server process. Declare the ones that must survive a restart
    in C(vllm_host_lora_adapters) / C(vllm_k8s_lora_adapters) (C(--lora-modules) at start).
author:
  - llmops.platform maintainers (@llmops)
options:
  name:
    description:
      - Name the adapter is served as (the C(model) of requests). Letters, digits and C(._-), at most 64.
    type: str
    required: true
  path:
    description:
      - The adapter's directory as the server sees it (a PEFT C(adapter_config.json) and its weights), for example
        a version that model_sync installed. Required with O(state=present).
      - Its rank must not exceed the server's C(--max-lora-rank).
    type: str
  state:
    description:
      - V(present) loads the adapter when it is not listed (or listed with another path); V(absent) unloads it when
        it is listed.
    type: str
    choices: [present, absent]
    default: present
extends_documentation_fragment:
  - llmops.platform.openai_endpoint
  - ansible.builtin.url
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Reads C(/v1/models) and reports what would change; sends no load or unload request.
  diff_mode:
    support: full
    details: The adapters listed before and after.
  platform:
    platforms: posix
notes:
  - On hosts (role vllm_host) the TLS and API-key front never forwards these routes; run the module on the host
    against the engine's own port (C(http://127.0.0.1:<port + vllm_host_engine_port_offset>)).
  - In the cluster every replica keeps its own adapters; run the module once per pod (for example through
    C(kubectl port-forward pod/NAME)), or declare the adapter in C(vllm_k8s_lora_adapters) and roll the Deployment.
seealso:
  - module: llmops.platform.openai_health
    description: Its O(llmops.platform.openai_health#module:expected_adapters) checks that adapters are served.
  - name: vLLM LoRA adapters
    description: Serving and dynamically loading LoRA adapters.
    link: https://docs.vllm.ai/en/latest/features/lora.html
"""

EXAMPLES = r"""
- name: Serve the new adapter version without restarting the engine
  llmops.platform.vllm_lora_adapter:
    url: http://127.0.0.1:18000
    api_key: "{{ vllm_api_key }}"
    name: sql
    path: /srv/vllm/models/adapters/sql/versions/v2

- name: Stop serving an adapter
  llmops.platform.vllm_lora_adapter:
    url: http://127.0.0.1:18000
    api_key: "{{ vllm_api_key }}"
    name: sql
    state: absent
"""

RETURN = r"""
name:
  description: The adapter's name.
  returned: always
  type: str
  sample: sql
state:
  description: The state asked for.
  returned: always
  type: str
  sample: present
actions:
  description: The requests sent (or, in check mode, that would be sent), in order.
  returned: always
  type: list
  elements: str
  sample: [load]
before:
  description: Adapters C(/v1/models) listed before, each with C(name), C(parent) (the base model) and C(path).
  returned: success
  type: list
  elements: dict
  sample: [{name: chat, parent: tiny, path: /srv/vllm/models/adapters/chat/current}]
adapters:
  description: Adapters listed afterwards (in check mode, the ones listed now).
  returned: success
  type: list
  elements: dict
  sample:
    - {name: chat, parent: tiny, path: /srv/vllm/models/adapters/chat/current}
    - {name: sql, parent: tiny, path: /srv/vllm/models/adapters/sql/versions/v2}
served_models:
  description: Every model name C(/v1/models) lists afterwards, adapters included.
  returned: success
  type: list
  elements: str
  sample: [tiny, chat, sql]
responses:
  description: The server's answers to the requests sent.
  returned: success
  type: list
  elements: str
  sample: ["Success: LoRA adapter 'sql' added successfully."]
status:
  description: HTTP status of the failing request, when there was one.
  returned: failure
  type: int
  sample: 404
body:
  description: Body of the failing response, truncated to 500 characters.
  returned: failure
  type: str
  sample: '{"detail":"Not Found"}'
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.llmops.platform.plugins.module_utils.lora_adapter import LoraAdapterError, apply
from ansible_collections.llmops.platform.plugins.module_utils.openai_client import (
    OpenAIEndpoint,
    UrlTransport,
    openai_endpoint_argument_spec,
)


def argument_spec():
    spec = openai_endpoint_argument_spec()
    spec.update(
        name=dict(type="str", required=True),
        path=dict(type="str"),
        state=dict(type="str", choices=["present", "absent"], default="present"),
    )
    return spec


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(), required_if=[("state", "present", ["path"])], supports_check_mode=True
    )
    params = module.params
    try:
        endpoint = OpenAIEndpoint(
            params["url"],
            path_prefix=params["path_prefix"],
            api_key=params["api_key"],
            headers=params["headers"],
            request_timeout=params["request_timeout"],
            transport=UrlTransport(params),
        )
        result = apply(endpoint, params["name"], params["path"], params["state"], check_mode=module.check_mode)
    except ValueError as exc:
        module.fail_json(msg=str(exc), changed=False, name=params["name"])
    except LoraAdapterError as exc:
        details = dict(exc.details)
        details.setdefault("changed", False)
        details.pop("name", None)
        module.fail_json(msg=exc.msg, name=params["name"], **details)
    if module._diff:
        result["diff"] = {
            "before": {"adapters": sorted(a["name"] for a in result["before"])},
            "after": {
                "adapters": sorted(
                    {a["name"] for a in result["before"]} - {params["name"]}
                    | ({params["name"]} if params["state"] == "present" else set())
                )
            },
        }
    module.exit_json(**result)


if __name__ == "__main__":
    main()
