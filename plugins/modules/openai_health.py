#!/usr/bin/python
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)


DOCUMENTATION = r"""
module: openai_health
short_description: Wait until an OpenAI-compatible server (vLLM) is ready and prove that it serves
version_added: 0.1.0
description:
  - Polls the server's health endpoint until it answers HTTP 200, then checks that C(/v1/models) lists the
    expected models and sends one real request per probe (temperature 0, a few tokens) that must return
    generated text. A server whose C(/health) is fine but which cannot generate (for example a model its
    attention backend does not support) therefore fails here instead of in production.
  - Polling adapts to what it sees. A refused connection (vLLM keeps its port closed while it loads) is
    retried every O(poll_interval) so readiness is noticed quickly. HTTP errors, timeouts and malformed
    answers back off exponentially up to O(max_poll_interval) so a struggling server is not hammered.
    Attempts never start more often than 4 times a second.
  - Failures that waiting cannot fix (a rejected API key, models other than the expected ones, a probe
    answered with HTTP 500 or 4xx, empty generated text, an untrusted certificate) fail at once.
  - Only reads, never changes anything; runs fully in check mode. Needs nothing but Python on the host
    it runs on, so it can run on the controller (C(delegate_to)) or on the serving host.
author:
  - llmops.platform maintainers (@llmops)
options:
  expected_models:
    description:
      - Served model names that C(/v1/models) must all list.
      - Empty means any non-empty list of models will do.
      - Waiting stops at once when the server lists models and one of these is missing.
    type: list
    elements: str
    default: []
  expected_adapters:
    description:
      - LoRA adapter names that C(/v1/models) must all list as adapters (vLLM lists an adapter with its base
        model as C(parent)), loaded at start (C(--lora-modules)) or at runtime (M(llmops.platform.vllm_lora_adapter)).
      - Waiting stops at once when the server lists models and one of these is missing; the message names it.
      - Adapter names may also be given in O(expected_models) (they are served models too) or as O(model), to
        send the probes to an adapter.
    type: list
    elements: str
    default: []
    version_added: 0.1.0
  model:
    description:
      - Served model name the probes are sent to.
      - Defaults to the first of O(expected_models), or else the first model the server lists.
    type: str
  probes:
    description:
      - Real requests sent once the server is healthy; each must return non-empty generated text.
      - V(completion) posts to C(/v1/completions), V(chat) to C(/v1/chat/completions) (needs a chat template).
      - An empty list only checks health and the model list.
    type: list
    elements: str
    choices: [completion, chat]
    default: [completion]
  prompt:
    description:
      - Prompt (or chat message) of the probes.
    type: str
    default: Hello
  max_tokens:
    description:
      - Tokens the probes ask for. Keep it small; the probe proves generation, not quality.
    type: int
    default: 4
  timeout:
    description:
      - Overall readiness budget in seconds, from the first attempt to the last.
    type: float
    default: 300
  poll_interval:
    description:
      - Seconds between attempts while the connection is refused, and the first back-off step.
      - At least V(0.25).
    type: float
    default: 0.25
  max_poll_interval:
    description:
      - Longest wait in seconds between attempts when backing off from errors.
    type: float
    default: 2.0
  health_path:
    description:
      - Path of the health endpoint, relative to O(url) (O(path_prefix) does not apply).
      - V(/health) for vLLM and the vLLM production-stack router.
    type: str
    default: /health
extends_documentation_fragment:
  - llmops.platform.openai_endpoint
  - ansible.builtin.url
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  platform:
    platforms: posix
notes:
  - O(ansible.builtin.url#module:url) options such as O(validate_certs), O(client_cert), O(use_proxy) and
    O(http_agent) apply to every request. O(url_username) and O(url_password) add HTTP basic authentication
    for gateways that need it; O(api_key) is the way to authenticate to vLLM itself.
seealso:
  - name: vLLM OpenAI-compatible server
    description: The API this module checks.
    link: https://docs.vllm.ai/en/latest/serving/openai_compatible_server.html
"""

EXAMPLES = r"""
- name: Wait for the local vLLM server and prove it generates text
  llmops.platform.openai_health:
    url: http://127.0.0.1:8000
    expected_models: [tiny]

- name: Gate a rollout from the controller, with an API key, both probes and a short budget
  llmops.platform.openai_health:
    url: "http://{{ inventory_hostname }}:8000"
    api_key: "{{ vllm_api_key }}"
    expected_models: ["{{ vllm_served_model_name }}"]
    probes: [completion, chat]
    timeout: 600
  delegate_to: localhost
  register: vllm_ready

- name: Show how long the server took
  ansible.builtin.debug:
    msg: "ready after {{ vllm_ready.time_to_ready }} s, vLLM {{ vllm_ready.server_version }}"

- name: Check a model served by KServe behind an HTTPS gateway
  llmops.platform.openai_health:
    url: https://models.example.com
    path_prefix: /openai
    health_path: /v2/health/ready
    headers:
      Host: tiny.models.example.com
    ca_path: /etc/pki/llmops/ca.pem
    model: tiny
"""

RETURN = r"""
ready:
  description: Whether the server answered health, listed the expected models and passed every probe.
  returned: always
  type: bool
  sample: true
url:
  description: Base URL that was checked.
  returned: always
  type: str
  sample: http://127.0.0.1:8000
server_version:
  description: Version from the server's C(/version) endpoint; null when it has none.
  returned: success
  type: str
  sample: 0.32.0
served_models:
  description: Model names listed by C(/v1/models) (empty when it was never reached).
  returned: always
  type: list
  elements: str
  sample: [tiny]
adapters:
  description: LoRA adapters listed by C(/v1/models), each with C(name), C(parent) (the base model) and C(path).
  returned: always
  type: list
  elements: dict
  sample: [{name: sql, parent: tiny, path: /srv/vllm/models/adapters/sql/current}]
model:
  description: Served model name the probes were sent to.
  returned: success
  type: str
  sample: tiny
time_to_ready:
  description: Seconds from the first attempt until the last probe succeeded.
  returned: success
  type: float
  sample: 21.734
elapsed:
  description: Seconds the module spent waiting and checking.
  returned: always
  type: float
  sample: 21.741
health_attempts:
  description: Number of readiness attempts, that is requests to the health endpoint.
  returned: always
  type: int
  sample: 87
polls_per_second:
  description:
    - Rate of readiness attempts while waiting (attempts after the first, divided by the time between the
      first and the last). 0 when the first attempt succeeded. Never above 4.
  returned: always
  type: float
  sample: 3.98
ready_at:
  description: Time (seconds since the epoch) at which the last probe succeeded.
  returned: success
  type: float
  sample: 1795739513.201
finished_at:
  description: Time (seconds since the epoch) at which the module returned.
  returned: always
  type: float
  sample: 1795739513.214
latencies:
  description: Milliseconds taken by the last request of each kind; null for requests not sent.
  returned: success
  type: dict
  contains:
    health:
      description: Health request.
      type: float
      returned: success
      sample: 1.9
    models:
      description: C(/v1/models) request.
      type: float
      returned: success
      sample: 3.2
    completion:
      description: Completion probe.
      type: float
      returned: success
      sample: 41.7
    chat:
      description: Chat probe.
      type: float
      returned: success
      sample: null
    version:
      description: C(/version) request, sent once the server proved it serves (not part of RV(time_to_ready)).
      type: float
      returned: success
      sample: 1.4
completion:
  description: Answer to the completion probe; null when it was not sent.
  returned: success
  type: dict
  contains:
    text:
      description: Generated text.
      type: str
      returned: success
      sample: " see adapter on will"
    finish_reason:
      description: Why generation stopped.
      type: str
      returned: success
      sample: length
    usage:
      description: Token counts reported by the server.
      type: dict
      returned: success
      sample: {prompt_tokens: 2, completion_tokens: 4, total_tokens: 6}
chat:
  description: Answer to the chat probe (same keys as RV(completion)); null when it was not sent.
  returned: success
  type: dict
  sample: {text: " world w24 all w21", finish_reason: length, usage: {prompt_tokens: 6, completion_tokens: 4}}
status:
  description: HTTP status of the failing request, when there was one.
  returned: failure
  type: int
  sample: 500
body:
  description: Body of the failing response, truncated to 500 characters.
  returned: failure
  type: str
  sample: '{"error":"Unauthorized"}'
kind:
  description:
    - What failed, for callers that act on it (the fleet status report tells a hung server from a stopped one).
    - V(refused) (nothing listens), V(timeout) (accepted, no answer within the request timeout), V(network),
      V(tls), V(http) or V(health_http) (an error status), V(auth) (the key was rejected), V(models) or
      V(no_models) (not the expected models), V(malformed) (an answer that is not the API's), V(error) (other).
  returned: failure
  type: str
  sample: timeout
"""

import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.llmops.platform.plugins.module_utils.openai_client import (
    PROBES,
    OpenAIEndpoint,
    ReadinessCheck,
    ReadinessError,
    UrlTransport,
    openai_endpoint_argument_spec,
)


def argument_spec():
    spec = openai_endpoint_argument_spec()
    spec.update(
        expected_models=dict(type="list", elements="str", default=[]),
        expected_adapters=dict(type="list", elements="str", default=[]),
        model=dict(type="str"),
        probes=dict(type="list", elements="str", choices=list(PROBES), default=["completion"]),
        prompt=dict(type="str", default="Hello"),
        max_tokens=dict(type="int", default=4, no_log=False),
        timeout=dict(type="float", default=300.0),
        poll_interval=dict(type="float", default=0.25),
        max_poll_interval=dict(type="float", default=2.0),
        health_path=dict(type="str", default="/health"),
    )
    return spec


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
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
        check = ReadinessCheck(
            endpoint,
            expected_models=params["expected_models"],
            expected_adapters=params["expected_adapters"],
            probes=params["probes"],
            prompt=params["prompt"],
            max_tokens=params["max_tokens"],
            timeout=params["timeout"],
            poll_interval=params["poll_interval"],
            max_poll_interval=params["max_poll_interval"],
            model=params["model"],
            health_path=params["health_path"],
        )
    except ValueError as exc:
        module.fail_json(msg=str(exc), changed=False, ready=False, url=params["url"])

    try:
        result = check.run()
    except ReadinessError as exc:
        failure = exc.as_result()
        failure.update(changed=False, ready=False, finished_at=time.time(), kind=exc.kind or "error")
        module.fail_json(**failure)
    result.update(changed=False, finished_at=time.time())
    module.exit_json(**result)


if __name__ == "__main__":
    main()
