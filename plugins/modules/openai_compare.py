#!/usr/bin/python
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)


DOCUMENTATION = r"""
module: openai_compare
short_description: Compare two OpenAI-compatible endpoints (vLLM) on answers, latency and throughput
version_added: 0.2.0
description:
  - Sends the same prompt set to a O(baseline) and a O(candidate) endpoint, as completion and/or chat
    requests at temperature 0 with a fixed O(seed), and compares the answers prompt by prompt.
  - Each side is measured on its own, one after the other (two sides sharing hardware do not slow each other
    down), at the same O(concurrency) - latency of every request (p50, p95, mean, max) and throughput over
    the batch (requests and generated tokens per second).
  - Reports the agreement rate, the differing prompts with both answers, prompts a side answered
    differently across O(repeat) rounds (that side is not deterministic), and the candidate's figures as
    ratios of the baseline's.
  - Fails when a threshold is not met (O(min_agreement), O(max_errors), O(max_p95_latency_ratio),
    O(max_p95_latency_ms), O(min_throughput_ratio)); the failed result still carries every figure.
    Fails at once, before measuring, when a side cannot be used (unreachable, rejected key, model not served)
    or a setting is out of range (the message names the option).
  - Only reads, never changes anything; runs fully in check mode. Used as the parity gate of hybrid
    promotion and of the migration's parallel run.
author:
  - llmops.platform maintainers (@llmops)
options:
  baseline:
    description:
      - The endpoint the candidate is compared with (the one serving today, or the staging side that was
        validated).
      - Takes the connection options of M(llmops.platform.openai_health), plus O(baseline.model).
    type: dict
    required: true
    suboptions: &endpoint
      url:
        description:
          - Base URL of the OpenAI-compatible server, for example V(http://127.0.0.1:8000).
          - The OpenAI API is requested at this URL + O(baseline.path_prefix) + C(/v1/...).
        type: str
        required: true
      path_prefix:
        description:
          - Path put in front of the OpenAI API routes only (KServe serves them under V(/openai)).
        type: str
        default: ''
      api_key:
        description:
          - 'API key, sent as C(Authorization: Bearer <api_key>). Never shown in results or messages.'
        type: str
      headers:
        description:
          - Extra HTTP headers sent with every request to this side.
        type: dict
        default: {}
      request_timeout:
        description:
          - Seconds one request may take before it counts as failed.
        type: float
        default: 30
      ca_path:
        description:
          - PEM file of the CA certificates used to validate this side's certificate over HTTPS.
        type: path
      model:
        description:
          - Served model name the requests are sent to.
          - Defaults to the first model the side's C(/v1/models) lists.
        type: str
      force:
        description:
          - Send a C(no-cache) header with every request.
        type: bool
        default: false
      http_agent:
        description:
          - Header to identify as, generally appears in web server logs.
        type: str
        default: ansible-httpget
      use_proxy:
        description:
          - If V(false), it will not use a proxy, even if one is defined in an environment variable on the target hosts.
        type: bool
        default: true
      validate_certs:
        description:
          - If V(false), SSL certificates will not be validated.
        type: bool
        default: true
      url_username:
        description:
          - The username for use in HTTP basic authentication (gateways that need it).
        type: str
      url_password:
        description:
          - The password for use in HTTP basic authentication.
        type: str
      force_basic_auth:
        description:
          - Send the basic authentication header with the first request instead of after a 401.
        type: bool
        default: false
      client_cert:
        description:
          - PEM formatted certificate chain file to be used for SSL client authentication.
        type: path
      client_key:
        description:
          - PEM formatted file that contains the private key to be used for SSL client authentication.
        type: path
      use_gssapi:
        description:
          - Use GSSAPI to perform the authentication, typically for Kerberos.
        type: bool
        default: false
  candidate:
    description:
      - The endpoint under test (the new side, or the production hosts a model is promoted to).
      - The same options as O(baseline).
    type: dict
    required: true
    suboptions: *endpoint
  prompts:
    description:
      - Prompts sent to both sides, each as every kind in O(kinds).
      - Unset means a built-in set of 8 short, varied prompts.
    type: list
    elements: str
  kinds:
    description:
      - Request kinds - V(completion) posts to C(/v1/completions), V(chat) to C(/v1/chat/completions) (the model
        needs a chat template).
    type: list
    elements: str
    choices: [completion, chat]
    default: [completion, chat]
  max_tokens:
    description:
      - Tokens each request asks for (1 to 4096). Longer answers compare more of the model but take longer.
    type: int
    default: 16
  seed:
    description:
      - Sampling seed sent with every request (temperature is always 0).
    type: int
    default: 0
  repeat:
    description:
      - Times the whole prompt set is sent to each side (1 to 100); more rounds give steadier latency figures
        and show a side that answers the same prompt differently.
    type: int
    default: 1
  warmup:
    description:
      - Requests sent to each side before measuring, not counted (0 to 100).
    type: int
    default: 1
  concurrency:
    description:
      - Requests in flight at once against each side (1 to 256).
    type: int
    default: 4
  match:
    description:
      - How answers are compared. V(exact) - the same text; V(normalized) - case and runs of white space ignored.
    type: str
    choices: [exact, normalized]
    default: exact
  min_agreement:
    description:
      - Fraction (0 to 1) of the answers that must agree. V(1) demands identical answers (same model, same
        settings, same kind of hardware); lower it when the sides run on different hardware, where temperature-0
        answers can still differ in the last tokens.
    type: float
    default: 1.0
  max_errors:
    description:
      - Requests (both sides together) allowed to fail. A failed request is reported and not compared.
    type: int
    default: 0
  max_p95_latency_ratio:
    description:
      - Largest allowed candidate p95 latency as a multiple of the baseline's. Unset - not checked.
    type: float
  max_p95_latency_ms:
    description:
      - Largest allowed candidate p95 latency in milliseconds. Unset - not checked.
    type: float
  min_throughput_ratio:
    description:
      - Smallest allowed candidate throughput (requests per second) as a multiple of the baseline's. Unset - not
        checked.
    type: float
  max_differences:
    description:
      - Differing prompts returned in RV(differences) (0 to 1000); RV(differences_total) counts them all.
    type: int
    default: 20
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  platform:
    platforms: posix
notes:
  - Latency is measured by the module, from sending a request to reading its whole answer, so it includes the
    network between the host the module runs on and each side. Run it where the clients are (or from the
    controller with C(delegate_to)) and compare ratios rather than absolute figures across networks.
seealso:
  - module: llmops.platform.openai_health
"""

EXAMPLES = r"""
- name: Parity gate - production must answer as the staging side it was validated on
  llmops.platform.openai_compare:
    baseline:
      url: "http://127.0.0.1:{{ staging_forward_port }}"
      api_key: "{{ vllm_api_key }}"
    candidate:
      url: "https://{{ inventory_hostname }}:8000"
      api_key: "{{ vllm_api_key }}"
      ca_path: /etc/pki/llmops/ca.pem
    max_tokens: 16
    concurrency: 4
    min_agreement: 1.0
  delegate_to: localhost
  register: parity

- name: Migration parallel run - allow last-token drift across GPU generations, not a slower side
  llmops.platform.openai_compare:
    baseline: {url: "https://vllm-old.example.com", api_key: "{{ vllm_api_key }}", model: chat}
    candidate: {url: "https://vllm-new.example.com", api_key: "{{ vllm_api_key }}", model: chat}
    prompts: "{{ lookup('ansible.builtin.file', 'prompts.json') | from_json }}"
    repeat: 3
    concurrency: 16
    min_agreement: 0.95
    max_p95_latency_ratio: 1.2
    min_throughput_ratio: 0.9
  register: parallel_run

- name: Show the figures
  ansible.builtin.debug:
    msg: >-
      agreement {{ parallel_run.agreement }}, p95 {{ parallel_run.baseline.latency_ms.p95 }} ->
      {{ parallel_run.candidate.latency_ms.p95 }} ms, throughput ratio {{ parallel_run.ratios.throughput }}
"""

RETURN = r"""
passed:
  description: Whether every threshold was met.
  returned: when both sides were measured
  type: bool
  sample: true
failures:
  description: The thresholds that were not met, each with its figures.
  returned: when both sides were measured
  type: list
  elements: str
  sample: ["agreement 87.50% is below min_agreement 100.00%: 2 of 16 answers differ"]
agreement:
  description: Fraction of the compared answers that agree; null when none could be compared.
  returned: when both sides were measured
  type: float
  sample: 0.875
agreed:
  description: Answers that agree.
  returned: when both sides were measured
  type: int
  sample: 14
compared:
  description: Requests answered by both sides (the ones compared).
  returned: when both sides were measured
  type: int
  sample: 16
differences_total:
  description: Compared answers that differ.
  returned: when both sides were measured
  type: int
  sample: 2
differences:
  description: The differing requests with both answers, one entry per distinct difference, at most O(max_differences).
  returned: when both sides were measured
  type: list
  elements: dict
  sample: [{kind: completion, prompt: Hello, baseline: " world, how are", candidate: " there, my friend"}]
prompts:
  description: Prompts in the set.
  returned: when both sides were measured
  type: int
  sample: 8
requests:
  description: Measured requests sent to each side (prompts x kinds x repeat).
  returned: when both sides were measured
  type: int
  sample: 16
baseline:
  description: The baseline's figures.
  returned: when both sides were measured
  type: dict
  contains:
    url:
      description: The side's base URL.
      type: str
      returned: always
    model:
      description: The model asked.
      type: str
      returned: always
    server_version:
      description: The side's C(/version), null when it has none.
      type: str
      returned: always
    requests:
      description: Measured requests sent.
      type: int
      returned: always
    errors:
      description: Requests that failed.
      type: int
      returned: always
    error_samples:
      description: Up to 5 failed requests with their errors.
      type: list
      elements: dict
      returned: always
    latency_ms:
      description: Latency of the answered requests in milliseconds (C(p50), C(p95), C(mean), C(max)).
      type: dict
      returned: always
    requests_per_second:
      description: Answered requests over the batch's wall time.
      type: float
      returned: always
    output_tokens_per_second:
      description: Generated tokens (the server's C(usage.completion_tokens)) over the batch's wall time.
      type: float
      returned: always
    wall_seconds:
      description: Wall time of the measured batch.
      type: float
      returned: always
    concurrency:
      description: Requests in flight at once.
      type: int
      returned: always
    unstable:
      description: Requests this side answered differently across rounds (C(kind), C(prompt), C(answers)).
      type: list
      elements: dict
      returned: always
  sample:
    url: http://127.0.0.1:8000
    model: tiny
    server_version: 0.32.0
    requests: 16
    errors: 0
    error_samples: []
    latency_ms: {p50: 61.2, p95: 80.4, mean: 63.0, max: 80.4}
    requests_per_second: 51.3
    output_tokens_per_second: 820.1
    wall_seconds: 0.312
    concurrency: 4
    unstable: []
candidate:
  description: The candidate's figures (the same keys as RV(baseline)).
  returned: when both sides were measured
  type: dict
  sample: {url: "https://vllm-1.example.com:8000", model: tiny, latency_ms: {p50: 70.0, p95: 95.2}}
ratios:
  description: The candidate's figures over the baseline's (C(p95_latency), C(throughput)); null when a side has none.
  returned: when both sides were measured
  type: dict
  sample: {p95_latency: 1.184, throughput: 0.912}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.llmops.platform.plugins.module_utils.openai_client import (
    PROBES,
    OpenAIEndpoint,
    UrlTransport,
    openai_endpoint_argument_spec,
)
from ansible_collections.llmops.platform.plugins.module_utils.openai_compare import (
    MATCHES,
    CompareError,
    Side,
    compare,
)


def endpoint_spec():
    spec = openai_endpoint_argument_spec()
    spec["url"] = dict(type="str", required=True)
    spec["model"] = dict(type="str")
    return spec


def argument_spec():
    return dict(
        baseline=dict(type="dict", required=True, options=endpoint_spec()),
        candidate=dict(type="dict", required=True, options=endpoint_spec()),
        prompts=dict(type="list", elements="str"),
        kinds=dict(type="list", elements="str", choices=list(PROBES), default=list(PROBES)),
        max_tokens=dict(type="int", default=16, no_log=False),
        seed=dict(type="int", default=0),
        repeat=dict(type="int", default=1),
        warmup=dict(type="int", default=1),
        concurrency=dict(type="int", default=4),
        match=dict(type="str", choices=list(MATCHES), default="exact"),
        min_agreement=dict(type="float", default=1.0),
        max_errors=dict(type="int", default=0),
        max_p95_latency_ratio=dict(type="float"),
        max_p95_latency_ms=dict(type="float"),
        min_throughput_ratio=dict(type="float"),
        max_differences=dict(type="int", default=20),
    )


def side(label, options):
    endpoint = OpenAIEndpoint(
        options["url"],
        path_prefix=options["path_prefix"],
        api_key=options["api_key"],
        headers=options["headers"],
        request_timeout=options["request_timeout"],
        transport=UrlTransport(options),
    )
    return Side(label, endpoint, options.get("model"))


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    params = module.params
    try:
        sides = [side(label, params[label]) for label in ("baseline", "candidate")]
    except ValueError as exc:
        module.fail_json(msg=str(exc), changed=False)

    try:
        result = compare(sides[0], sides[1], params)
    except CompareError as exc:
        module.fail_json(msg=f"cannot compare: {exc}", changed=False)
    result["changed"] = False
    if not result["passed"]:
        module.fail_json(msg="the candidate does not match the baseline: " + "; ".join(result["failures"]), **result)
    base, cand = result["baseline"], result["candidate"]
    summary = (
        f"{result['agreed']} of {result['compared']} answers agree; p95 latency {base['latency_ms']['p95']} ms"
        f" (baseline) vs {cand['latency_ms']['p95']} ms (candidate)"
    )
    module.exit_json(msg=summary, **result)


if __name__ == "__main__":
    main()
