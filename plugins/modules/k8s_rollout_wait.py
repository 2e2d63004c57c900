#!/usr/bin/python
# Copyright: (c) 2026, llmops.platform maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)


DOCUMENTATION = r"""
module: k8s_rollout_wait
short_description: Follow a Deployment's rollout and fail fast when a new pod cannot start or keeps crashing
version_added: 0.2.0
description:
  - Polls a Deployment until its rollout is done the way C(kubectl rollout status) decides it (the controller has
    seen the new template, every replica runs it and is available, no old pod is left), from the controller (an
    action plugin; the module file only documents it). While it waits it prints a line to standard error whenever
    the state changes and every O(progress_interval) seconds, for example
    C([rollout vllm-inference] 0 of 1 new pods are available - vllm-inference-5d8f-x2b4c Running, not ready,
    waited 1m10s).
  - Fails at once, with the pod's last log lines (of the container's previous run when it restarted), when a pod of
    the new template cannot start (an image that cannot be pulled, a missing Secret or ConfigMap key; after
    O(pending_timeout) seconds when it stays unscheduled) or keeps crashing (C(CrashLoopBackOff), or O(crash_restarts)
    restarts; for vLLM, typically a model it cannot load or a flag it refuses), and when the Deployment's progress
    deadline is exceeded. Waiting out a long timeout for a pod that cannot become ready helps nobody, least of all a
    rollback that waits behind it.
  - Pods of the new template are those whose labels, annotations and containers' image, command and args match the
    Deployment's pod template.
  - Never changes anything. In check mode it does nothing and reports skipped.
  - Needs the C(kubernetes) Python package on the controller, as kubernetes.core does.
author:
  - llmops.platform maintainers (@llmops)
options:
  kubeconfig:
    description:
      - Kubeconfig file. Unset uses the client's defaults (C($KUBECONFIG), C(~/.kube/config)), then the in-cluster
        service account.
      - With O(context), it may come from C(module_defaults) of the action group C(llmops.platform.k8s).
    type: path
  context:
    description:
      - Kubeconfig context. Unset uses the current context.
    type: str
  namespace:
    description:
      - Namespace of the Deployment.
    type: str
    required: true
  name:
    description:
      - Name of the Deployment. Its pods are found by its C(spec.selector.matchLabels).
    type: str
    required: true
  timeout:
    description:
      - Seconds to wait for the rollout before failing.
    type: int
    default: 1800
  poll_interval:
    description:
      - Seconds between two reads of the Deployment and its pods.
    type: int
    default: 5
  progress_interval:
    description:
      - Seconds between two progress lines while nothing changes.
    type: int
    default: 30
  pending_timeout:
    description:
      - Seconds a new pod may stay unscheduled or pending before the wait fails.
    type: int
    default: 600
  crash_restarts:
    description:
      - Restarts of a new pod's container after which the wait fails (a container in C(CrashLoopBackOff) fails it
        after its first restart).
    type: int
    default: 2
  log_lines:
    description:
      - Lines of the pod's log put in the failure message.
    type: int
    default: 40
attributes:
  action_group:
    description: Use C(group/llmops.platform.k8s) in C(module_defaults) to set O(kubeconfig) and O(context) once for it
      and every kubernetes.core module (the group extends C(kubernetes.core.k8s) and C(kubernetes.core.helm)).
    support: full
    membership:
      - llmops.platform.k8s
  check_mode:
    support: full
    description: Does nothing in check mode and reports skipped (it never changes anything).
  diff_mode:
    support: none
    description: Changes nothing, so there is nothing to diff.
notes:
  - Runs on the controller whatever the host is; C(delegate_to) is not needed.
"""

EXAMPLES = r"""
- name: Wait for vLLM to roll onto the new model (fail fast when it cannot load it)
  llmops.platform.k8s_rollout_wait:
    namespace: llm-training
    name: vllm-inference
    timeout: 2100
"""

RETURN = r"""
state:
  description: V(Done), V(Unavailable) (a new pod cannot start or keeps crashing), V(Stalled) (progress deadline
    exceeded), V(Timeout) or V(Missing).
  returned: always
  type: str
message:
  description: The rollout's state in words.
  returned: always
  type: str
status:
  description: The Deployment's status as the API returned it last.
  returned: always
  type: dict
pods:
  description: Names of the pods running the new template.
  returned: always
  type: list
  elements: str
log_lines:
  description: The last O(log_lines) lines of the failing pod's log.
  returned: when the rollout did not finish
  type: list
  elements: str
seconds:
  description: Seconds spent waiting.
  returned: always
  type: float
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.llmops.platform.plugins.module_utils.k8s_rollout import ARGUMENT_SPEC


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    module.fail_json(msg="llmops.platform.k8s_rollout_wait runs on the controller through its action plugin")


if __name__ == "__main__":
    main()
