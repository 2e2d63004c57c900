#!/usr/bin/python
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)


DOCUMENTATION = r"""
module: k8s_job_wait
short_description: Follow a Kubernetes Job to its end, printing its progress and failing fast when it cannot start
version_added: 0.2.0
description:
  - Polls a Job until its condition is V(Complete) or V(Failed), from the controller (an action plugin; the
    module file only documents it). While the Job runs it prints a progress line to the controller's terminal
    every O(progress_interval) seconds and whenever the pod's state changes, for example
    C([train] step 120/1000 (12%), loss 1.234, epoch 0.30, about 1:13:20 left - pod Running, waited 10m00s),
    read from the tail of the pod's log (the Hugging Face trainer's progress bar and log dicts, LLaMA-Factory's
    C(current_steps)/C(total_steps) lines). The lines go to standard error, so a JSON callback on standard
    output stays parseable.
  - Fails at once, with the pod's state and its last log lines, when the Job fails, when its pod cannot start
    because of an image that cannot be pulled, an invalid image name or a container configuration that refers
    to something missing (a Secret or ConfigMap key), and after O(pending_timeout) seconds when the pod stays
    unscheduled (no node with the GPUs, selector or tolerations asked for; a missing PersistentVolumeClaim) or
    pending for another reason. A cluster autoscaler may still add a node within that time.
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
      - Namespace of the Job.
    type: str
    required: true
  name:
    description:
      - Name of the Job. Its pods are found by the label C(job-name=<name>) the Job controller sets.
    type: str
    required: true
  timeout:
    description:
      - Seconds to wait for the Job to end before failing (the Job keeps running; C(activeDeadlineSeconds) stops it).
    type: int
    default: 3600
  poll_interval:
    description:
      - Seconds between two reads of the Job and its pods.
    type: int
    default: 15
  progress_interval:
    description:
      - Seconds between two progress lines while nothing else changes.
    type: int
    default: 60
  pending_timeout:
    description:
      - Seconds a pod may stay unscheduled or pending (for reasons other than the immediate ones above) before
        the wait fails.
    type: int
    default: 600
  log_lines:
    description:
      - Lines of the pod's log put in the failure message.
    type: int
    default: 40
  label:
    description:
      - What the progress lines call the Job, for example V(train). Default C(job <namespace>/<name>).
    type: str
    default: ""
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
- name: Follow the training Job (progress every minute, fail fast when it cannot start)
  llmops.platform.k8s_job_wait:
    namespace: llm-training
    name: llama-factory-train
    timeout: 86400
    label: train
  register: train_job

- name: Show how far it got
  ansible.builtin.debug:
    msg: "{{ train_job.outcome }} after {{ train_job.seconds }} s, loss {{ train_job.progress.loss | default('n/a') }}"
"""

RETURN = r"""
outcome:
  description: V(Complete), V(Failed), V(Unstartable) (its pod cannot start), V(Timeout) or V(Missing) (Job deleted).
  returned: always
  type: str
uid:
  description: The Job's uid (names this run).
  returned: always
  type: str
status:
  description: The Job's status as the API returned it last.
  returned: always
  type: dict
pod:
  description: Name of the Job's newest pod, empty when none was created.
  returned: always
  type: str
pod_state:
  description: "That pod's phase and, while it waits, its container's waiting reason (e.g. C(Pending: ErrImagePull))."
  returned: always
  type: str
progress:
  description: The last training progress read from the pod's log (keys present only when the log said them).
  returned: always
  type: dict
  contains:
    step:
      description: Optimization steps done.
      type: int
    total:
      description: Optimization steps in the run.
      type: int
    loss:
      description: The last logged training loss.
      type: float
    epoch:
      description: The last logged epoch.
      type: float
    elapsed:
      description: Time since the training loop started, as the progress bar shows it.
      type: str
    remaining:
      description: Time left, as the progress bar estimates it.
      type: str
log_lines:
  description: The last O(log_lines) lines of the pod's log.
  returned: when the Job did not complete
  type: list
  elements: str
seconds:
  description: Seconds spent waiting.
  returned: always
  type: float
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.llmops.platform.plugins.module_utils.k8s_job import ARGUMENT_SPEC


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    module.fail_json(msg="llmops.platform.k8s_job_wait runs on the controller through its action plugin")


if __name__ == "__main__":
    main()
