#!/usr/bin/python
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)


DOCUMENTATION = r"""
module: vllm_consistency
short_description: Fail when two vLLM deployments differ in release, model content or server settings
version_added: 0.2.0
description:
  - The consistency gate of hybrid promotion and migration. Compares what two deployments of vLLM run - the
    vLLM release (the server's C(/version)), the served model's content digest (M(llmops.platform.model_manifest))
    and the effective server arguments - and fails listing every difference.
  - Each side's arguments are read back into the collection's one vLLM server configuration model, so the
    spellings of different renderers (a systemd unit's C(ExecStart), a Deployment's C(args), the production-stack
    chart's command with a positional model and underscored flags) compare equal when they mean the same, and
    C(--max-model-len 4096) against C(--max-model-len 8192) is a difference.
  - Settings that say where a side runs rather than what it serves (O(ignore), by default the model directory,
    host and port) are not compared; the model directory's content is compared through O(baseline.model_digest).
  - A fact given for one side only is a difference; a fact given for neither is reported in RV(not_compared).
  - Pure comparison on the host it runs on (usually the controller); never changes anything.
author:
  - llmops.platform maintainers (@llmops)
options:
  baseline:
    description: The side the candidate must match (staging, or the layout being migrated from).
    type: dict
    required: true
    suboptions:
      name:
        description: A label for messages, for example V(staging) or the host name.
        type: str
        default: baseline
      version:
        description:
          - vLLM release the side runs, as its C(/version) reports it
            (RV(llmops.platform.openai_health#module:server_version)).
        type: str
      model_digest:
        description:
          - Content digest of the model the side serves (RV(llmops.platform.model_manifest#module:content_digest)).
        type: str
      args:
        description:
          - The side's vLLM argv after the program (C(vllm serve) or C(python -m vllm.entrypoints.openai.api_server)),
            as it runs - a Deployment's container C(args), the words of a host instance's C(ExecStart), or the
            chart's command.
        type: list
        elements: str
  candidate:
    description:
      - The side under test (production hosts, or the layout being migrated to). The same options as O(baseline).
    type: dict
    required: true
    suboptions:
      name:
        description: A label for messages.
        type: str
        default: candidate
      version:
        description: vLLM release the side runs.
        type: str
      model_digest:
        description: Content digest of the model the side serves.
        type: str
      args:
        description: The side's vLLM argv after the program.
        type: list
        elements: str
  ignore:
    description:
      - Server configuration settings (the field names of C(vllm_server_config), for example V(port),
        V(tensor_parallel_size)) that may differ between the sides.
      - Ignore a setting only when it cannot change answers (where the server listens) or when the sides are known
        to differ in hardware; record why.
    type: list
    elements: str
    default: [model, host, port]
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  platform:
    platforms: posix
seealso:
  - module: llmops.platform.openai_compare
  - module: llmops.platform.openai_health
"""

EXAMPLES = r"""
- name: Production must run what staging was validated with
  llmops.platform.vllm_consistency:
    baseline:
      name: staging
      version: "{{ staging_health.server_version }}"
      model_digest: "{{ staging_record.digest }}"
      args: "{{ staging_deployment.resources[0].spec.template.spec.containers[0].args }}"
    candidate:
      name: "{{ inventory_hostname }}"
      version: "{{ host_health.server_version }}"
      model_digest: "{{ host_store.current_digest }}"
      args: "{{ host_instance_args }}"
  delegate_to: localhost

- name: Across GPU generations, allow a different parallelism
  llmops.platform.vllm_consistency:
    baseline: {name: old, version: "0.32.0", args: "{{ old_args }}"}
    candidate: {name: new, version: "0.32.0", args: "{{ new_args }}"}
    ignore: [model, host, port, tensor_parallel_size]
"""

RETURN = r"""
consistent:
  description: Whether nothing compared differs.
  returned: always
  type: bool
  sample: false
differences:
  description: Each difference - what (C(item)) and each side's value.
  returned: always
  type: list
  elements: dict
  sample: [{item: "--max-model-len (max_model_len)", baseline: 8192, candidate: 4096}]
not_compared:
  description: Facts given for neither side (C(vLLM version), C(model content digest), C(server arguments)).
  returned: always
  type: list
  elements: str
  sample: []
ignored:
  description: The settings not compared.
  returned: always
  type: list
  elements: str
  sample: [model, host, port]
baseline_config:
  description: The baseline's arguments read back as a server configuration; null when none were given.
  returned: always
  type: dict
  sample: {served_model_name: chat, max_model_len: 8192, dtype: bfloat16}
candidate_config:
  description: The candidate's arguments read back as a server configuration; null when none were given.
  returned: always
  type: dict
  sample: {served_model_name: chat, max_model_len: 4096, dtype: bfloat16}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.llmops.platform.plugins.module_utils.vllm_consistency import (
    DEFAULT_IGNORE,
    ConsistencyError,
    compare_sides,
    describe,
)


def side_spec(name):
    return dict(
        name=dict(type="str", default=name),
        version=dict(type="str"),
        model_digest=dict(type="str"),
        args=dict(type="list", elements="str"),
    )


def main():
    module = AnsibleModule(
        argument_spec=dict(
            baseline=dict(type="dict", required=True, options=side_spec("baseline")),
            candidate=dict(type="dict", required=True, options=side_spec("candidate")),
            ignore=dict(type="list", elements="str", default=list(DEFAULT_IGNORE)),
        ),
        supports_check_mode=True,
    )
    baseline, candidate = module.params["baseline"], module.params["candidate"]
    try:
        result = compare_sides(baseline, candidate, module.params["ignore"])
    except ConsistencyError as exc:
        module.fail_json(msg=str(exc), changed=False)
    result["changed"] = False
    if not result["consistent"]:
        module.fail_json(
            msg="{} and {} are not the same server: {}".format(
                baseline["name"],
                candidate["name"],
                describe(result["differences"], baseline["name"], candidate["name"]),
            ),
            **result,
        )
    module.exit_json(msg=f"{baseline['name']} and {candidate['name']} run the same server", **result)


if __name__ == "__main__":
    main()
