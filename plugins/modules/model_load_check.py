#!/usr/bin/python
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)


DOCUMENTATION = r"""
module: model_load_check
short_description: Check that the serving side's own libraries can load a model directory as it was saved
version_added: 0.2.0
description:
  - Runs the serving environment's Python (for example the vLLM virtualenv's C(bin/python)) on a model directory,
    offline and without remote code, and loads what vLLM loads first - the config and the tokenizer - then encodes
    a text. Optionally also asks vLLM's model registry whether it supports the model's architecture.
  - A model written by the training side's transformers may not load in the serving side's, for example a
    tokenizer saved by transformers 5 names its class C(TokenizersBackend), which the transformers 4.x of older
    vLLM releases does not know. vLLM would only find out after a switch, at start; this check runs before it.
  - A failure names each failed check with the library's error, the transformers (and vLLM) release of the
    environment and what the files say they were saved with (C(transformers_version), C(tokenizer_class)).
  - Reads only; runs fully in check mode.
author:
  - llmops.platform maintainers (@llmops)
options:
  path:
    description: The model directory (config, tokenizer and weights, as vLLM's C(--model) gets it).
    type: path
    required: true
  python:
    description: The serving environment's interpreter, for example V(/opt/vllm/venv/bin/python).
    type: path
    required: true
  checks:
    description:
      - V(config) - C(AutoConfig) loads the config. V(tokenizer) - C(AutoTokenizer) loads the tokenizer and encodes
        a text. V(architecture) - vLLM's model registry supports one of the config's C(architectures); it imports
        vLLM, tens of seconds on a CPU.
    type: list
    elements: str
    choices: [config, tokenizer, architecture]
    default: [config, tokenizer]
  missing_python:
    description:
      - What to do when O(python) does not exist (the serving side is not installed yet, a first deployment).
      - V(skip) reports RV(checked) false and passes; V(fail) fails.
    type: str
    choices: [skip, fail]
    default: fail
  timeout:
    description: Seconds the check may take.
    type: int
    default: 300
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
  - module: llmops.platform.vllm_consistency
  - module: llmops.platform.model_manifest
"""

EXAMPLES = r"""
- name: The host's vLLM must be able to load the new version before it is switched in
  llmops.platform.model_load_check:
    path: /srv/vllm/models/merged-model/versions/3f2a9c0d1e4b5a67
    python: /opt/vllm/venv/bin/python

- name: Also ask vLLM whether it supports the architecture
  llmops.platform.model_load_check:
    path: /srv/vllm/models/merged-model/current
    python: /opt/vllm/venv/bin/python
    checks: [config, tokenizer, architecture]
"""

RETURN = r"""
checked:
  description: Whether the checks ran (false only when O(python) is missing and O(missing_python=skip)).
  returned: always
  type: bool
  sample: true
loadable:
  description: Whether every check passed (null when nothing was checked).
  returned: always
  type: bool
  sample: true
transformers_version:
  description: The transformers release of the serving environment.
  returned: when checked
  type: str
  sample: "4.57.1"
vllm_version:
  description: The vLLM release of the serving environment (the V(architecture) check only).
  returned: when the architecture check ran
  type: str
  sample: "0.11.0"
tokenizer_class:
  description: The class the tokenizer loaded as.
  returned: when the tokenizer loaded
  type: str
  sample: PreTrainedTokenizerFast
model_type:
  description: The config's model type.
  returned: when the config loaded
  type: str
  sample: llama
architectures:
  description: The config's architectures.
  returned: when the config loaded
  type: list
  elements: str
  sample: [LlamaForCausalLM]
errors:
  description: Each failed check's error.
  returned: always
  type: dict
  sample: {tokenizer: "ValueError: Tokenizer class TokenizersBackend does not exist or is not currently imported."}
saved_with:
  description: What the directory's files say about how they were saved (C(config.json), C(tokenizer_config.json)).
  returned: always
  type: dict
  sample: {transformers_version: "5.6.0", tokenizer_class: TokenizersBackend, model_type: llama}
"""

import json
import os
import subprocess

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.llmops.platform.plugins.module_utils.model_load_check import PROBE, explain, saved_with


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            python=dict(type="path", required=True),
            checks=dict(
                type="list",
                elements="str",
                choices=["config", "tokenizer", "architecture"],
                default=["config", "tokenizer"],
            ),
            missing_python=dict(type="str", choices=["skip", "fail"], default="fail"),
            timeout=dict(type="int", default=300),
        ),
        supports_check_mode=True,
    )
    path, python, checks = module.params["path"], module.params["python"], module.params["checks"]
    if module.params["timeout"] < 1:
        module.fail_json(msg=f"timeout must be at least 1 second, not {module.params['timeout']}")
    if not checks:
        module.fail_json(msg="checks must name at least one of config, tokenizer, architecture")
    result = dict(changed=False, checked=False, loadable=None, errors={}, saved_with={})
    if not os.path.isdir(path):
        module.fail_json(msg=f"{path} (path) is not a directory", **result)
    result["saved_with"] = saved_with(path)
    if not os.access(python, os.X_OK):
        if module.params["missing_python"] == "skip":
            module.exit_json(msg=f"{python} does not exist: the serving environment is not installed yet", **result)
        module.fail_json(msg=f"{python} (python) is not an executable interpreter", **result)

    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    try:
        proc = subprocess.run(
            [python, "-c", PROBE, path, ",".join(checks)],
            env=env,
            cwd="/",
            capture_output=True,
            text=True,
            timeout=module.params["timeout"],
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        module.fail_json(msg=f"{python} could not run the load check on {path}: {exc}", **result)
    rc, out, err = proc.returncode, proc.stdout, proc.stderr
    report = None
    for line in reversed(out.splitlines()):
        if line.startswith("{"):
            try:
                report = json.loads(line)
                break
            except ValueError:
                continue
    if rc != 0 or report is None:
        module.fail_json(
            msg=f"{python} could not run the load check on {path} (rc {rc}): {(err or out).strip()[-2000:]}", **result
        )
    result.update(checked=True, errors=report.get("errors", {}))
    for key in ("transformers_version", "vllm_version", "tokenizer_class", "model_type", "architectures"):
        if key in report:
            result[key] = report[key]
    result["loadable"] = not result["errors"]
    if not result["loadable"]:
        module.fail_json(msg=explain(path, report, result["saved_with"]), **result)
    module.exit_json(
        msg="transformers {} loads {}: {}".format(
            report.get("transformers_version"),
            path,
            ", ".join(
                f"{check} ok ({report[key]})" if key in report else f"{check} ok"
                for check, key in (
                    ("config", "model_type"),
                    ("tokenizer", "tokenizer_class"),
                    ("architecture", "vllm_version"),
                )
                if check in checks
            ),
        ),
        **result,
    )


if __name__ == "__main__":
    main()
