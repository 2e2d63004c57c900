#!/usr/bin/python
# Copyright: (c) 2026, llmops.platform maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function  # noqa: UP010

__metaclass__ = type  # noqa: UP001

DOCUMENTATION = r"""
---
module: gpu_info
short_description: Report the NVIDIA GPUs of a host, their memory, processes, driver, CUDA and fabric state
version_added: 0.1.0
description:
  - Runs C(nvidia-smi) on the target (C(--query-gpu), C(--query-compute-apps) and C(-q -x)) and returns
    typed values for each GPU, the processes using it, the driver and CUDA versions, and whether the NVIDIA
    fabric manager is needed (NVSwitch systems such as HGX) and has finished.
  - A host without C(nvidia-smi) gives O(required=false) C(present=false); that is not a failure unless
    O(required=true).
  - Output C(nvidia-smi) prints but this module cannot read fails the task, quoting the offending line.
author:
  - llmops.platform maintainers (@llmops)
options:
  nvidia_smi_path:
    description:
      - Path of the C(nvidia-smi) binary. Default is to look it up in E(PATH) and the usual system directories.
    type: path
  required:
    description:
      - Fail unless C(nvidia-smi) is present and reports at least one GPU.
    type: bool
    default: false
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Only reads; runs the same commands in check mode.
  diff_mode:
    support: none
  platform:
    platforms: posix
notes:
  - C(nvidia-smi) ships with the NVIDIA driver. A driver that is installed but cannot talk to the GPUs
    makes C(nvidia-smi) exit non-zero; the module then fails with its message.
"""

EXAMPLES = r"""
- name: Read the GPUs
  llmops.platform.gpu_info:
  register: gpu

- name: Serving hosts must have a ready GPU
  llmops.platform.gpu_info:
    required: true
  register: gpu

- name: NVSwitch systems need the fabric manager before CUDA works
  ansible.builtin.assert:
    that: gpu.fabric_ready
    fail_msg: "Fabric state {{ gpu.fabric_state }}: start nvidia-fabricmanager"
"""

RETURN = r"""
present:
  description: Whether C(nvidia-smi) was found.
  returned: always
  type: bool
  sample: true
nvidia_smi_path:
  description: The C(nvidia-smi) that was run.
  returned: always
  type: str
  sample: /usr/bin/nvidia-smi
count:
  description: Number of GPUs.
  returned: always
  type: int
  sample: 1
driver_version:
  description: NVIDIA driver version.
  returned: always
  type: str
  sample: "580.159.04"
cuda_version:
  description: Highest CUDA version the driver supports.
  returned: always
  type: str
  sample: "13.0"
fabric_manager_required:
  description: Whether any GPU reports an NVLink fabric state, that is the host has NVSwitches and needs the
    fabric manager.
  returned: always
  type: bool
  sample: false
fabric_state:
  description: C(Completed) when every GPU finished fabric registration, otherwise the first other state
    (C(Not Started), C(In Progress)); null when no fabric manager is needed.
  returned: always
  type: str
  sample: null
fabric_ready:
  description:
    - True when no fabric manager is needed or every GPU's fabric state is C(Completed) with status C(Success).
    - False when C(nvidia-smi) is absent.
  returned: always
  type: bool
  sample: true
gpus:
  description: One entry per GPU; values nvidia-smi reports as N/A are null.
  returned: always
  type: list
  elements: dict
  contains:
    index:
      description: GPU index.
      type: int
      sample: 0
    uuid:
      description: GPU UUID.
      type: str
      sample: GPU-43cb350c-607f-01b0-31bb-e036fa896010
    name:
      description: Product name.
      type: str
      sample: NVIDIA H100 80GB HBM3
    pci_bus_id:
      description: PCI bus id.
      type: str
      sample: "00000000:00:06.0"
    memory_total_mib:
      description: Total memory in MiB.
      type: int
      sample: 81559
    memory_used_mib:
      description: Used memory in MiB.
      type: int
      sample: 0
    memory_free_mib:
      description: Free memory in MiB.
      type: int
      sample: 81079
    driver_version:
      description: Driver version.
      type: str
      sample: "580.159.04"
    persistence_mode:
      description: Whether persistence mode is enabled.
      type: bool
      sample: true
    mig_mode:
      description: Current MIG mode (C(Enabled), C(Disabled)); null where MIG is not supported.
      type: str
      sample: Disabled
    compute_cap:
      description: CUDA compute capability.
      type: str
      sample: "9.0"
    utilization_gpu_pct:
      description: GPU utilization in percent.
      type: int
      sample: 0
    temperature_gpu_c:
      description: GPU temperature in degrees Celsius.
      type: int
      sample: 36
    power_draw_w:
      description: Power draw in watts.
      type: float
      sample: 115.67
    architecture:
      description: Product architecture, from C(nvidia-smi -q -x).
      type: str
      sample: Hopper
    compute_mode:
      description: Compute mode, from C(nvidia-smi -q -x).
      type: str
      sample: Default
    fabric_state:
      description: NVLink fabric state; null without NVSwitch.
      type: str
      sample: null
    fabric_status:
      description: NVLink fabric status; null without NVSwitch.
      type: str
      sample: null
    processes:
      description: Compute processes on this GPU.
      type: list
      elements: dict
      sample: [{"pid": 427, "process_name": "python3", "used_memory_mib": 2426}]
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.llmops.platform.plugins.module_utils.nvidia_smi import (
    NvidiaSmiParseError,
    compute_apps_command,
    details_command,
    gpu_query_command,
    merge_gpu_info,
    parse_compute_apps,
    parse_details_xml,
    parse_gpu_query,
)

# nvidia-smi's exit code when the driver works but there is no GPU (nvidia-smi(1), RETURN VALUE).
NO_DEVICES_RC = 6


def _absent(path):
    return {
        "present": False,
        "nvidia_smi_path": path,
        "count": 0,
        "gpus": [],
        "driver_version": None,
        "cuda_version": None,
        "fabric_manager_required": False,
        "fabric_state": None,
        "fabric_ready": False,
    }


def _run(module, args):
    """Run one nvidia-smi command; fail the task, with its output, when it exits non-zero."""
    rc, out, err = module.run_command(args, environ_update={"LC_ALL": "C"})
    if rc != 0:
        module.fail_json(
            msg=f"{' '.join(args)} failed (rc={rc}): {(err or out).strip()}",
            rc=rc,
            stdout=out,
            stderr=err,
        )
    return out


def main():
    module = AnsibleModule(
        argument_spec={
            "nvidia_smi_path": {"type": "path"},
            "required": {"type": "bool", "default": False},
        },
        supports_check_mode=True,
    )
    required = module.params["required"]
    path = module.params["nvidia_smi_path"]
    if path:
        found = path if os.path.isfile(path) and os.access(path, os.X_OK) else None
    else:
        found = module.get_bin_path("nvidia-smi")
    if not found:
        result = _absent(path)
        if required:
            where = path or "not in PATH"
            module.fail_json(
                msg=f"nvidia-smi was not found ({where}) and required=true: "
                "install the NVIDIA driver or set nvidia_smi_path",
                **result,
            )
        module.exit_json(changed=False, **result)

    query = gpu_query_command(found)
    rc, out, err = module.run_command(query, environ_update={"LC_ALL": "C"})
    if rc == NO_DEVICES_RC or (rc != 0 and "no devices were found" in (out + err).lower()):
        result = _absent(found)
        result.update(present=True, fabric_ready=True)
        if required:
            module.fail_json(msg=f"nvidia-smi found no GPUs: {(out + err).strip()}", **result)
        module.exit_json(changed=False, **result)
    if rc != 0:
        module.fail_json(
            msg=f"{' '.join(query)} failed (rc={rc}): {(err or out).strip()}", rc=rc, stdout=out, stderr=err
        )
    try:
        gpus = parse_gpu_query(out)
        apps = parse_compute_apps(_run(module, compute_apps_command(found)))
        details = parse_details_xml(_run(module, details_command(found)))
    except NvidiaSmiParseError as exc:
        module.fail_json(msg=f"cannot parse nvidia-smi output: {exc}")

    result = merge_gpu_info(gpus, apps, details)
    result.update(present=True, nvidia_smi_path=found)
    if required and result["count"] == 0:
        module.fail_json(msg="nvidia-smi found no GPUs", **result)
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
